"""Localize every query bag against every other scene's map and count the accepted poses: all of
them are false. Each bag's query features are extracted once and reused for every map, which
``evaluate --negatives`` (one map per call) cannot do.

    python tools/cross_scene.py --maps MAP_DIR... --bags QUERY_BAG... [--features lift] [--same-scene A,B ...]

A map and a bag are paired unless they are of one scene: the same dataset folder name (a map
directory and a bag's parent folder are named after their dataset), or named together in
``--same-scene``. Prints one line per (map, bag) and the total.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from lift_localizer.images import to_gray
from lift_localizer.localization.localizer import Localizer
from lift_localizer.bags.reader import read_frames
from lift_localizer.mapping.io import load_map


def dataset(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.name in ("query", "mapping") else p.name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", nargs="+", required=True)
    ap.add_argument("--bags", nargs="+", required=True, help="query bags (their ground truth is not read)")
    ap.add_argument("--features", default="lift")
    ap.add_argument("--same-scene", nargs="*", default=[], metavar="A,B")
    args = ap.parse_args(argv)
    same = {frozenset(x.split(",")) for x in args.same_scene}
    localizers = {m: Localizer(load_map(m, args.features)) for m in args.maps}
    total = accepted = 0
    for bag in args.bags:
        frames = [f for f in read_frames(bag) if f.camera is not None and not f.error]
        others = [m for m in args.maps if dataset(m) != dataset(bag) and frozenset((dataset(m), dataset(bag))) not in same]
        if not others:
            continue
        extractor = localizers[others[0]].extractor
        feats = [(f, extractor(to_gray(f.image()))) for f in tqdm(frames, desc=f"extract {dataset(bag)}", file=sys.stderr)]
        for m in others:
            n = sum(localizers[m].localize_features(q, f.camera).success for f, q in feats)
            print(f"map {dataset(m)} ← queries of {dataset(bag)}: {n} of {len(feats)} accepted", flush=True)
            total, accepted = total + len(feats), accepted + n
    print(f"total: {accepted} of {total} cross-scene queries accepted (every one is false)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
