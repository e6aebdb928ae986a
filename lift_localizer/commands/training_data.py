"""``lift-localizer training-data``: LIFT's training quadruplets into one HDF5 file (training/data.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, positive_int


def add(sub) -> None:
    from ..training.options import default_conf

    p = sub.add_parser(
        "training-data", help="LIFT's training quadruplets (the data `train desc`, `ori` and `det` read)",
        description="Build LIFT's training quadruplets (P1, P2: one point in two images; P3: another point; "
                    "P4: no keypoint) from SfM maps of the training sets of splits.json [lift], fixed webcams and "
                    "random homographies with photometric changes, into one HDF5 file. Test sets are refused.")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DATA.h5",
                   help="HDF5 file to write (replaced when it exists)")
    p.add_argument("--max-per-source", type=positive_int, default=default_conf["max_per_source"], metavar="N",
                   help="quadruplets per source at most (homography sources: half)")
    p.add_argument("--sources", nargs="+", default=None,
                   help="sources to build: names (sfm:fox, webcam:mexico, homography:llff_fern), kinds (sfm, webcam, "
                        "homography) or set names (fox); default: all training sets of the split")
    p.add_argument("--data-root", type=Path, default=Path(default_conf["data_root"]), metavar="DIR",
                   help="the shared data folder")
    p.add_argument("--split-file", type=Path, default=Path(default_conf["split_file"]), metavar="FILE",
                   help="which sets may be trained on (section lift)")
    p.add_argument("--bag", action="append", default=[], type=Path, metavar="BAG",
                   help="fine-tuning on your own data: a posed rosbag2 (image, camera_info, pose topics as "
                        "build-map reads them); repeatable; replaces the split's sets (see --keep-split)")
    p.add_argument("--images", action="append", default=[], type=Path, metavar="DIR",
                   help="fine-tuning: a folder of photos of one place (pycolmap SfM finds the points); repeatable")
    p.add_argument("--webcam", action="append", default=[], type=Path, metavar="DIR",
                   help="fine-tuning: a folder of one fixed camera's images under changing light; repeatable")
    p.add_argument("--keep-split", action="store_true",
                   help="with --bag, --images or --webcam: add them to the split's training sets instead of "
                        "replacing those (a set the split holds out is refused)")
    p.add_argument("--max-keypoints", type=positive_int, default=default_conf["max_keypoints"], metavar="N",
                   help="SIFT keypoints per image")
    p.add_argument("--seed", type=int, default=default_conf["seed"], help="random seed")
    p.add_argument("--compression", choices=("lzf", "gzip", "none"), default=default_conf["compression"],
                   help="HDF5 compression of the patches")
    p.set_defaults(func=run_training_data)


def run_training_data(args: argparse.Namespace) -> int:
    from ..training.data import build_dataset
    from ..training.options import DataError

    conf = {"max_per_source": args.max_per_source, "sources": args.sources, "data_root": str(args.data_root),
            "split_file": str(args.split_file), "max_keypoints": args.max_keypoints, "seed": args.seed,
            "compression": args.compression, "keep_split": args.keep_split,
            "user_sets": [("bag", str(b)) for b in args.bag] + [("collection", str(d)) for d in args.images] +
                         [("webcam", str(d)) for d in args.webcam]}
    try:
        summary = build_dataset(args.output, conf)
    except DataError as e:
        return fail(str(e))
    for name, n in summary["counts"].items():
        print(f"{name:32s} {n:7d}")
    for name, why in summary["skipped"].items():
        print(f"{name:32s} skipped: {why}")
    print(f"{summary['total']} quadruplets in {summary['seconds']:.0f} s → {summary['output']}")
    return 0
