"""Localization accuracy: pose errors, recall at thresholds, medians, failure reasons."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from ..geometry.pose import pose_error

# (metres, degrees): the long-term visual localization benchmark's three, then indoor and tight ones.
THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0), (0.05, 5.0), (0.02, 2.0))


@dataclass
class Summary:
    num_queries: int
    num_localized: int
    recall: dict[tuple[float, float], float]
    median_translation: float
    median_rotation_deg: float
    failures: dict[str, int]
    timings_median: dict[str, float]
    errors: np.ndarray          # (N, 2) translation, rotation°; inf where not localized
    solver: str = ""
    retrieval: dict | None = None

    def table_rows(self) -> list[str]:
        rec = "  ".join(f"({t:g} m, {r:g}°) {v:.3f}" for (t, r), v in self.recall.items())
        return [f"localized {self.num_localized}/{self.num_queries}   recall: {rec}",
                f"median error {self.median_translation * 100:.2f} cm, {self.median_rotation_deg:.3f}° "
                f"(over localized images)",
                "median time: " + "  ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.timings_median.items())]

    def to_dict(self) -> dict:
        return {"num_queries": self.num_queries, "num_localized": self.num_localized,
                "recall": {f"{t:g}m_{r:g}deg": v for (t, r), v in self.recall.items()},
                "median_translation": self.median_translation, "median_rotation_deg": self.median_rotation_deg,
                "failures": self.failures, "timings_median_s": self.timings_median, "solver": self.solver,
                "retrieval": self.retrieval}


def errors(estimates: list[np.ndarray | None], truths: list[np.ndarray]) -> np.ndarray:
    """(N, 2) translation and rotation (degrees) errors; inf for missing estimates."""
    out = np.full((len(truths), 2), np.inf)
    for i, (est, gt) in enumerate(zip(estimates, truths)):
        if est is not None:
            out[i] = pose_error(est, gt)
    return out


def reason_key(reason: str) -> str:
    """A failure reason without its numbers, so that failures can be counted by cause."""
    return reason.split(" (")[0]


def summarize(err: np.ndarray, reasons: list[str | None], timings: list[dict[str, float]],
              thresholds=THRESHOLDS) -> Summary:
    n = len(err)
    ok = np.isfinite(err[:, 0])
    recall = {(t, r): float(np.mean((err[:, 0] <= t) & (err[:, 1] <= r))) if n else 0.0 for t, r in thresholds}
    stages: dict[str, list[float]] = {}
    for tm in timings:
        for k, v in tm.items():
            stages.setdefault(k, []).append(v)
    return Summary(n, int(ok.sum()), recall,
                   float(np.median(err[ok, 0])) if ok.any() else float("nan"),
                   float(np.median(err[ok, 1])) if ok.any() else float("nan"),
                   dict(Counter(reason_key(r) for r in reasons if r)),
                   {k: float(np.median(v)) for k, v in stages.items()}, err)
