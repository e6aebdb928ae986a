"""The parser of ``benchmark-scale``; the measurement lives in ``evaluation/benchmark_scale.py``."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import (add_bag_topics, add_room_options, fail, localizer_conf, localizer_options, module_doc, network_problem,
               positive_int)


def add(sub) -> None:
    from ..features.extractors import EXTRACTORS

    doc = module_doc("lift_localizer.evaluation.benchmark_scale")

    p = sub.add_parser("benchmark-scale", help="map load time, memory, query latency and recall at 1000 to 100 000 "
                                               "map images", description=doc)
    p.add_argument("--sizes", type=positive_int, nargs="+", default=[1000, 10000], metavar="N",
                   help="map sizes in images, each measured in a process of its own")
    p.add_argument("--json", type=Path, default=None, metavar="FILE",
                   help="also write one object per size here (images, load_s, rss_mb_loaded, rss_mb_after_queries, "
                        "latency_ms_median, recall_0.25m_2deg, …)")
    p.add_argument("--map", type=Path, default=None, metavar="MAP_DIR",
                   help="the real map to copy (with --bag); default: the demo's synthetic room, built on the fly")
    p.add_argument("--bag", type=Path, default=None, metavar="QUERY_BAG",
                   help="query bag of --map, with ground-truth poses")
    p.add_argument("--queries", type=positive_int, default=100, metavar="N",
                   help="queries localized per size (the real ones in turn); the recall counts each real one once")
    p.add_argument("--descriptor-noise", type=float, default=0.5, metavar="F",
                   help="each copy's descriptors are moved by F × their length in a random direction")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="threads of the measured process (torch, faiss, BLAS); 0: as many as they choose")
    p.add_argument("--seed", type=int, default=0, help="seed of the copies' transforms and noise")
    p.add_argument("--initial-prior", action="store_true",
                   help="with --retrieval-radius: the first query's prior is its true position, as a user's "
                        "initialpose gives it (default: a cold start)")
    p.add_argument("--work", type=Path, default=None, metavar="DIR",
                   help="where the maps are written (one at a time, removed after their measurement; default: the "
                        "system's temporary folder)")
    g = p.add_argument_group("the synthetic room (without --map)")
    g.add_argument("--features", choices=tuple(EXTRACTORS), default="lift", help="features of the room's map")
    add_room_options(g)
    localizer_options(p)
    add_bag_topics(p, with_pose=True)
    # None: the room's budget (the demo's) without --map, the commands' with it.
    p.set_defaults(func=run_benchmark_scale, max_keypoints=None)


def run_benchmark_scale(args: argparse.Namespace) -> int:
    # The measurement imports torch (through the map and retrieval): only when the command runs.
    from ..evaluation.benchmark_scale import run as measure

    if problem := network_problem(args):
        return fail(problem)
    # The measurement sits below the commands: it takes the localizer's options as the commands give them.
    args.localizer_conf = localizer_conf(args)
    return measure(args)
