"""Evaluate localization against ground truth, for each feature set a map holds (LIFT and SIFT
side by side on the same map images and queries), and write a report a person wants to read."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..localization.localizer import Localizer
from ..mapping.frames import Frame
from ..mapping.io import list_alternates, load_map, read_meta
from .metrics import WRONG_BOUND, Summary, errors, nees, summarize
from .paired import align, compare
from .replay import QueryOutcome, area_counts, localize_frames
from .report import dataset_name, write_report
from .thresholds import default_thresholds, scaled_thresholds, scene_depth


def feature_sets(map_dir: str | Path) -> list[str]:
    """The map's own features first, then its alternates."""
    return [read_meta(map_dir)["features"]["name"], *list_alternates(map_dir)]


def evaluate(map_dir: str | Path, frames: list[Frame], truths: dict[str, np.ndarray],
             features: list[str] | None = None, conf: dict | None = None, report: str | Path | None = None,
             log=print, wrong_bound: tuple[float, float] = WRONG_BOUND,
             negatives: dict[str, list[Frame]] | None = None, thresholds=None,
             compare_with: dict[str, dict[str, tuple[float, float]]] | None = None,
             ) -> dict[str, tuple[Summary, list[QueryOutcome]]]:
    """Localize ``frames`` with each feature set and compare with ``truths`` {frame name: T_map_camera}.

    Frames without ground truth are not evaluated (they are counted in the log). Accepted poses beyond
    ``WRONG_BOUND`` and beyond ``wrong_bound`` are counted as wrong. ``negatives`` {bag name: frames}:
    queries of other scenes, localized against the same map, where every accepted pose is false.
    ``thresholds``: (metres, degrees) pairs for recall; default: the fixed ones and three scaled to the
    scene (``evaluation.thresholds``). The first feature set is compared, paired per query, with each
    other one and with each run of ``compare_with`` {name: {query name: (metres, degrees) error, inf
    where not localized}}; the comparisons are in its summary's ``paired``."""
    evaluated = [f for f in frames if f.name in truths]
    if len(evaluated) < len(frames):
        log(f"note: {len(frames) - len(evaluated)} of {len(frames)} query frames have no ground truth; not evaluated")
    if not evaluated:
        raise ValueError("no query frame has a ground-truth pose")
    gts = [truths[f.name] for f in evaluated]
    scaled: tuple = ()
    depth = float("nan")
    results: dict[str, tuple[Summary, list[QueryOutcome]]] = {}
    for name in features or feature_sets(map_dir):
        localizer = Localizer(load_map(map_dir, name), conf)
        if thresholds is None:  # from the first map only: every set is judged by the same thresholds
            depth = scene_depth(localizer.map)
            thresholds = default_thresholds(depth)
            scaled = scaled_thresholds(depth)
            if scaled:
                log(f"scene depth {depth:.3g} m (median over the map's observations): scene-scaled thresholds "
                    + ", ".join(f"({t:g} m, {r:g}°)" for t, r in scaled))
        if getattr(localizer.extractor, "untrained_warning", None):
            log(localizer.extractor.untrained_warning)
        outcomes = localize_frames(localizer, evaluated, desc=f"localize ({name})")
        err = errors([o.T_map_camera for o in outcomes], gts)
        timings = [o.result.timings for o in outcomes if o.result is not None]
        summary = summarize(err, [o.reason for o in outcomes], timings, thresholds,
                            wrong_bounds=(WRONG_BOUND, wrong_bound))
        summary.solver = localizer.solver
        summary.options = run_options(localizer)
        summary.scene_thresholds = tuple(t for t in scaled if t in thresholds)
        summary.scene_depth = depth
        summary.nees = np.array([nees(o.T_map_camera, o.result.covariance, gt) if o.reason is None else np.nan
                                 for o, gt in zip(outcomes, gts)])
        summary.retrieval = {"method": localizer.retrieval.name,
                             **retrieval_recall(localizer, outcomes, gts)}
        if localizer.conf["retrieval_radius_m"] > 0:
            summary.retrieval.update(radius_m=localizer.conf["retrieval_radius_m"], area=area_counts(outcomes))
        if negatives is not None:
            summary.negatives = count_negatives(localizer, negatives, name)
        results[name] = (summary, outcomes)
    reference, (first, _) = next(iter(results.items()))
    first.paired = [compare(first.errors, s.errors, thresholds, reference, name)
                    for name, (s, _) in list(results.items())[1:]]
    names = [f.name for f in evaluated]
    first.paired += [compare(first.errors, align(names, run, name), thresholds, reference, name)
                     for name, run in (compare_with or {}).items()]
    if report:
        write_report(Path(report), results, gts, dataset_name(map_dir), map_dir)
    return results


def run_options(localizer: Localizer) -> dict:
    """The localizer's options with the solver it picked, and its query extractor's, as JSON values."""
    options = {**localizer.conf, "solver": localizer.solver,
               "extractor": getattr(localizer.extractor, "conf", None)}
    # Weights may be given as paths, a device as a torch.device: their text is what a reader needs.
    return json.loads(json.dumps(options, default=str))


def count_negatives(localizer: Localizer, negatives: dict[str, list[Frame]], name: str = "") -> dict:
    """Localize queries that are not of the map's scene: every pose the localizer accepts is false.

    Frames that cannot be read are not counted as queries (they could never be accepted)."""
    bags = {}
    for bag, frames in negatives.items():
        outcomes = localize_frames(localizer, frames, desc=f"negatives ({name})")
        readable = [o for o in outcomes if o.result is not None]
        bags[bag] = {"num_queries": len(readable), "num_accepted": sum(o.reason is None for o in readable)}
    return {"num_queries": sum(b["num_queries"] for b in bags.values()),
            "num_accepted": sum(b["num_accepted"] for b in bags.values()), "bags": bags}


def retrieval_recall(localizer: Localizer, outcomes: list[QueryOutcome], gts: list[np.ndarray],
                     ks=(1, 5), num_nearest: int = 2) -> dict[str, float]:
    """Fraction of queries whose top-k retrieved map images include one of the ``num_nearest`` map
    images nearest to the query's ground-truth position."""
    centres = np.array([im.T_map_camera[:3, 3] for im in localizer.map.images])
    index = {name: i for i, name in enumerate(localizer.names)}
    hits = {k: [] for k in ks}
    for o, gt in zip(outcomes, gts):
        nearest = set(np.argsort(np.linalg.norm(centres - gt[:3, 3], axis=1))[:num_nearest].tolist())
        got = [index[n] for n in (o.result.retrieved if o.result else [])]
        for k in ks:
            hits[k].append(bool(nearest & set(got[:k])))
    return {f"recall@{k}": float(np.mean(v)) if v else 0.0 for k, v in hits.items()}


def print_results(results: dict[str, tuple[Summary, list[QueryOutcome]]], log=print) -> None:
    for name, (summary, _) in results.items():
        log(f"[{name}] (PnP: {summary.solver})")
        for row in summary.table_rows() + summary.wrong_rows():
            log("  " + row)
        if summary.retrieval:
            r = summary.retrieval
            log(f"  retrieval ({r['method']}): recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f} "
                f"(right = one of the 2 map images nearest the query)")
            if "area" in r:
                log(f"  retrieval area (radius {r['radius_m']:g} m around the previous accepted pose): "
                    + ", ".join(f"{mode}: {n}" for mode, n in r["area"].items()))
        if summary.failures:
            log("  failures: " + ", ".join(f"{k}: {v}" for k, v in summary.failures.items()))
    for name, (summary, _) in results.items():
        for comparison in summary.paired:
            for line in comparison.lines():
                log(line)
