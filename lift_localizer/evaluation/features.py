"""Feature quality on image pairs with a known point transfer (homography or identity)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..features.matching import mutual_nearest_neighbours

Transfer = Callable[[np.ndarray], np.ndarray]


def _inside(xy: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)


@dataclass
class PairScores:
    repeatability: float  # mutual-nearest keypoints within the threshold / the smaller visible count
    matches: int          # mutual-nearest descriptor matches
    correct: int          # of which transfer within the threshold
    precision: float

    def row(self) -> str:
        return f"rep {self.repeatability:5.3f}  matches {self.matches:5d}  correct {self.correct:5d}  " \
               f"precision {self.precision:5.3f}"


def repeatability(xy0: np.ndarray, xy1: np.ndarray, threshold: float) -> float:
    """Keypoints (N, 2) and (M, 2) in one frame: mutual nearest neighbours closer than ``threshold``,
    divided by the smaller count (0 when either is empty)."""
    if not len(xy0) or not len(xy1):
        return 0.0
    d = np.linalg.norm(xy0[:, None] - xy1[None], axis=2)
    i, nn = np.arange(len(xy0)), d.argmin(1)
    repeated = int(((d.argmin(0)[nn] == i) & (d[i, nn] < threshold)).sum())
    return repeated / min(len(xy0), len(xy1))


def score_pair(xy0: np.ndarray, desc0: np.ndarray, size0: tuple[int, int],
               xy1: np.ndarray, desc1: np.ndarray, size1: tuple[int, int],
               t01: Transfer, t10: Transfer, threshold: float = 3.0) -> PairScores:
    """Repeatability and mutual-NN matching precision of two images' features.

    ``t01`` maps image-0 pixels into image 1, ``t10`` the reverse. Only keypoints that land
    inside the other image count for repeatability.
    """
    p01 = t01(xy0)
    vis0 = _inside(p01, size1)
    vis1 = _inside(t10(xy1), size0)
    rep = repeatability(p01[vis0], xy1[vis1], threshold)
    m = mutual_nearest_neighbours(desc0, desc1)
    err = np.linalg.norm(p01[m[:, 0]] - xy1[m[:, 1]], axis=1) if len(m) else np.zeros(0)
    correct = int((err < threshold).sum())
    return PairScores(rep, len(m), correct, correct / len(m) if len(m) else 0.0)
