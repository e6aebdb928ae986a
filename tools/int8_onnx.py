"""INT8 ORI and DESC on ONNX Runtime (backends/onnx_int8.py) against FP32: agreement and
speed (``lift_localizer/evaluation/int8_onnx.py`` measures them).

    python tools/int8_onnx.py --help
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_localizer.evaluation.int8_onnx import DEFAULT_IMAGES, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/int8_onnx.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, metavar="DIR", help="default: %(default)s")
    p.add_argument("--max-images", type=int, default=20, metavar="N", help="patches from at most N images")
    p.add_argument("--patches", type=int, default=2048, metavar="N", help="patches per network (default %(default)s)")
    p.add_argument("--pairs", type=int, default=5, metavar="N", help="consecutive image pairs matched")
    p.add_argument("--max-keypoints", type=int, default=1000, metavar="N")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], metavar="T", help="intra-op threads")
    p.add_argument("--batches", type=int, nargs="+", default=[256], metavar="B", help="patch batch sizes")
    p.add_argument("--rounds", type=int, default=5, metavar="R")
    return run(p.parse_args(argv))



if __name__ == "__main__":
    sys.exit(main())
