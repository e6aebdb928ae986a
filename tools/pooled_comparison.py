"""Pool paired comparisons over several scenes, at the thresholds scaled to each scene.

One development set holds 5 to 48 queries: a feature set rarely leads on one by a margin whose
interval excludes zero. The scene-scaled thresholds of ``evaluate`` (0.8 %, 0.3 % and 0.1 % of the
scene's depth, with 0.46°, 0.17° and 0.057°) mean the same on every scene, so queries of all scenes
can be pooled: per fraction, queries won / lost / tied and a bootstrap 95 % interval of the pooled
recall difference; and the translation error ratio over every query both localize.

    python tools/pooled_comparison.py --reports R/tum R/kitti ... --a lift --b sift
    python tools/pooled_comparison.py --reports R/tum R/kitti ... --a lift --b-tables tum.csv kitti.csv ...

Each report folder is ``evaluate --report``'s (summary.json and queries_<features>.csv); B is a
feature set of the same reports or, with ``--b-tables``, one per-query table per report (e.g. an
earlier run's queries_lift.csv, or tools/baseline_table.py's output), in the same order.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lift_localizer.evaluation.metrics import parse_bound_key, within
from lift_localizer.evaluation.paired import align, error_ratio, paired_row
from lift_localizer.evaluation.report import read_query_errors
from lift_localizer.evaluation.thresholds import SCENE_FRACTIONS


def load(report: Path, a: str, b_table: Path) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float]]]:
    """A's and B's errors (N, 2) on A's queries, in A's order, and the report's scene thresholds."""
    summary = json.loads((report / "summary.json").read_text())
    scaled = [parse_bound_key(k) for k in summary[a].get("scene_thresholds", [])]
    if not scaled:
        raise SystemExit(f"{report}: no scene-scaled thresholds in summary.json (evaluate with the default thresholds)")
    run_a = read_query_errors(report / f"queries_{a}.csv")
    names = list(run_a)
    return (np.array([run_a[n] for n in names], float).reshape(-1, 2),
            align(names, read_query_errors(b_table), str(b_table)), scaled)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reports", nargs="+", required=True, type=Path, help="evaluate --report folders")
    ap.add_argument("--a", required=True, help="feature set A (queries_A.csv in each report)")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--b", help="feature set B of the same reports")
    group.add_argument("--b-tables", nargs="+", type=Path, help="B's per-query tables, one per report, in order")
    a = ap.parse_args()
    tables = a.b_tables or [r / f"queries_{a.b}.csv" for r in a.reports]
    if len(tables) != len(a.reports):
        ap.error(f"{len(a.reports)} reports but {len(tables)} tables")
    b_name = a.b or "B"
    per_fraction: list[list[tuple[np.ndarray, np.ndarray]]] = []
    degrees: list[float] = []
    t_a, t_b = [], []
    print(f"{a.a} vs {b_name}: per report, queries won / lost / tied at each scene-scaled threshold")
    for report, table in zip(a.reports, tables):
        err_a, err_b, scaled = load(report, a.a, table)
        per_fraction += [[] for _ in range(len(scaled) - len(per_fraction))]
        degrees += [t[1] for t in scaled[len(degrees):]]
        cells = []
        for k, t in enumerate(scaled):
            ha, hb = within(err_a, t), within(err_b, t)
            per_fraction[k].append((ha, hb))
            cells.append(f"({t[0]:g} m, {t[1]:g}°) {int(np.sum(ha & ~hb))}/{int(np.sum(hb & ~ha))}/{int(np.sum(ha == hb))}")
        t_a.append(err_a[:, 0])
        t_b.append(err_b[:, 0])
        print(f"  {report.name} ({len(err_a)} queries): " + "   ".join(cells))
    print(f"pooled over {sum(len(t) for t in t_a)} queries of {len(a.reports)} reports (won / lost / tied, both "
          "recalls, their difference and its bootstrap 95 % interval):")
    for k, pairs in enumerate(per_fraction):
        row = paired_row(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]), (k, k))
        print(f"  ({100 * SCENE_FRACTIONS[k]:g} % of D, {degrees[k]:g}°): {row.won} / {row.lost} / {row.tied}   "
              f"{row.recall_a:.3f} vs {row.recall_b:.3f}   "
              f"{100 * row.difference:+.1f} % [{100 * row.low:+.1f}, {100 * row.high:+.1f}]   {row.verdict}")
    ratio, both = error_ratio(np.concatenate(t_a), np.concatenate(t_b))
    if ratio is not None:
        print(f"  translation error {a.a} / {b_name}: ×{ratio[0]:.2f} [{ratio[1]:.2f}, {ratio[2]:.2f}] "
              f"(geometric mean over the {both} queries both localize)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
