"""lift-localizer: LIFT features, maps and 6-DoF camera localization (also ``python -m lift_localizer``)."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .stack_dump import dump_stacks_on_signal
from .commands import (Parser, benchmark, benchmark_node, benchmark_scale, build_map, demo, evaluate,
                       evaluate_features, export, extract, index_map, initial_weights, localize, play, record,
                       retrieve, train, training_data)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="lift-localizer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these; `lift-localizer COMMAND --help` for its options")
    extract.add(sub)
    build_map.add(sub)
    index_map.add(sub)
    localize.add(sub)
    retrieve.add(sub)
    evaluate.add(sub)
    train.add(sub)
    training_data.add(sub)
    initial_weights.add(sub)
    play.add(sub)
    record.add(sub)
    benchmark_node.add(sub)
    export.add(sub)
    benchmark.add(sub)
    benchmark_scale.add(sub)
    evaluate_features.add(sub)
    demo.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    dump_stacks_on_signal()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
