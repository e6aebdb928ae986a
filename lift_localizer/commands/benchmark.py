"""The parser of ``benchmark``; what it measures lives in ``evaluation/benchmark.py`` and imports torch,
so it is imported only when the command runs."""
from __future__ import annotations

import argparse

from . import add_network_options, fail, module_doc, network_problem, network_weights


def add(sub) -> None:
    from ..evaluation.benchmark_options import add_arguments

    p = sub.add_parser("benchmark", help="per-stage latency per back end, operation counts, fraction of peak",
                       description=module_doc("lift_localizer.evaluation.benchmark"))
    add_arguments(p)
    add_network_options(p)
    p.set_defaults(func=run_benchmark)


def run_benchmark(args: argparse.Namespace) -> int:
    from ..evaluation.benchmark import run

    if problem := network_problem(args):
        return fail(problem)
    args.weights = network_weights(args)
    return run(args)
