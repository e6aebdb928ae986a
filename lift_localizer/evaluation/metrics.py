"""Localization accuracy: pose errors, recall at thresholds, medians, failure reasons."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from ..geometry.pose import pose_error, pose_error_vector
from ..reasons import reason_of

# (metres, degrees): the long-term visual localization benchmark's three, then indoor and tight ones.
THRESHOLDS = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0), (0.05, 5.0), (0.02, 2.0))
# (metres, degrees) beyond which an accepted pose counts as wrong: a published pose this far off
# misleads whatever consumes it, unlike a failure, which it can see.
WRONG_BOUND = (0.25, 5.0)
# χ² with 6 degrees of freedom at 0.95: a 6-D error inside the covariance's 95 % ellipsoid has a
# normalised estimation error squared (NEES) below it.
CHI2_6DOF_95 = 12.5916


def bound_key(bound: tuple[float, float]) -> str:
    """A (metres, degrees) pair as a JSON key, as the recall keys are written."""
    return f"{bound[0]:g}m_{bound[1]:g}deg"


def parse_bound_key(key: str) -> tuple[float, float]:
    """``bound_key``'s text back to (metres, degrees): ``0.044m_1.1deg`` → (0.044, 1.1)."""
    m, deg = key.split("m_")
    return float(m), float(deg.removesuffix("deg"))


def within(err: np.ndarray, bound: tuple[float, float]) -> np.ndarray:
    """(N,) whether each (translation, rotation°) error of ``err`` (N, 2) is within both bounds
    (failures, inf, never are)."""
    return (err[:, 0] <= bound[0]) & (err[:, 1] <= bound[1])


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
    # (N,) NEES of each query; NaN where not localized or where no covariance was given
    nees: np.ndarray | None = None
    # paired comparisons of this set against others on the same queries (evaluation.paired)
    paired: list = field(default_factory=list)
    # the thresholds scaled to the scene (evaluation.thresholds), with the same fractions on every
    # scene, so that queries of several scenes can be pooled; empty where none were computed
    scene_thresholds: tuple = ()
    scene_depth: float = float("nan")   # metres: what they are scaled by
    # What the localizer ran with (its options, the query extractor's), so that a report says how it
    # was made: the RANSAC seed, the ratio, the keypoint budget, the weights.
    options: dict = field(default_factory=dict)

    @property
    def calibration(self) -> dict | None:
        """How often the 95 % covariance ellipsoid holds the true pose, over the localized queries."""
        if self.nees is None or not np.isfinite(self.nees).any():
            return None
        v = self.nees[np.isfinite(self.nees)]
        inside = int(np.sum(v <= CHI2_6DOF_95))
        return {"num": int(len(v)), "inside_95": inside, "coverage_95": inside / len(v),
                "median_nees": float(np.median(v))}

    def wrong_rows(self) -> list[str]:
        rows = [f"wrong accepted: {k} of {self.num_localized} localized beyond ({t:g} m, {r:g}°)"
                for (t, r), k in self.wrong.items()]
        if self.negatives is not None:
            n = self.negatives
            rows.append(f"negatives: {n['num_accepted']} of {n['num_queries']} accepted (false)")
            if len(n.get("bags", {})) > 1:
                rows += [f"  {bag}: {b['num_accepted']} of {b['num_queries']} accepted"
                         for bag, b in n["bags"].items()]
        c = self.calibration
        if c is not None:
            rows.append(f"covariance: the 95 % ellipsoid holds {c['inside_95']} of {c['num']} localized "
                        f"({c['coverage_95']:.2f}; calibrated: 0.95), median NEES {c['median_nees']:.2f} "
                        f"(calibrated: 5.35)")
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
                "negatives": self.negatives, "covariance_calibration": self.calibration,
                "paired": [c.to_dict() for c in self.paired],
                "scene_thresholds": [bound_key(b) for b in self.scene_thresholds],
                "scene_depth_m": self.scene_depth if np.isfinite(self.scene_depth) else None,
                "options": self.options}


def errors(estimates: list[np.ndarray | None], truths: list[np.ndarray]) -> np.ndarray:
    """(N, 2) translation and rotation (degrees) errors; inf for missing estimates."""
    out = np.full((len(truths), 2), np.inf)
    for i, (est, gt) in enumerate(zip(estimates, truths)):
        if est is not None:
            out[i] = pose_error(est, gt)
    return out


def nees(T_est: np.ndarray, covariance: np.ndarray, T_gt: np.ndarray) -> float:
    """Normalised estimation error squared of a pose against the truth, eᵀ Σ⁻¹ e, with e the 6-D
    error in the covariance's coordinates; about 6 on average where the covariance is right."""
    e = pose_error_vector(T_est, T_gt)
    cov = np.asarray(covariance, np.float64)
    if not np.all(np.isfinite(cov)):
        return float("nan")
    return float(e @ np.linalg.pinv(cov, rcond=1e-15, hermitian=True) @ e)


def reason_key(reason: str) -> str:
    """A failure's reason without its detail (one of a fixed set), so that failures are counted by cause."""
    return reason_of(reason).value


def summarize(err: np.ndarray, reasons: list[str | None], timings: list[dict[str, float]],
              thresholds=THRESHOLDS, wrong_bounds: tuple[tuple[float, float], ...] = (WRONG_BOUND,)) -> Summary:
    n = len(err)
    ok = np.isfinite(err[:, 0])
    recall = {(t, r): float(np.mean(within(err, (t, r)))) if n else 0.0 for t, r in thresholds}
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
