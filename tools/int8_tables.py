"""Record the INT8 calibration tables of ORI and DESC (backends/onnx_int8.py) on real keypoint
patches of the Webcam training scene, beside the weights they were recorded with 
(``lift_localizer/training/int8_tables.py`` records them).

    python tools/int8_tables.py --help
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_localizer.training.int8_tables import DEFAULT_IMAGES, held_out, record_tables
from lift_localizer.training.options import DATA_ROOT


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/int8_tables.py", description=__doc__.split("\n\n")[0])
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
