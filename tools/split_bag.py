"""Split a mapping bag into a map half and a held-out half, to choose options without a query half.

Every ``--stride``-th posed image (in stamp order; 2: the even ones) goes to OUT/mapping, the others
to OUT/query, each with its camera_info and ground-truth pose, messages copied byte for byte. Then
``build-map`` on OUT/mapping and ``evaluate`` on OUT/query compare options (paired, with
``--compare-with``) on images that never belong to a query half (docs/evaluation.md):

    python tools/split_bag.py ../shared/data/bags/SET/mapping --output SPLIT/SET [--stride 2]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lift_localizer.bags.reader import open_bag, stamp_ns


def split(bag: Path, output: Path, stride: int = 2) -> tuple[int, int]:
    """Write OUT/mapping and OUT/query; returns their image counts."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.LATEST)
    reader = open_bag(bag)
    try:
        stamps = sorted({stamp_ns(typestore.deserialize_cdr(raw, c.msgtype).header)
                         for c, _, raw in reader.messages() if c.topic == "/ground_truth/pose"})
        if len(stamps) < 2:
            raise SystemExit(f"{bag}: {len(stamps)} posed image(s); nothing to split")
        posed, kept = set(stamps), set(stamps[::stride])
        counts = {"mapping": len(kept), "query": len(stamps) - len(kept)}
        writers = {name: Writer(output / name, version=8) for name in counts}
        for w in writers.values():
            w.open()
        try:
            connections = {name: {c.id: w.add_connection(c.topic, c.msgtype, typestore=typestore)
                                  for c in reader.connections} for name, w in writers.items()}
            for c, t, raw in reader.messages():
                # Only stamped messages of posed images are copied (images without a pose cannot be scored).
                header = getattr(typestore.deserialize_cdr(raw, c.msgtype), "header", None)
                stamp = stamp_ns(header) if header is not None else None
                if stamp in posed:
                    name = "mapping" if stamp in kept else "query"
                    writers[name].write(connections[name][c.id], t, raw)
        finally:
            for w in writers.values():
                w.close()
        return counts["mapping"], counts["query"]
    finally:
        reader.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bag", type=Path, help="a mapping bag (images, camera_info, /ground_truth/pose)")
    ap.add_argument("--output", required=True, type=Path, help="folder to create, with mapping/ and query/")
    ap.add_argument("--stride", type=int, default=2, help="every STRIDE-th posed image makes the map (default 2)")
    a = ap.parse_args()
    if a.stride < 2:
        ap.error("--stride must be at least 2")
    if a.output.exists():
        ap.error(f"{a.output} exists")
    n_map, n_query = split(a.bag, a.output, a.stride)
    print(f"{a.output}: mapping {n_map} images, query {n_query} images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
