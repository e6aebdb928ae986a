"""The parsers of ``benchmark``, ``benchmark-node`` and ``evaluate-features``; what they measure
lives in ``evaluation/`` and imports torch, so it is imported only when the command runs."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_bag_topics, module_doc, positive_float, positive_int


def add_benchmark(sub) -> None:
    from ..evaluation.benchmark_options import add_arguments

    p = sub.add_parser("benchmark", help="per-stage latency per back end, operation counts, fraction of peak",
                       description=module_doc("lift_localizer.evaluation.benchmark"))
    add_arguments(p)
    p.set_defaults(func=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark import run

    return run(args)


def add_benchmark_node(sub) -> None:
    from ..evaluation.node_benchmark import __doc__ as doc, run
    from ..ros.params import BY_NAME

    p = sub.add_parser("benchmark-node", help="the ROS 2 node under a real-time bag replay: latency, rate, accuracy",
                       description=doc.split("\n\n")[1] if doc else None)
    p.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    p.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG",
                   help="rosbag2 folder with the query images and their ground-truth poses")
    p.add_argument("--rate", type=positive_float, default=1.0, metavar="R",
                   help="replay speed (default %(default)s: real time)")
    # The node's own defaults (ros/params.py), so that the benchmark measures the node as launched.
    qos = BY_NAME["qos_reliability"]
    p.add_argument("--qos", choices=qos.choices, default=qos.default,
                   help="the node's image and camera_info QoS (its qos_reliability parameter)")
    p.add_argument("--max-keypoints", type=positive_int, default=BY_NAME["max_keypoints"].default, metavar="N",
                   help="the node's keypoint budget")
    p.add_argument("--top-k", type=positive_int, default=BY_NAME["top_k"].default, metavar="K",
                   help="the node's map images retrieved per image")
    p.add_argument("--settle", type=float, default=10.0, metavar="S",
                   help="seconds to wait after the replay (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON here")
    add_bag_topics(p, with_pose=False)
    p.add_argument("--ground-truth-topic", default="/ground_truth/pose",
                   help="PoseStamped of T_map_camera per query image, read only to score the poses")
    p.set_defaults(func=run)


def add_evaluate_features(sub) -> None:
    p = sub.add_parser("evaluate-features", help="LIFT beside SIFT: repeatability, matching, DESC vs the released one",
                       description=module_doc("lift_localizer.evaluation.feature_quality"))
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data", metavar="DIR",
                   help="shared data folder with the Webcam and ScanNet test sets (default: ../shared/data beside "
                        "the repository)")
    p.add_argument("--det", default=None, metavar="STEM", help="DET weights stem (default: shipped)")
    p.add_argument("--ori", default=None, metavar="STEM", help="ORI weights stem (default: shipped)")
    p.add_argument("--desc", default=None, metavar="STEM", help="DESC weights stem (default: shipped)")
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

    return run(args)
