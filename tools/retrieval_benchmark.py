"""Which faiss index a large map wants: flat, HNSW, IVF-Flat and IVF-PQ over a synthetic 100 000-image
map, each with its build time, memory, per-query latency (one query at a time) and recall against the
exact search; optionally seeded from the real NetVLAD descriptors of maps (--real); and one NetVLAD
descriptor's cost against the LIFT pipeline's time (lift_localizer/retrieval/benchmark.py).

    python tools/retrieval_benchmark.py [--images 100000] [--queries 200] [--real MAP_DIR ...] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from lift_localizer.retrieval.benchmark import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/retrieval_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000, help="map images (default %(default)s)")
    p.add_argument("--queries", type=int, default=200, help="queries timed (default %(default)s)")
    p.add_argument("--real", type=Path, nargs="+", default=None, metavar="MAP_DIR",
                   help="maps (with NetVLAD, global.h5) whose descriptors seed the synthetic ones; default: "
                        "clusters at random")
    p.add_argument("--threads", type=int, default=1,
                   help="faiss threads, for building and searching (default %(default)s; 0: faiss's default)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the rows here")
    args = p.parse_args(argv)
    if args.threads:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    rows = run(args.images, args.queries, args.real)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
