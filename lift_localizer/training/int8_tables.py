"""Record the INT8 calibration tables of ORI and DESC (backends/onnx_int8.py) on real keypoint
patches of the Webcam training scene, beside the weights they were recorded with.

    python -m lift_localizer.training.int8_tables [--images DIR] [--ori STEM] [--desc STEM]

The patches are those the localizer's own LIFT feeds its back end (``calibration_batches`` with
``reference_lift``: the detector's keypoints, ORI's patches upright, DESC's rotated by ORI), a
sample spread over the images. The default images are the one Webcam scene that splits.json lets
LIFT train on; a folder in a test or excluded set is refused, so that no number reported on it
comes from a quantisation tuned on it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import DATA_ROOT, SPLIT_SECTION
from .splits import read_split

DEFAULT_IMAGES = "raw/webcam/mexico"
SPLIT_FILE = Path(__file__).with_name("splits.json")
MAX_PATCHES = 2048
PATCH_BATCH = 256


def held_out(images: Path, data_root: Path = DATA_ROOT) -> str | None:
    """The test or excluded set of splits.json that ``images`` lies in, or None."""
    split = read_split(SPLIT_FILE, SPLIT_SECTION)
    try:
        rel = images.resolve().relative_to(data_root.resolve())
    except ValueError:
        return None
    for held in split["test"] + split["excluded"]:
        if rel == Path(held) or Path(held) in rel.parents or rel in Path(held).parents:
            return held
    return None


def record_tables(images: Path, weights: dict[str, str], max_images: int = 40) -> dict[str, Path]:
    """Write ``<stem>.int8.json`` for ORI and DESC from patches of ``images``; their paths."""
    from ..backends.int8_calibration import calibration_batches
    from ..backends.onnx_backend import ensure_export
    from ..backends.onnx_int8 import CALIBRATED, table_path, write_table
    from ..features.extractors import reference_lift
    from ..weights import LIFT_WEIGHTS, load_networks

    names = {**LIFT_WEIGHTS, **weights}
    networks = load_networks(names)
    directory, manifest = ensure_export(networks)
    data = calibration_batches(images, patch_batch=PATCH_BATCH, max_images=max_images, max_patches=MAX_PATCHES,
                               reference=lambda: reference_lift({"weights": names, "device": "cpu"}), progress=True,
                               expected_weights={k: networks[k].sha256 for k in ("det", "ori", "desc")})
    print(f"calibration data: {data.summary()}", file=sys.stderr)
    source = f"{images.name}: {len(data.images)} images"
    written = {}
    for kind in CALIBRATED:
        path = table_path(networks[kind])
        write_table(directory / manifest["models"][kind]["file"], data.batches[kind], networks[kind], path, source)
        written[kind] = path
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lift_localizer.training.int8_tables", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=DATA_ROOT / DEFAULT_IMAGES, metavar="DIR",
                   help="images to take the patches from (default: the Webcam training scene, %(default)s)")
    p.add_argument("--max-images", type=int, default=40, metavar="N", help="at most N images (default %(default)s)")
    p.add_argument("--ori", default=None, metavar="STEM", help="ORI weights (default: shipped)")
    p.add_argument("--desc", default=None, metavar="STEM", help="DESC weights (default: shipped)")
    args = p.parse_args(argv)
    if not args.images.is_dir():
        print(f"error: {args.images}: no such folder", file=sys.stderr)
        return 2
    if (held := held_out(args.images)) is not None:
        print(f"error: {args.images} lies in {held}, held out from training in splits.json", file=sys.stderr)
        return 2
    weights = {k: v for k, v in (("ori", args.ori), ("desc", args.desc)) if v}
    for kind, path in record_tables(args.images, weights, args.max_images).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
