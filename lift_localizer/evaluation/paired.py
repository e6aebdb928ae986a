"""Paired comparison of two feature sets (or two runs) on the same queries.

Recall on a few dozen queries moves by a query's worth (3 % at 34 queries) between runs for reasons
unrelated to the features, so two recalls side by side cannot say which set is better. Each query is
scored by both, so what tells is the queries one localizes within a threshold and the other not, and
a bootstrap interval of the recall difference that resamples queries (keeping each query's pair).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import within

BOOTSTRAP_SAMPLES = 10000
# Translation errors below this are equal: a ratio of two sub-micrometre errors is numerical noise.
ERROR_FLOOR_M = 1e-6


@dataclass
class PairedRow:
    """One threshold: queries within it for A only (won), B only (lost), both or neither (tied)."""
    threshold: tuple[float, float]
    won: int
    lost: int
    tied: int
    recall_a: float
    recall_b: float
    low: float                      # bootstrap 95 % interval of recall_a − recall_b
    high: float

    @property
    def difference(self) -> float:
        return self.recall_a - self.recall_b

    @property
    def verdict(self) -> str:
        """``better`` or ``worse`` only where the interval excludes zero."""
        return "better" if self.low > 0 else "worse" if self.high < 0 else "no difference shown"

    def to_dict(self) -> dict:
        return {"threshold_m": self.threshold[0], "threshold_deg": self.threshold[1], "won": self.won,
                "lost": self.lost, "tied": self.tied, "recall_a": self.recall_a, "recall_b": self.recall_b,
                "difference": self.difference, "ci95": [self.low, self.high], "verdict": self.verdict}


@dataclass
class PairedComparison:
    """A against B on ``num_queries`` queries; ``error_ratio``: the geometric mean of A's translation
    error over B's on the queries both localize, with its bootstrap 95 % interval (None if none)."""
    a: str
    b: str
    num_queries: int
    rows: list[PairedRow]
    both_localized: int
    error_ratio: tuple[float, float, float] | None

    def lines(self) -> list[str]:
        out = [f"{self.a} vs {self.b}, paired on {self.num_queries} queries (won / lost / tied, both recalls, "
               f"their difference and its bootstrap 95 % interval):"]
        for r in self.rows:
            t, d = r.threshold, r.difference
            out.append(f"  ({t[0]:g} m, {t[1]:g}°): {r.won} / {r.lost} / {r.tied}   {r.recall_a:.3f} vs "
                       f"{r.recall_b:.3f}   {100 * d:+.1f} % [{100 * r.low:+.1f}, {100 * r.high:+.1f}]   {r.verdict}")
        if self.error_ratio is not None:
            g, lo, hi = self.error_ratio
            out.append(f"  translation error {self.a} / {self.b}: ×{g:.2f} [{lo:.2f}, {hi:.2f}] "
                       f"(geometric mean over the {self.both_localized} queries both localize)")
        return out

    def to_dict(self) -> dict:
        ratio = None if self.error_ratio is None else dict(zip(("geometric_mean", "ci95_low", "ci95_high"),
                                                                self.error_ratio))
        return {"a": self.a, "b": self.b, "num_queries": self.num_queries,
                "rows": [r.to_dict() for r in self.rows], "both_localized": self.both_localized,
                "translation_error_ratio": ratio}


def bootstrap_mean_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                            seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` (N,), resampling its entries."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    # In blocks, so that 10 000 resamples of a few thousand queries stay small in memory.
    for start in range(0, samples, 1000):
        stop = min(start + 1000, samples)
        means[start:stop] = values[rng.integers(0, len(values), (stop - start, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_row(hit_a: np.ndarray, hit_b: np.ndarray, threshold: tuple[float, float],
               samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> PairedRow:
    """The row of one threshold from each query's success (N,) under A and under B."""
    hit_a, hit_b = np.asarray(hit_a, bool), np.asarray(hit_b, bool)
    low, high = bootstrap_mean_interval(hit_a.astype(float) - hit_b, samples, seed)
    return PairedRow(threshold, int(np.sum(hit_a & ~hit_b)), int(np.sum(hit_b & ~hit_a)), int(np.sum(hit_a == hit_b)),
                     float(hit_a.mean()) if len(hit_a) else 0.0, float(hit_b.mean()) if len(hit_b) else 0.0,
                     low, high)


def error_ratio(t_a: np.ndarray, t_b: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                seed: int = 0) -> tuple[tuple[float, float, float] | None, int]:
    """Geometric mean of t_a / t_b (translation errors of the same queries) over the queries both
    localize, with its bootstrap 95 % interval; and how many queries that is."""
    both = np.isfinite(t_a) & np.isfinite(t_b)
    if not both.any():
        return None, 0
    logs = np.log(np.maximum(t_a[both], ERROR_FLOOR_M) / np.maximum(t_b[both], ERROR_FLOOR_M))
    low, high = bootstrap_mean_interval(logs, samples, seed)
    return (float(np.exp(logs.mean())), float(np.exp(low)), float(np.exp(high))), int(both.sum())


def as_errors(err: np.ndarray) -> np.ndarray:
    """(N, 2) float errors, NaN read as not localized (inf)."""
    err = np.asarray(err, float).reshape(-1, 2)
    return np.where(np.isnan(err), np.inf, err)


def compare(err_a: np.ndarray, err_b: np.ndarray, thresholds, a: str = "A", b: str = "B",
            samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> PairedComparison:
    """Compare (N, 2) translation (m) and rotation (°) errors of the same N queries, in the same order;
    inf (or NaN) where a query was not localized."""
    err_a, err_b = as_errors(err_a), as_errors(err_b)
    if err_a.shape != err_b.shape:
        raise ValueError(f"paired comparison needs the same queries: {len(err_a)} against {len(err_b)}")
    rows = [paired_row(within(err_a, t), within(err_b, t), tuple(t), samples, seed) for t in thresholds]
    ratio, both = error_ratio(err_a[:, 0], err_b[:, 0], samples, seed)
    return PairedComparison(a, b, len(err_a), rows, both, ratio)


def align(names_a: list[str], errors_b: dict[str, tuple[float, float]], b: str = "B") -> np.ndarray:
    """B's errors in A's query order, from {query name: (translation, rotation)}; a query of A that B
    does not list is refused (a paired comparison on different queries would mean nothing)."""
    missing = [n for n in names_a if n not in errors_b]
    if missing:
        raise ValueError(f"{b} has no result for {len(missing)} of the {len(names_a)} queries "
                         f"(first: {missing[0]}); a paired comparison needs the same queries")
    return np.array([errors_b[n] for n in names_a], float).reshape(-1, 2)
