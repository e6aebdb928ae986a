"""``lift-localizer evaluate``: a query bag localized against a map and compared with its ground truth."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import (add_bag_topics, backend_error, fail, localizer_conf, localizer_options, log, network_problem,
               query_frames)


def add(sub) -> None:
    from ..evaluation.metrics import WRONG_BOUND

    p = sub.add_parser(
        "evaluate", help="localize a query bag and compare with its ground truth; report and plots",
        description="Localize the query bag with each feature set the map holds (LIFT and, if built with "
                    "--features lift sift, SIFT beside it), compare with the bag's ground-truth poses and "
                    "print recall at fixed and scene-scaled thresholds (--thresholds), median "
                    "errors, failures, per-stage timings and the accepted poses that are wrong: beyond "
                    "(0.25 m, 5°) and beyond --wrong-bound. --negatives counts the accepted poses of other "
                    "scenes' queries, all false. The first feature set is compared with each other one (and "
                    "each --compare-with run) query by query: queries won, lost and tied per threshold and a "
                    "bootstrap 95 % interval of the recall difference; only an interval that excludes zero "
                    "says one is better. --report DIR writes plots and per-query tables.")
    p.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    p.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG",
                   help="rosbag2 folder with the query images and their ground-truth poses")
    p.add_argument("--features", nargs="+", default=None,
                   help="feature sets to evaluate (default: all the map holds)")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="folder for plots and per-query tables (created; default: none written)")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the summary as JSON here")
    p.add_argument("--wrong-bound", type=wrong_bound, default=",".join(f"{v:g}" for v in WRONG_BOUND),
                   metavar="M,DEG",
                   help="an accepted pose farther than M metres or DEG degrees from the ground truth is "
                        "counted as wrong, besides the fixed (0.25 m, 5°); small-object sets want e.g. 0.02,2")
    p.add_argument("--thresholds", nargs="+", type=wrong_bound, default=None, metavar="M,DEG",
                   help="recall thresholds, metres and degrees (default: (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°), "
                        "(5 cm, 5°), (2 cm, 2°), then three scaled to the scene: 0.8 %%, 0.3 %% and 0.1 %% of the "
                        "median depth D of the map's points, with 0.46°, 0.17° and 0.057°)")
    p.add_argument("--compare-with", nargs="+", type=named_run, default=[], metavar="NAME=CSV",
                   help="per-query tables of other runs on the same query bag (queries_<features>.csv of "
                        "an earlier evaluate --report): compared, paired per query, with the first feature set")
    p.add_argument("--negatives", nargs="+", type=Path, default=None, metavar="OTHER_QUERY_BAG",
                   help="query bags of other scenes, localized against the map: every accepted pose is "
                        "counted as false (their ground truth is not read)")
    add_bag_topics(p, with_pose=False)
    p.add_argument("--ground-truth-topic", default="/ground_truth/pose",
                   help="PoseStamped of T_map_camera per query image, read only to score the poses")
    localizer_options(p)
    p.set_defaults(func=run_evaluate)


def wrong_bound(text: str) -> tuple[float, float]:
    """``M,DEG`` → (metres, degrees), both positive."""
    try:
        m, deg = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected M,DEG (e.g. 0.02,2), got {text!r}") from None
    if not (m > 0 and deg > 0):
        raise argparse.ArgumentTypeError(f"both bounds must be positive, got {text!r}")
    return m, deg


def named_run(text: str) -> tuple[str, Path]:
    """``NAME=CSV`` → (name, path)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=CSV (e.g. before=report/queries_lift.csv), got {text!r}")
    return name, Path(path)


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.evaluate import evaluate, print_results
    from ..evaluation.report import read_query_errors
    from ..mapping.io import MapError

    if (code := backend_error(args.backend)) is not None:
        return code
    if problem := network_problem(args):
        return fail(problem)
    frames, error = query_frames(args)
    if error:
        return fail(error)
    truth_frames, error = query_frames(args, pose_topic=args.ground_truth_topic)
    if error:
        return fail(error)
    truths = {f.name: f.T_map_camera for f in truth_frames if f.T_map_camera is not None}
    negatives = None
    if args.negatives:
        negatives = {}
        for bag in args.negatives:
            negatives[str(bag)], error = query_frames(args, bag=bag)  # no pose topic: their truth is irrelevant
            if error:
                return fail(error)
    try:
        runs = {name: read_query_errors(path) for name, path in args.compare_with}
    except (OSError, ValueError) as e:
        return fail(str(e))
    try:
        results = evaluate(args.map, frames, truths, args.features, localizer_conf(args), args.report, log=log,
                           wrong_bound=args.wrong_bound, negatives=negatives, thresholds=args.thresholds,
                           compare_with=runs)
    except (MapError, ValueError) as e:
        return fail(str(e))
    print(f"evaluate: map {args.map}, queries {args.bag}")
    print_results(results, log=print)
    if args.report:
        print(f"report written to {args.report}")
    if args.json:
        args.json.write_text(json.dumps({n: s.to_dict() for n, (s, _) in results.items()}, indent=1))
    sys.stdout.flush()
    return 0
