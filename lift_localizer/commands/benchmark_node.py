"""The parser of ``benchmark-node``; the measurement (a real-time bag replay into the ROS 2 node) is
``evaluation/node_benchmark.py``."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_bag_topics, non_negative_float, positive_float, positive_int


def add(sub) -> None:
    from ..evaluation.node_benchmark import __doc__ as doc
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
    p.add_argument("--settle", type=non_negative_float, default=60.0, metavar="S",
                   help="at most this many seconds after the replay for the node to finish the frames it "
                        "received; the wait ends as soon as its /diagnostics show it idle (default %(default)s)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the results as JSON here")
    add_bag_topics(p, with_pose=False)
    p.add_argument("--ground-truth-topic", default="/ground_truth/pose",
                   help="PoseStamped of T_map_camera per query image, read only to score the poses")
    p.set_defaults(func=run_benchmark_node)


def run_benchmark_node(args: argparse.Namespace) -> int:
    from ..evaluation.node_benchmark import run

    return run(args)
