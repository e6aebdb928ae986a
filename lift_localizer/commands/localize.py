"""``lift-localizer localize`` and ``evaluate``: a query bag against a map."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import (add_bag_topics, backend_error, fail, feature_defaults, localizer_conf, localizer_options, log,
               positive_int)



def add(sub) -> None:
    from ..evaluation.metrics import WRONG_BOUND

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

    r = sub.add_parser(
        "retrieve", help="the map images most similar to each query image (hloc pairs file)",
        description="For each image of the query bag, the top-k map images by NetVLAD global descriptor "
                    "(descriptor votes if the map has none), one line `query_name map_image_name` each, best "
                    "first. Bag images are named by their header stamp in integer nanoseconds.")
    r.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    r.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG", help="rosbag2 folder with the query images")
    r.add_argument("--output", "-o", required=True, type=Path, metavar="PAIRS.txt",
                   help="pairs file to write (replaced if it exists)")
    r.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="map images per query image")
    r.add_argument("--features", default=None, help="which of the map's feature sets (default: its own)")
    r.add_argument("--max-keypoints", type=positive_int, default=feature_defaults()["max_keypoints"], metavar="N",
                   help="query keypoint budget")
    add_bag_topics(r, with_pose=False)
    r.set_defaults(func=run_retrieve)

    e = sub.add_parser(
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
    e.add_argument("--map", required=True, type=Path, metavar="MAP_DIR", help="map directory written by build-map")
    e.add_argument("--bag", required=True, type=Path, metavar="QUERY_BAG",
                   help="rosbag2 folder with the query images and their ground-truth poses")
    e.add_argument("--features", nargs="+", default=None,
                   help="feature sets to evaluate (default: all the map holds)")
    e.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="folder for plots and per-query tables (created; default: none written)")
    e.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the summary as JSON here")
    e.add_argument("--wrong-bound", type=wrong_bound, default=",".join(f"{v:g}" for v in WRONG_BOUND),
                   metavar="M,DEG",
                   help="an accepted pose farther than M metres or DEG degrees from the ground truth is "
                        "counted as wrong, besides the fixed (0.25 m, 5°); small-object sets want e.g. 0.02,2")
    e.add_argument("--thresholds", nargs="+", type=wrong_bound, default=None, metavar="M,DEG",
                   help="recall thresholds, metres and degrees (default: (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°), "
                        "(5 cm, 5°), (2 cm, 2°), then three scaled to the scene: 0.8 %%, 0.3 %% and 0.1 %% of the "
                        "median depth D of the map's points, with 0.46°, 0.17° and 0.057°)")
    e.add_argument("--compare-with", nargs="+", type=named_run, default=[], metavar="NAME=CSV",
                   help="per-query tables of other runs on the same query bag (queries_<features>.csv of "
                        "an earlier evaluate --report): compared, paired per query, with the first feature set")
    e.add_argument("--negatives", nargs="+", type=Path, default=None, metavar="OTHER_QUERY_BAG",
                   help="query bags of other scenes, localized against the map: every accepted pose is "
                        "counted as false (their ground truth is not read)")
    add_bag_topics(e, with_pose=False)
    e.add_argument("--ground-truth-topic", default="/ground_truth/pose",
                   help="PoseStamped of T_map_camera per query image, read only to score the poses")
    localizer_options(e)
    e.set_defaults(func=run_evaluate)


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


def _query_frames(args, pose_topic=None, bag=None):
    from ..bags.reader import BagError, read_frames

    try:
        return read_frames(bag or args.bag, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                           pose_topic=pose_topic), None
    except (BagError, OSError, ValueError) as e:
        return None, str(e)


def run_localize(args: argparse.Namespace) -> int:
    from collections import Counter

    from ..evaluation.metrics import reason_key
    from ..evaluation.replay import localize_frames, write_tum
    from ..localization.localizer import Localizer
    from ..mapping.io import MapError, load_map

    if (code := backend_error(args.backend)) is not None:
        return code
    try:
        localizer = Localizer(load_map(args.map, args.features), localizer_conf(args))
    except (MapError, ValueError) as e:
        return fail(str(e))
    if getattr(localizer.extractor, "untrained_warning", None):
        log(localizer.extractor.untrained_warning)
    if localizer.retrieval_note:
        log(f"note: retrieval by descriptor votes: {localizer.retrieval_note}")
    frames, error = _query_frames(args)  # no pose topic: the localizer never sees ground truth
    if error:
        return fail(error)
    outcomes = localize_frames(localizer, frames)
    written = write_tum(args.output, outcomes)
    failures = Counter(reason_key(o.reason) for o in outcomes if o.reason)
    print(f"localized {written}/{len(outcomes)} images -> {args.output}")
    if failures:
        log(f"failed: {sum(failures.values())} image(s): " + ", ".join(f"{k}: {v}" for k, v in failures.items()))
    return 0


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
    frames, error = _query_frames(args)
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


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from ..evaluation.evaluate import evaluate, print_results
    from ..evaluation.report import read_query_errors
    from ..mapping.io import MapError

    if (code := backend_error(args.backend)) is not None:
        return code
    frames, error = _query_frames(args)
    if error:
        return fail(error)
    truth_frames, error = _query_frames(args, pose_topic=args.ground_truth_topic)
    if error:
        return fail(error)
    truths = {f.name: f.T_map_camera for f in truth_frames if f.T_map_camera is not None}
    negatives = None
    if args.negatives:
        negatives = {}
        for bag in args.negatives:
            negatives[str(bag)], error = _query_frames(args, bag=bag)  # no pose topic: their truth is irrelevant
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
