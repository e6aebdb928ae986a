"""The folder ``evaluate --report DIR`` writes: ``report.html`` (the page to open: recall, median
errors, failures, timings and every plot), the plots as PNG, one CSV per feature set and
``summary.json``."""
from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

import cv2
import numpy as np

from ..geometry.pose import invert
from ..mapping.io import MapError, read_meta
from .metrics import Summary
from .plots import plot_error_cdfs, plot_matches, plot_trajectories
from .replay import QueryOutcome

MATCH_LABELS = ("best", "median", "worst", "failed")
STAGES = ("extract", "retrieve", "match", "pnp")


def dataset_name(map_dir: str | Path) -> str:
    """What the map was built from, for titles: a bag's dataset folder (``.../kitti/mapping`` →
    ``kitti``), an image folder's name, or the map folder's name when the map does not say."""
    try:
        source = str(read_meta(map_dir).get("source") or "")
    except MapError:
        source = ""
    if not source:
        return Path(map_dir).resolve().name
    p = Path(source)
    if p.name in ("mapping", "map", "images") and p.parent.name:
        return p.parent.name
    return p.name or source


def pick_queries(outcomes: list[QueryOutcome], err: np.ndarray) -> dict[str, int]:
    """{label: query index} for the match figures: the best, median and worst localized query by
    translation error, and the failure with the most matches that still has a (rejected) pose to
    draw them at. A query gets one label only (with two localized, there is no median)."""
    ok = np.flatnonzero(np.isfinite(err[:, 0]))
    order = ok[np.lexsort((err[ok, 1], err[ok, 0]))]
    picks: dict[str, int] = {}
    if len(order):
        for label, k in (("best", order[0]), ("worst", order[-1]), ("median", order[(len(order) - 1) // 2])):
            if int(k) not in picks.values():
                picks[label] = int(k)
    failed = [i for i, o in enumerate(outcomes) if o.reason is not None and _drawable(o)]
    if failed:
        picks["failed"] = max(failed, key=lambda i: outcomes[i].result.num_matches)
    return {label: picks[label] for label in MATCH_LABELS if label in picks}


def _drawable(o: QueryOutcome) -> bool:
    r = o.result
    return r is not None and r.match_xyz is not None and len(r.match_xyz) > 0 and r.T_map_camera is not None


def _length(m: float) -> str:
    return f"{m:.2f} m" if m >= 1 else f"{m * 100:.2f} cm"


def _match_figure(path: Path, o: QueryOutcome, name: str, label: str, error: np.ndarray) -> None:
    r = o.result
    cam = o.frame.camera
    T_cw = invert(r.T_map_camera)
    proj, _ = cv2.projectPoints(np.ascontiguousarray(r.match_xyz, np.float64), cv2.Rodrigues(T_cw[:3, :3])[0],
                                T_cw[:3, 3], cam.K, cam.dist if cam.has_distortion else None)
    kp = r.features.keypoints[r.match_keypoints]
    counts = f"{r.num_inliers} of {r.num_matches} 2D–3D matches are PnP inliers"
    if label == "failed":
        title = f"{name} — a failed query: {o.frame.name}\nFAILED: {o.reason}\n{counts} (at the rejected pose)"
    else:
        dt, dr = error
        title = f"{name} — {label} localized query {o.frame.name}\nerror {_length(dt)}, {dr:.2f}°; {counts}"
    plot_matches(path, o.frame.image(), kp, proj[:, 0], r.inliers, title)


def _stage_ms(o: QueryOutcome) -> dict[str, float]:
    t = dict(o.result.timings) if o.result is not None else {}
    out = {k: 1e3 * t[k] for k in STAGES if k in t}
    out.update({k: 1e3 * v for k, v in t.items() if k not in out})
    if out:
        out["total"] = sum(out.values())
    return out


def _cell(v: float, fmt: str = ".6g") -> str:
    # Missing values are empty cells, not inf, so that spreadsheets and pandas read NaN.
    return format(v, fmt) if v is not None and np.isfinite(v) else ""


def _write_csv(path: Path, outcomes: list[QueryOutcome], err: np.ndarray, nees: np.ndarray | None) -> None:
    per_query = [_stage_ms(o) for o in outcomes]
    stages = [s for s in [*STAGES, "total"] if any(s in t for t in per_query)]
    stages += sorted({s for t in per_query for s in t} - set(stages))
    header = ["name", "localized", "translation_error_m", "rotation_error_deg", "inliers",
              "matches", "inlier_coverage", "rival_inliers", "position_std_m", "nees",
              *(f"{s}_time_ms" for s in stages), "reason"]
    lines = [",".join(header)]
    nees = np.full(len(outcomes), np.nan) if nees is None else nees
    for o, (dt, dr), t, q in zip(outcomes, err, per_query, nees):
        r = o.result
        ev = r.evidence if r is not None else None
        cells = [o.frame.name, str(int(o.reason is None)), _cell(dt), _cell(dr), str(r.num_inliers if r else 0),
                 str(r.num_matches if r else 0), _cell(ev.coverage if ev else None, ".3f"),
                 str(ev.rival_inliers) if ev and ev.rival_inliers is not None else "",
                 _cell(ev.position_std if ev else None), _cell(q, ".4g"),
                 *(f"{t[s]:.1f}" if s in t else "" for s in stages), o.reason or ""]
        lines.append(",".join(c.replace(",", ";") for c in cells))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_query_errors(path: str | Path, max_bytes: int = 64 << 20) -> dict[str, tuple[float, float]]:
    """{query name: (translation m, rotation °)} from a per-query table as ``evaluate --report`` writes
    it (``name``, ``translation_error_m``, ``rotation_error_deg``; empty = not localized, read as inf)."""
    import csv

    path = Path(path)
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes >> 20} MB; not a per-query table")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    need = {"name", "translation_error_m", "rotation_error_deg"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with the columns {', '.join(sorted(need))} "
                         "(as evaluate --report writes queries_<features>.csv)")
    out = {}
    for i, row in enumerate(rows, 2):
        try:
            t, r = (float(row[k]) if row[k].strip() else np.inf for k in ("translation_error_m", "rotation_error_deg"))
        except ValueError:
            raise ValueError(f"{path}:{i}: not a number: {row['translation_error_m']!r}, "
                             f"{row['rotation_error_deg']!r}") from None
        if row["name"] in out:
            raise ValueError(f"{path}:{i}: query {row['name']!r} listed twice")
        out[row["name"]] = (t, r) if np.isfinite(t) and np.isfinite(r) else (np.inf, np.inf)
    return out


def write_report(report: Path, results: dict[str, tuple[Summary, list[QueryOutcome]]], gts: list[np.ndarray],
                 dataset: str, map_dir: str | Path | None = None) -> Path:
    """Write the report folder; returns the path of its ``report.html``."""
    report.mkdir(parents=True, exist_ok=True)
    n = len(gts)
    gt_xyz = np.array([T[:3, 3] for T in gts]).reshape(-1, 3)
    names = list(results)
    est = {name: np.array([o.T_map_camera[:3, 3] if o.T_map_camera is not None else [np.nan] * 3 for o in outs])
           .reshape(-1, 3) for name, (_, outs) in results.items()}
    plot_trajectories(report / "trajectory_top_view.png", gt_xyz, est,
                      f"Top view: ground truth and {', '.join(names)} positions — {dataset}",
                      down=np.mean([T[:3, 1] for T in gts], 0) if gts else None)
    plot_error_cdfs(report / "error_cdf.png", {k: s.errors for k, (s, _) in results.items()},
                    f"Cumulative distribution of pose errors, {' and '.join(names)} — {dataset}, {n} queries")
    matches: dict[str, list[tuple[str, str, QueryOutcome]]] = {}
    written = set()
    for name, (summary, outcomes) in results.items():
        matches[name] = []
        for label, k in pick_queries(outcomes, summary.errors).items():
            if not _drawable(outcomes[k]):
                continue
            file = f"matches_{label}_{name}.png"
            _match_figure(report / file, outcomes[k], name, label, summary.errors[k])
            matches[name].append((label, file, outcomes[k]))
            written.add(file)
        _write_csv(report / f"queries_{name}.csv", outcomes, summary.errors, summary.nees)
    # A report folder used again: match figures of an earlier run would show queries of another.
    for stale in report.glob("matches_*.png"):
        if stale.name not in written:
            stale.unlink()
    (report / "summary.json").write_text(json.dumps({k: s.to_dict() for k, (s, _) in results.items()}, indent=1))
    page = report / "report.html"
    page.write_text(_html(results, matches, dataset, n, map_dir), encoding="utf-8")
    return page


CSS = """
body { font-family: DejaVu Sans, Helvetica, Arial, sans-serif; margin: 1.5em auto; max-width: 1400px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.95em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: bold; background: #e8f5e9; }
.note { color: #555; font-size: 0.9em; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #444; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 1em; }
"""


def _table(header: list[str], rows: list[list[str]], best: list[set[int]] | None = None) -> str:
    """``best[i]``: the columns of row i to highlight."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cells = []
        for j, c in enumerate(row):
            cls = ' class="best"' if best and j in best[i] else ""
            cells.append(f"<td{cls}>{html.escape(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "\n".join(out + ["</table>"])


def _recall_section(results: dict) -> str:
    summaries = {k: s for k, (s, _) in results.items()}
    first = next(iter(summaries.values()))
    thresholds = list(first.recall)
    bounds = list(first.wrong)
    with_negatives = any(s.negatives is not None for s in summaries.values())
    header = ["feature set", "localized", *(f"({t:g} m, {r:g}°)" for t, r in thresholds),
              "median translation error", "median rotation error", "retrieval recall@1", "recall@5",
              *(f"wrong accepted, beyond ({t:g} m, {r:g}°)" for t, r in bounds),
              *(["negatives accepted (false)"] if with_negatives else []),
              "inside the 95 % covariance ellipsoid"]
    rows, values = [], []
    for name, s in summaries.items():
        rec = [s.recall[t] for t in thresholds]
        ret = s.retrieval or {}
        wrong = [s.wrong.get(b) for b in bounds]
        neg = s.negatives or {}
        rows.append([name, f"{s.num_localized}/{s.num_queries}", *(f"{100 * v:.1f} %" for v in rec),
                     "–" if not np.isfinite(s.median_translation) else _length(s.median_translation),
                     "–" if not np.isfinite(s.median_rotation_deg) else f"{s.median_rotation_deg:.3f}°",
                     *(f"{100 * ret[k]:.1f} %" if k in ret else "–" for k in ("recall@1", "recall@5")),
                     *("–" if k is None else f"{k}/{s.num_localized}" for k in wrong),
                     *([f"{neg['num_accepted']}/{neg['num_queries']}" if neg else "–"] if with_negatives else []),
                     _coverage(s.calibration)])
        # fewer wrong and false poses is better: negated, so that the highest value is the best as elsewhere
        values.append([s.num_localized, *rec, -s.median_translation, -s.median_rotation_deg,
                       ret.get("recall@1", np.nan), ret.get("recall@5", np.nan),
                       *(np.nan if k is None else -k for k in wrong),
                       *([-neg["num_accepted"] if neg else np.nan] if with_negatives else []),
                       # nearest to the 0.95 a calibrated covariance gives is best
                       -abs(s.calibration["coverage_95"] - 0.95) if s.calibration else np.nan])
    best: list[set[int]] = [set() for _ in rows]
    if len(rows) > 1:
        v = np.nan_to_num(np.array(values, float), nan=-np.inf)
        for j in range(v.shape[1]):
            for i in np.flatnonzero(v[:, j] == v[:, j].max()):
                if np.isfinite(v[i, j]) and not (v[:, j] == v[i, j]).all():
                    best[i].add(j + 1)
        _keep_shown_differences(best, [c for c in first.paired if c.b in summaries], len(thresholds))
    return ("<h2>Recall and median errors</h2>\n"
            '<p class="note">Recall: the fraction of all queries localized within both the position and '
            "the rotation threshold (failures count as misses). Median errors are over the localized queries. "
            "Retrieval is right when the top 1 (5) retrieved map images include one of the 2 map images "
            "nearest the query's true position. Wrong accepted: localized queries farther from the truth than the "
            "bound in position or rotation. Negatives: queries of other scenes localized against this map; "
            "every one accepted is false. A calibrated covariance holds 95 % of the true poses inside its 95 % "
            "ellipsoid (the 6-D error, position and rotation, normalised by the covariance: NEES ≤ 12.59). "
            "The best value of a column is highlighted; in the recall and translation error columns only "
            "where the paired comparison below shows a difference (a 95 % interval that excludes zero).</p>\n"
            + _table(header, rows, best))


def _keep_shown_differences(best: list[set[int]], paired: list, num_thresholds: int) -> None:
    """Drop the highlight of recall and translation error cells whose lead the paired comparisons of the
    first set (row 0) do not show: row 0 keeps it where it beats every other set, another row only where
    it is the one other set and beats row 0."""
    recall_columns = range(2, 2 + num_thresholds)
    error_column = 2 + num_thresholds

    def shown(column: int, sign: int) -> bool:
        if column == error_column:
            return all(c.error_ratio is not None and (c.error_ratio[2] < 1 if sign > 0 else c.error_ratio[1] > 1)
                       for c in paired)
        row = column - 2
        return all((c.rows[row].low > 0) if sign > 0 else (c.rows[row].high < 0) for c in paired)

    for i, cells in enumerate(best):
        for column in [c for c in cells if c in recall_columns or c == error_column]:
            if not paired or len(paired) != len(best) - 1 or (i > 0 and len(best) > 2) \
                    or not shown(column, 1 if i == 0 else -1):
                cells.discard(column)


def _paired_section(results: dict) -> str:
    first = next(iter(results.values()))[0]
    if not first.paired:
        return ""
    parts = ["<h2>Paired comparison</h2>\n"
             '<p class="note">The first feature set against each other one on the same queries. Won: '
             "queries the first localizes within the threshold and the other not; lost: the reverse. The "
             "interval is a bootstrap 95 % interval of the recall difference (queries resampled with their "
             "pair); a difference is shown only where it excludes zero. The error ratio is the geometric "
             "mean of the first set's translation error over the other's, on the queries both localize.</p>"]
    for c in first.paired:
        rows = [[f"({r.threshold[0]:g} m, {r.threshold[1]:g}°)", f"{r.won} / {r.lost} / {r.tied}",
                 f"{100 * r.difference:+.1f} %", f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}] %", r.verdict]
                for r in c.rows]
        if c.error_ratio is not None:
            g, lo, hi = c.error_ratio
            rows.append([f"translation error ratio ({c.both_localized} queries)", "", f"×{g:.2f}",
                         f"[{lo:.2f}, {hi:.2f}]", "smaller" if hi < 1 else "larger" if lo > 1 else
                         "no difference shown"])
        parts.append(f"<h3>{html.escape(c.a)} vs {html.escape(c.b)}</h3>\n" + _table(
            ["threshold", "won / lost / tied", "recall difference", "95 % interval", "verdict"], rows))
    return "\n".join(parts)


def _coverage(c: dict | None) -> str:
    return "–" if c is None else f"{c['inside_95']}/{c['num']} ({100 * c['coverage_95']:.0f} %)"


def _failure_section(results: dict) -> str:
    reasons = sorted({r for s, _ in results.values() for r in s.failures})
    if not reasons:
        return "<h2>Failures by reason</h2>\n<p>No query failed.</p>"
    rows = [[r, *(str(s.failures.get(r, 0)) for s, _ in results.values())] for r in reasons]
    rows.append(["all", *(str(s.num_queries - s.num_localized) for s, _ in results.values())])
    return ("<h2>Failures by reason</h2>\n"
            + _table(["reason", *results], rows) + "\n"
            '<p class="note">The reasons of each failed query are in the per-query CSV files below.</p>')


def _timing_section(results: dict) -> str:
    per_name = {k: [_stage_ms(o) for o in outs] for k, (_, outs) in results.items()}
    stages = [s for s in [*STAGES, "total"] if any(s in t for ts in per_name.values() for t in ts)]
    rows = []
    for s in stages:
        row = [s]
        for ts in per_name.values():
            v = [t[s] for t in ts if s in t]
            row.append(f"{np.median(v):.1f}" if v else "–")
        rows.append(row)
    return ("<h2>Median time per stage (ms)</h2>\n"
            + _table(["stage", *results], rows) + "\n"
            '<p class="note">Median over all queries that reached the stage, failures included; total is '
            "the median of each query's sum of the stages.</p>")


def _figure(src: str, caption: str, shown: bool = True) -> str:
    """``shown``: the caption under the image too, not only as its alternative text."""
    below = f"<figcaption>{html.escape(caption)}</figcaption>" if shown else ""
    return (f'<figure><a href="{html.escape(src)}"><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f"</a>{below}</figure>")


def _options_text(o: dict) -> str:
    """The options a reader needs to run the same evaluation again (all of them: summary.json)."""
    if not o:
        return ""
    return (f"; {o['max_keypoints']} keypoints per query, top {o['top_k']} map images, ratio {o['ratio']:g}, "
            f"RANSAC threshold {o['ransac_threshold_px']:g} px, RANSAC seed {o['seed']}")


def _html(results: dict, matches: dict, dataset: str, n: int, map_dir) -> str:
    first = next(iter(results.values()))[0]
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    about = (f"{n} queries with a ground-truth pose; feature sets {', '.join(results)}; PnP solver "
             f"{first.solver or '–'}; retrieval {(first.retrieval or {}).get('method', '–')}"
             + _options_text(first.options) + (f"; map {map_dir}" if map_dir else "") + f"; written {when}.")
    parts = [f"<h1>Localization report — {html.escape(dataset)}</h1>", f"<p>{html.escape(about)}</p>",
             _recall_section(results), _paired_section(results), _failure_section(results),
             _timing_section(results),
             "<h2>Trajectory and error distributions</h2>",
             _figure("trajectory_top_view.png",
                     "Top view of the query positions, equal scale on both axes. Circles: estimated "
                     "positions, joined to the true ones; crosses: failed queries, at their true positions."),
             _figure("error_cdf.png",
                     "Fraction of queries localized within a translation (left) or rotation (right) error; "
                     "dashed: the recall thresholds. Failures keep a curve below 1.")]
    parts.append("<h2>2D–3D matches of a few queries</h2>\n"
                 '<p class="note">Best, median and worst localized query by translation error, and the failed '
                 "query with the most matches. Green: PnP inliers, with a line to their 3D point reprojected "
                 "at the estimated pose; red crosses: outliers.</p>")
    for name, figs in matches.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        if not figs:
            parts.append("<p>No query has matches to draw.</p>")
            continue
        parts.append('<div class="grid">' + "".join(
            _figure(file, f"{name}, {label}: query {o.frame.name}"
                    + (f" (failed: {o.reason})" if o.reason else ""), shown=False)  # the image has a title
            for label, file, o in figs) + "</div>")
    links = [f'<a href="queries_{html.escape(k)}.csv">queries_{html.escape(k)}.csv</a>' for k in results]
    parts.append("<h2>Data</h2>\n<p>Per query (errors in metres and degrees, times in ms): "
                 + ", ".join(links) + '. All numbers above: <a href="summary.json">summary.json</a>.</p>')
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f"<title>Localization report — {html.escape(dataset)}</title>\n<style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
