"""What every extractor shares: the keypoint budget, the working-size rule and the way keypoints
found on a downscaled image go back to the original image's pixels."""
from __future__ import annotations

import cv2
import numpy as np

from ..types import Features

# Keypoints per image where a caller does not say: maps, localization and the node share it.
DEFAULT_MAX_KEYPOINTS = 2000

# Images larger than this (longest side) are downscaled before extraction and keypoints scaled
# back: 1920×1080 frames cost 4× a 960-pixel image for few extra useful keypoints (hloc does the same).
DEFAULT_RESIZE_MAX = 1280


def processed_size(height: int, width: int, resize_max: int | None) -> tuple[int, int]:
    """(height, width) an extractor works at for an image of this size: the longest side at most
    ``resize_max`` (None or 0: the image's own)."""
    if not resize_max or max(height, width) <= resize_max:
        return height, width
    s = resize_max / max(height, width)
    return max(1, round(height * s)), max(1, round(width * s))


def checked_conf(kind: str, defaults: dict, conf: dict | None) -> dict:
    """``defaults`` updated by ``conf``; ValueError naming the options ``kind`` does not have."""
    unknown = set(conf or {}) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {kind} options {sorted(unknown)}")
    return {**defaults, **(conf or {})}


def _resize(gray: np.ndarray, resize_max: int | None) -> np.ndarray:
    """``gray`` at ``processed_size`` (itself where that is its size)."""
    h, w = gray.shape
    hs, ws = processed_size(h, w, resize_max)
    if (hs, ws) == (h, w):
        return gray
    return cv2.resize(gray, (ws, hs), interpolation=cv2.INTER_AREA)


def _rescale(f: Features, gray_shape: tuple[int, int], small_shape: tuple[int, int]) -> Features:
    # Pixel centres: x = (x_small + 0.5) * s_x - 0.5, with per-axis ratios from the rounded size.
    (h, w), (hs, ws) = gray_shape, small_shape
    sx, sy = w / ws, h / hs
    kp = (f.keypoints + 0.5) * np.array([sx, sy], np.float32) - 0.5
    return Features(kp.astype(np.float32), (f.scales * np.float32((sx + sy) / 2)).astype(np.float32),
                    f.orientations, f.scores, f.descriptors, (h, w), f.timings)


def check_gray(gray: np.ndarray, kind: str) -> None:
    """ValueError unless ``gray`` is a non-empty (H, W) image: OpenCV would fail less clearly."""
    if gray.ndim != 2 or gray.size == 0:
        raise ValueError(f"{kind}: expected a non-empty (H, W) grey image, got shape {gray.shape}")
