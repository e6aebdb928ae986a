"""``lift-localizer benchmark``'s options, without torch: its parser is built (and
``lift-localizer --help`` runs) without importing what ``benchmark.run`` measures."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..nets.presets import PRESETS

# The budget of docs/benchmarks.md's measurements, kept so that a plain run compares with them; the commands
# themselves default to the localizer's budget.
MAX_KEYPOINTS = 1000


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..localization.options import default_conf
    p.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                   help="among torch, onnx, auto, torch-cuda, torch-cuda-fp16 (CUDA graphs), torch-cuda-fp16-staged "
                        "(stage by stage, with per-stage times), tensorrt-fp16 (default: every one available here)")
    p.add_argument("--max-keypoints", type=int, default=MAX_KEYPOINTS, metavar="N",
                   help=f"keypoint budget (default {MAX_KEYPOINTS}, as in docs/benchmarks.md; the other "
                        f"commands default to {default_conf['max_keypoints']})")
    p.add_argument("--size", default="640x480", metavar="WxH", help="synthetic image size")
    p.add_argument("--repeat", type=int, default=5, metavar="N", help="runs per back end; medians and p90 over them")
    p.add_argument("--map-images", type=int, default=1000, metavar="N", help="size of the synthetic map for retrieval")
    p.add_argument("--preset", choices=tuple(PRESETS), default="default",
                   help="LIFT scale space: default (13 levels), fast (9 levels, ≤ 600 keypoints) or paper "
                        "(the paper's 21 levels at 640×480)")
    p.add_argument("--compare-sift", action="store_true",
                   help="also time OpenCV SIFT (RootSIFT) and ORB on the same image, same keypoint budget, and print "
                        "LIFT's extraction time as a ratio of theirs")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write every measurement as JSON here")
