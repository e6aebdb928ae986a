"""Retrieval speed and memory on a large synthetic map: each faiss index kind the map builder
chooses from, queried one at a time as the localizer does, and one NetVLAD descriptor's cost
against the LIFT pipeline's time (lift_localizer/retrieval/benchmark.py).

    python tools/retrieval_benchmark.py [--images 100000] [--queries 200] [--top-k 10]
"""
from __future__ import annotations

import argparse

from lift_localizer.retrieval.benchmark import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/retrieval_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=100_000, help="map images (default %(default)s)")
    p.add_argument("--queries", type=int, default=200, help="queries timed (default %(default)s)")
    p.add_argument("--top-k", type=int, default=10, help="map images retrieved per query (default %(default)s)")
    args = p.parse_args(argv)
    run(args.images, args.queries, args.top_k)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
