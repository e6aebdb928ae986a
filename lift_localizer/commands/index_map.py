"""``lift-localizer index-map``: a map's NetVLAD descriptors and faiss index, (re)computed."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, log


def add(sub) -> None:
    p = sub.add_parser("index-map", help="(re)compute a map's NetVLAD descriptors and faiss index",
                       description="Compute NetVLAD global descriptors from the features stored in the map (and "
                                   "in its alternates) with the shipped NetVLAD for those features, and write "
                                   "global.h5 and the faiss index; run it after training a new NetVLAD "
                                   "instead of rebuilding the map. An interruption leaves the map with its "
                                   "old index or the new one, never a mix (map.json names the files and "
                                   "their hashes, and is replaced only once they are complete).")
    p.add_argument("map", type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    p.set_defaults(func=run_index_map)


def run_index_map(args: argparse.Namespace) -> int:
    from ..mapping.build import index_map
    from ..mapping.io import MapError, list_alternates, resolve

    try:
        dirs = [args.map, *(resolve(args.map, name) for name in list_alternates(args.map))]
        for d in dirs:
            meta = index_map(d, log=log)
            if meta:
                print(f"{d}: NetVLAD ({meta['model']}), {meta['index']} index of {meta['dim']}-D descriptors")
    except (MapError, ValueError, OSError) as e:
        return fail(str(e))
    return 0
