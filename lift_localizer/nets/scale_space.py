"""The scale space DET runs over: which scales, and how each level's pixels map to the image.

A keypoint of scale s has a Gaussian-like extent sigma = s pixels, OpenCV size 2s, and a
descriptor support of 12 s pixels (6× its size, as SIFT and the released LIFT use). The level
for scale s is the image resized by 23.5 / (12 s), so that DET's 25-pixel window sees the support.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .det import HALF_WINDOW
# The level sets are plain data in the torch-free presets.py, which parsers read without torch.
from .presets import DEFAULT_LEVELS, PAPER_LEVELS  # noqa: F401
from .settings import SUPPORT_PER_SCALE


def paper_scales(
    height: int,
    width: int,
    min_scale_log2: float = 1.0,
    max_scale_log2: float = 4.0,
    levels_per_octave: int = 5,
    extra_octave_below: int | None = 1600,
) -> np.ndarray:
    """Scales 2^linspace(min, max) with ``levels_per_octave`` per octave, as LIFT tests.

    >>> len(paper_scales(480, 640))
    21
    """
    lo = min_scale_log2
    if extra_octave_below is not None and min(height, width) <= extra_octave_below and lo < max_scale_log2:
        lo -= 1.0
    n = int(round((max_scale_log2 - lo) * levels_per_octave)) + 1
    return 2.0 ** np.linspace(lo, max_scale_log2, n)


@dataclass(frozen=True)
class Level:
    """One level: the image resized to (height, width) for keypoints of ``scale``."""

    scale: float
    height: int
    width: int
    ratio_x: float  # level pixels per image pixel, exact per axis after rounding
    ratio_y: float

    def to_image(self, u, v):
        """Level pixel coordinates (arrays or tensors) → image pixel coordinates ((0, 0) = centre of the top-left pixel)."""
        return (u + 0.5) / self.ratio_x - 0.5, (v + 0.5) / self.ratio_y - 0.5


def resize_ratio(scale: float) -> float:
    return HALF_WINDOW / (SUPPORT_PER_SCALE * scale)


def make_levels(height: int, width: int, scales, min_size: int) -> list[Level]:
    """Levels for the given scales; levels smaller than ``min_size`` on a side are left out."""
    levels = []
    for s in scales:
        r = resize_ratio(float(s))
        h, w = int(round(height * r)), int(round(width * r))
        if min(h, w) < min_size:
            continue
        levels.append(Level(float(s), h, w, w / width, h / height))
    return levels


def resize_level(image: torch.Tensor, level: Level) -> torch.Tensor:
    """(B, C, H, W) → (B, C, level.height, level.width), antialiased when shrinking."""
    shrink = level.ratio_x < 1.0 or level.ratio_y < 1.0
    return F.interpolate(image, size=(level.height, level.width), mode="bilinear",
                         align_corners=False, antialias=shrink)


def scales_for(height: int, width: int, conf: dict) -> np.ndarray:
    """The DET scales for an image: ``conf["scales"]`` where given (sorted), else ``paper_scales``
    from the ``DEFAULT_LEVELS`` fields of ``conf``."""
    if conf.get("scales") is not None:
        return np.sort(np.asarray(conf["scales"], dtype=np.float64))
    return paper_scales(height, width, conf["min_scale_log2"], conf["max_scale_log2"],
                        conf["levels_per_octave"], conf["extra_octave_below"])
