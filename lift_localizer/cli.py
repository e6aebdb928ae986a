"""lift-localizer: LIFT features, maps and 6-DoF camera localization (also ``python -m lift_localizer``)."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__
from .commands import Parser, add_lift_options, add_room_options, backend_error, benchmark_scale, benchmarks, deploy, feature_defaults, localize, maps, replay, train
from .commands import initial_weights, training_data
from .commands import positive_int as _positive_int
from .images import MAX_IMAGE_SIDE


def add_extract(sub) -> None:
    p = sub.add_parser(
        "extract", help="LIFT keypoints and descriptors of images into an HDF5 file",
        description="Run LIFT (DET over the scale space, then ORI and DESC at the keypoints) on each "
                    "image and write one HDF5 group per image, named by the path as given, with the "
                    "datasets keypoints (N×2 x y pixels), scales (N, OpenCV keypoint size in pixels), "
                    "orientations (N, radians), scores (N) and descriptors (N×128). Images that "
                    "cannot be read are reported and skipped; the exit code is 1 if any failed.")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files (PNG, JPEG, TIFF, ...; grey, colour or 16-bit)")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="FEATURES.h5",
                   help="HDF5 file to write; an existing file is appended to, and groups of the "
                        "same images are replaced")
    add_lift_options(p, "keep the N keypoints with the highest detector score")
    p.add_argument("--max-image-side", type=_positive_int, default=MAX_IMAGE_SIDE, metavar="PX",
                   help="refuse an image whose longer side exceeds PX, read from its header before decoding")
    p.set_defaults(func=run_extract)


def run_extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .images import ImageError, read_image
    from .features.io import open_for_writing, write_features
    from .features.lift import Lift
    from .weights import WeightsError

    if (code := backend_error(args.backend)) is not None:
        return code
    try:
        extractor = Lift({"max_keypoints": args.max_keypoints, "backend": args.backend, "device": args.device,
                          "precision": args.precision})
    except (WeightsError, ValueError, RuntimeError) as e:
        print(f"error: cannot set up LIFT: {e}", file=sys.stderr)
        return 2
    if extractor.untrained_warning:
        print(extractor.untrained_warning, file=sys.stderr)
    if args.output.parent and not args.output.parent.exists():
        print(f"error: {args.output.parent}: output folder does not exist", file=sys.stderr)
        return 2
    weights = {k: n.sha256 for k, n in extractor.networks.items()}
    failed, counts, seconds = [], [], []
    try:
        out = open_for_writing(args.output, {f"weights_{k}_sha256": v for k, v in weights.items()})
    except OSError as e:
        print(f"error: {args.output}: cannot open for writing ({e})", file=sys.stderr)
        return 2
    with out:
        for path in tqdm(args.images, desc="extract", unit="image", file=sys.stderr):
            try:
                gray = read_image(path, args.max_image_side)
            except ImageError as e:
                tqdm.write(f"error: {e}", file=sys.stderr)
                failed.append(path)
                continue
            t = time.perf_counter()
            try:
                features = extractor(gray)
            except (ValueError, RuntimeError) as e:  # one bad image must not stop the others
                tqdm.write(f"error: {path}: extraction failed ({e})", file=sys.stderr)
                failed.append(path)
                continue
            seconds.append(time.perf_counter() - t)
            write_features(out, path, features)
            out.flush()
            counts.append(len(features))
    n = len(counts)
    mean_kp = sum(counts) / n if n else 0.0
    mean_s = sum(seconds) / n if n else 0.0
    print(f"extracted {n} image(s), {len(failed)} failed; {mean_kp:.0f} keypoints per image "
          f"(min {min(counts, default=0)}, max {max(counts, default=0)}); {mean_s:.2f} s per image "
          f"[{args.backend}, {args.device}] -> {args.output}")
    if failed:
        print(f"failed: {len(failed)} image(s): " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


def add_demo(sub) -> None:
    from .synthetic import SYNTHETIC_MAX_KEYPOINTS
    from .features.extractors import EXTRACTORS

    p = sub.add_parser("demo", help="build a map and localize against it, LIFT beside SIFT; print the errors",
                       description="By default, render a textured room from known camera poses (the project "
                                   "makes it itself), build a map from the mapping views, localize the query "
                                   "views and print their errors. With --bag DATASET (a folder holding two rosbag2 "
                                   "folders, DATASET/mapping and DATASET/query, with images, camera_info and "
                                   "/ground_truth/pose; the demo's own out/demo/bags has this layout) the same "
                                   "on real data.")
    p.add_argument("--bag", type=Path, default=None, metavar="DATASET", help="folder with mapping/ and query/ bags")
    p.add_argument("--output", type=Path, default=Path("out/demo"), metavar="DIR",
                   help="folder for images, bags, map and report")
    p.add_argument("--max-keypoints", type=_positive_int, default=None, metavar="N",
                   help=f"keypoint budget of the map and the queries (default: {feature_defaults()['max_keypoints']}, "
                        f"the other commands' default, on a real dataset; {SYNTHETIC_MAX_KEYPOINTS} on the synthetic "
                        "room, whose views are small and which should run in about a minute on 2 cores)")
    p.add_argument("--features", nargs="+", choices=EXTRACTORS, default=["lift", "sift"],
                   help="feature sets, each with its own map, compared side by side")
    add_room_options(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lift-localizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these; `lift-localizer COMMAND --help` for its options")
    add_extract(sub)
    maps.add(sub)
    maps.add_index(sub)
    localize.add(sub)
    train.add(sub)
    training_data.add(sub)
    initial_weights.add(sub)
    replay.add(sub)
    benchmarks.add_benchmark_node(sub)
    deploy.add(sub)
    benchmarks.add_benchmark(sub)
    benchmark_scale.add(sub)
    benchmarks.add_evaluate_features(sub)
    add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
