"""Evaluate localization against ground truth, for each feature set a map holds (LIFT and SIFT
side by side on the same map images and queries), and write a report a person wants to read."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ..geometry.pose import invert
from ..localization.localizer import Localizer
from ..mapping.frames import Frame
from ..mapping.io import list_alternates, load_map, read_meta
from .metrics import Summary, errors, summarize
from .plots import draw_inliers, plot_error_cdfs, plot_trajectories
from .replay import QueryOutcome, localize_frames


def feature_sets(map_dir: str | Path) -> list[str]:
    """The map's own features first, then its alternates."""
    return [read_meta(map_dir)["features"]["name"], *list_alternates(map_dir)]


def evaluate(map_dir: str | Path, frames: list[Frame], truths: dict[str, np.ndarray],
             features: list[str] | None = None, conf: dict | None = None, report: str | Path | None = None,
             log=print) -> dict[str, tuple[Summary, list[QueryOutcome]]]:
    """Localize ``frames`` with each feature set and compare with ``truths`` {frame name: T_map_camera}.

    Frames without ground truth are not evaluated (they are counted in the log)."""
    evaluated = [f for f in frames if f.name in truths]
    if len(evaluated) < len(frames):
        log(f"note: {len(frames) - len(evaluated)} of {len(frames)} query frames have no ground truth; not evaluated")
    if not evaluated:
        raise ValueError("no query frame has a ground-truth pose")
    gts = [truths[f.name] for f in evaluated]
    results: dict[str, tuple[Summary, list[QueryOutcome]]] = {}
    for name in features or feature_sets(map_dir):
        localizer = Localizer(load_map(map_dir, name), conf)
        if getattr(localizer.extractor, "untrained_warning", None):
            log(localizer.extractor.untrained_warning)
        outcomes = localize_frames(localizer, evaluated, desc=f"localize ({name})")
        err = errors([o.T_map_camera for o in outcomes], gts)
        timings = [o.result.timings for o in outcomes if o.result is not None]
        summary = summarize(err, [o.reason for o in outcomes], timings)
        summary.solver = localizer.solver
        summary.retrieval = {"method": localizer.retrieval.name,
                             **retrieval_recall(localizer, outcomes, gts)}
        results[name] = (summary, outcomes)
    if report:
        write_report(Path(report), results, gts, map_dir)
    return results


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
        for row in summary.table_rows():
            log("  " + row)
        if summary.retrieval:
            r = summary.retrieval
            log(f"  retrieval ({r['method']}): recall@1 {r['recall@1']:.3f}  recall@5 {r['recall@5']:.3f} "
                f"(right = one of the 2 map images nearest the query)")
        if summary.failures:
            log("  failures: " + ", ".join(f"{k}: {v}" for k, v in summary.failures.items()))


def _inlier_figure(outcome: QueryOutcome, name: str) -> np.ndarray | None:
    r = outcome.result
    if r is None or r.match_xyz is None or r.T_map_camera is None:
        return None
    cam = outcome.frame.camera
    T_cw = invert(r.T_map_camera)
    proj, _ = cv2.projectPoints(r.match_xyz, cv2.Rodrigues(T_cw[:3, :3])[0], T_cw[:3, 3], cam.K,
                                cam.dist if cam.has_distortion else None)
    kp = r.features.keypoints[r.match_keypoints]
    caption = (f"{name} {outcome.frame.name}: {r.num_inliers}/{r.num_matches} inliers"
               + ("" if outcome.reason is None else f" - FAILED: {outcome.reason}"))
    return draw_inliers(outcome.frame.image(), kp, proj[:, 0], r.inliers, caption)


def write_report(report: Path, results: dict, gts: list[np.ndarray], map_dir) -> None:
    report.mkdir(parents=True, exist_ok=True)
    gt_xyz = np.array([T[:3, 3] for T in gts])
    title = f"{Path(map_dir).name}: {len(gts)} queries"
    est = {name: np.array([o.T_map_camera[:3, 3] if o.T_map_camera is not None else [np.nan] * 3 for o in outs])
           for name, (_, outs) in results.items()}
    plot_trajectories(report / "trajectory_top_view.png", gt_xyz, est, title)
    plot_error_cdfs(report / "error_cdf.png", {n: s.errors for n, (s, _) in results.items()}, title)
    for name, (summary, outcomes) in results.items():
        # A few queries to look at: the first, the median and the worst localized, and a failure.
        order = np.argsort(summary.errors[:, 0])
        picks = {int(order[0]), int(order[len(order) // 2]), int(order[-1])}
        for k in sorted(picks):
            fig = _inlier_figure(outcomes[k], name)
            if fig is not None:
                stem = Path(outcomes[k].frame.name).stem
                cv2.imwrite(str(report / f"inliers_{name}_{stem}.jpg"), fig)
        with open(report / f"queries_{name}.csv", "w") as f:
            f.write("name,localized,translation_error,rotation_error_deg,inliers,matches,reason\n")
            for o, (dt, dr) in zip(outcomes, summary.errors):
                r = o.result
                f.write(f"{o.frame.name},{int(o.reason is None)},{dt:.6g},{dr:.6g},{r.num_inliers if r else 0},"
                        f"{r.num_matches if r else 0},{(o.reason or '').replace(',', ';')}\n")
    (report / "summary.json").write_text(json.dumps({n: s.to_dict() for n, (s, _) in results.items()}, indent=1))
