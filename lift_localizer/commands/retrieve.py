"""``lift-localizer retrieve``: the map images most similar to each query image (an hloc pairs file)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_bag_topics, fail, feature_defaults, log, positive_int, query_frames


def add(sub) -> None:
    p = sub.add_parser(
        "retrieve", help="the map images most similar to each query image (hloc pairs file)",
        description="For each image of the query bag, the top-k map images by NetVLAD global descriptor "
                    "(descriptor votes if the map has none), one line `query_name map_image_name` each, best "
                    "first. Bag images are named by their header stamp in integer nanoseconds.")
    p.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    p.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG", help="rosbag2 folder with the query images")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="PAIRS.txt",
                   help="pairs file to write (replaced if it exists)")
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="map images per query image")
    p.add_argument("--features", default=None, help="which of the map's feature sets (default: its own)")
    p.add_argument("--max-keypoints", type=positive_int, default=feature_defaults()["max_keypoints"], metavar="N",
                   help="query keypoint budget")
    add_bag_topics(p, with_pose=False)
    p.set_defaults(func=run_retrieve)


def run_retrieve(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..images import ImageError, to_gray
    from ..localization.localizer import Localizer
    from ..mapping.io import MapError, load_map

    try:
        localizer = Localizer(load_map(args.map, args.features), {"max_keypoints": args.max_keypoints})
    except (MapError, ValueError) as e:
        return fail(str(e))
    if localizer.retrieval_note:
        log(f"note: retrieval by descriptor votes: {localizer.retrieval_note}")
    frames, error = query_frames(args)
    if error:
        return fail(error)
    lines, failed = [], 0
    for f in tqdm(frames, desc="retrieve", unit="img", file=sys.stderr, disable=None):
        try:
            q = localizer.extractor(to_gray(f.image()))
        except (ImageError, ValueError) as e:
            log(f"error: {f.name}: {e}")
            failed += 1
            continue
        ranked, _ = localizer.retrieval.top_k(q.descriptors, args.top_k)
        lines += [f"{f.name} {localizer.names[i]}" for i in ranked]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("".join(line + "\n" for line in lines))
    print(f"{len(lines)} pairs for {len(frames) - failed}/{len(frames)} images "
          f"({localizer.retrieval.name}) -> {args.output}")
    return 1 if failed else 0
