"""``lift-localizer localize``: the 6-DoF poses of a query bag's images against a map."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import (add_bag_topics, backend_error, fail, localizer_conf, localizer_options, log, network_problem,
               query_frames)


def add(sub) -> None:
    p = sub.add_parser(
        "localize", help="6-DoF poses of a query bag's images against a map (TUM file)",
        description="Localize every image of the query bag against the map and write one line per "
                    "localized image, `t tx ty tz qx qy qz qw` (T_map_camera, t = header stamp in seconds). "
                    "Images that fail are not written; they are counted, with their reasons, on stderr. "
                    "Never reads the bag's ground truth.")
    p.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    p.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG", help="rosbag2 folder with the query images")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="POSES.txt",
                   help="TUM trajectory file to write (replaced if it exists)")
    p.add_argument("--features", default=None, help="which of the map's feature sets (default: its own)")
    add_bag_topics(p, with_pose=False)
    localizer_options(p)
    p.set_defaults(func=run_localize)


def run_localize(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..evaluation.metrics import reason_key
    from ..evaluation.replay import area_counts, localize_frames, write_tum
    from ..localization.localizer import Localizer
    from ..mapping.io import MapError, load_map

    if (code := backend_error(args.backend)) is not None:
        return code
    if problem := network_problem(args):
        return fail(problem)
    try:
        localizer = Localizer(load_map(args.map, args.features), localizer_conf(args))
    except (MapError, ValueError) as e:
        return fail(str(e))
    if getattr(localizer.extractor, "untrained_warning", None):
        log(localizer.extractor.untrained_warning)
    if localizer.retrieval_note:
        log(f"note: retrieval by descriptor votes: {localizer.retrieval_note}")
    frames, error = query_frames(args)  # no pose topic: the localizer never sees ground truth
    if error:
        return fail(error)
    outcomes = localize_frames(localizer, frames)
    written = write_tum(args.output, outcomes)
    failures = Counter(reason_key(o.reason) for o in outcomes if o.reason)
    print(f"localized {written}/{len(outcomes)} images -> {args.output}")
    if localizer.conf["retrieval_radius_m"] > 0:
        log("retrieval: " + ", ".join(f"{mode}: {n}" for mode, n in area_counts(outcomes).items()))
    if failures:
        log(f"failed: {sum(failures.values())} image(s): " + ", ".join(f"{k}: {v}" for k, v in failures.items()))
    return 0
