"""The parser of ``evaluate-features``; what it measures lives in ``evaluation/feature_quality.py`` and
imports torch, so it is imported only when the command runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..nets.presets import PRESETS
from . import add_network_options, fail, module_doc, network_problem, network_weights


def add(sub) -> None:
    p = sub.add_parser("evaluate-features", help="LIFT beside SIFT: repeatability, matching, DESC vs the released one",
                       description=module_doc("lift_localizer.evaluation.feature_quality"))
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data", metavar="DIR",
                   help="shared data folder with the Webcam and ScanNet test sets (default: ../shared/data beside "
                        "the repository)")
    add_network_options(p)
    p.add_argument("--upright", action="store_true", help="LIFT without ORI (every keypoint upright)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="default",
                   help="LIFT's scale space: default (13 levels), fast (9 levels, ≤ 600 keypoints) or paper (the "
                        "paper's 21 levels at 640×480)")
    p.add_argument("--keypoints", type=int, default=1000, metavar="N",
                   help="keypoints per image (default %(default)s: the top-1000 of the protocol above)")
    p.add_argument("--images-per-scene", type=int, default=10, metavar="N", help="Webcam images per test scene")
    p.add_argument("--scannet-resize-max", type=int, default=640, metavar="PX",
                   help="longer image side for the ScanNet pairs (default 640: SuperGlue's 640x480 protocol; "
                        "keypoints are scaled back, so K stays the full-resolution one)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON here")
    p.set_defaults(func=run_evaluate_features)


def run_evaluate_features(args: argparse.Namespace) -> int:
    from ..evaluation.feature_quality import run

    if problem := network_problem(args):
        return fail(problem)
    args.weights = network_weights(args)
    return run(args)
