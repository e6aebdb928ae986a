"""Localization accuracy: pose errors, recall at thresholds, medians, failure reasons."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..geometry.pose import pose_error

# (metres, degrees): the long-term visual localization benchmark's three, then indoor and tight ones.
THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0), (0.05, 5.0), (0.02, 2.0))
# (metres, degrees) beyond which an accepted pose counts as wrong: a published pose this far off
# misleads whatever consumes it, unlike a failure, which it can see.
WRONG_BOUND = (0.25, 5.0)


def bound_key(bound: tuple[float, float]) -> str:
    """A (metres, degrees) pair as a JSON key, as the recall keys are written."""
    return f"{bound[0]:g}m_{bound[1]:g}deg"


def count_wrong(err: np.ndarray, bound: tuple[float, float] = WRONG_BOUND) -> int:
    """Accepted poses (finite error) beyond the translation or the rotation bound; failures are not wrong."""
    err = np.asarray(err, float).reshape(-1, 2)
    ok = np.isfinite(err[:, 0])
    return int(np.sum(ok & ((err[:, 0] > bound[0]) | (err[:, 1] > bound[1]))))


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
    # {(metres, degrees): accepted poses beyond it}, the default bound first
    wrong: dict[tuple[float, float], int] = field(default_factory=dict)
    # other scenes' queries localized against this map: every accepted pose is false.
    # {"num_queries": N, "num_accepted": K, "bags": {bag: {"num_queries": ..., "num_accepted": ...}}}
    negatives: dict | None = None

    def wrong_rows(self) -> list[str]:
        rows = [f"wrong accepted: {k} of {self.num_localized} localized beyond ({t:g} m, {r:g}°)"
                for (t, r), k in self.wrong.items()]
        if self.negatives is not None:
            n = self.negatives
            rows.append(f"negatives: {n['num_accepted']} of {n['num_queries']} accepted (false)")
            if len(n.get("bags", {})) > 1:
                rows += [f"  {bag}: {b['num_accepted']} of {b['num_queries']} accepted"
                         for bag, b in n["bags"].items()]
        return rows

    def table_rows(self) -> list[str]:
        rec = "  ".join(f"({t:g} m, {r:g}°) {v:.3f}" for (t, r), v in self.recall.items())
        return [f"localized {self.num_localized}/{self.num_queries}   recall: {rec}",
                f"median error {self.median_translation * 100:.2f} cm, {self.median_rotation_deg:.3f}° "
                f"(over localized images)",
                "median time: " + "  ".join(f"{k} {v * 1e3:.0f} ms" for k, v in self.timings_median.items())]

    def to_dict(self) -> dict:
        return {"num_queries": self.num_queries, "num_localized": self.num_localized,
                "recall": {bound_key(b): v for b, v in self.recall.items()},
                "median_translation": self.median_translation, "median_rotation_deg": self.median_rotation_deg,
                "failures": self.failures, "timings_median_s": self.timings_median, "solver": self.solver,
                "retrieval": self.retrieval,
                "wrong_accepted": {bound_key(b): k for b, k in self.wrong.items()},
                "negatives": self.negatives}


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
              thresholds=THRESHOLDS, wrong_bounds: tuple[tuple[float, float], ...] = (WRONG_BOUND,)) -> Summary:
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
                   {k: float(np.median(v)) for k, v in stages.items()}, err,
                   wrong={tuple(b): count_wrong(err, b) for b in dict.fromkeys(wrong_bounds)})
