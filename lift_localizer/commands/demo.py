"""``lift-localizer demo``: its parser; the demo itself (the synthetic room or a real dataset) is ``lift_localizer.demo``."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_room_options, feature_defaults, positive_int


def add(sub) -> None:
    from ..synthetic import SYNTHETIC_MAX_KEYPOINTS
    from ..features.extractors import EXTRACTORS

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
    p.add_argument("--max-keypoints", type=positive_int, default=None, metavar="N",
                   help=f"keypoint budget of the map and the queries (default: {feature_defaults()['max_keypoints']}, "
                        f"the other commands' default, on a real dataset; {SYNTHETIC_MAX_KEYPOINTS} on the synthetic "
                        "room, whose views are small and which should run in about a minute on 2 cores)")
    p.add_argument("--features", nargs="+", choices=EXTRACTORS, default=["lift", "sift"],
                   help="feature sets, each with its own map, compared side by side")
    add_room_options(p)
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from ..demo import run

    return run(args)
