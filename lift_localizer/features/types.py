"""What every local-feature extractor returns, whatever its kind (LIFT, SIFT, ORB, …)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Features:
    """Local features of one image, in original-image pixels ((0, 0) = centre of the top-left pixel).

    keypoints (N, 2) x y; scales (N,) OpenCV keypoint size (for LIFT 2 sigma, the descriptor support
    being 6× it); orientations (N,) radians, from x towards y in the y-down image; scores (N,);
    descriptors (N, D) float32, compared by L2 distance, D the extractor's ``descriptor_size``
    (features/extractors).
    """

    keypoints: np.ndarray
    scales: np.ndarray
    orientations: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    image_size: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)
