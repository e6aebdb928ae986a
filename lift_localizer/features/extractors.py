"""Local-feature extractors behind one interface, so maps, localization and evaluation can run
LIFT and the SIFT baseline side by side on the same images.

    extractor = make_extractor("lift", {"max_keypoints": 1000})
    features = extractor(gray)           # Features in original-image pixels
    extractor.identity()                 # what a map records to refuse other features later
"""
from __future__ import annotations

import time

import cv2
import numpy as np
import torch

from .lift import Features, Lift
from .sift import sift_detect

EXTRACTORS = ("lift", "sift")

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


def _resize(gray: np.ndarray, resize_max: int | None) -> tuple[np.ndarray, float]:
    h, w = gray.shape
    hs, ws = processed_size(h, w, resize_max)
    if (hs, ws) == (h, w):
        return gray, 1.0
    s = resize_max / max(h, w)
    small = cv2.resize(gray, (ws, hs), interpolation=cv2.INTER_AREA)
    # Pixel centres: x_small = (x + 0.5) * s_x - 0.5, with per-axis ratios from the rounded size.
    return small, s


def _rescale(f: Features, gray_shape: tuple[int, int], small_shape: tuple[int, int]) -> Features:
    (h, w), (hs, ws) = gray_shape, small_shape
    sx, sy = w / ws, h / hs
    kp = (f.keypoints + 0.5) * np.array([sx, sy], np.float32) - 0.5
    return Features(kp.astype(np.float32), (f.scales * np.float32((sx + sy) / 2)).astype(np.float32),
                    f.orientations, f.scores, f.descriptors, (h, w), f.timings)


class LiftExtractor:
    name = "lift"

    def __init__(self, conf: dict | None = None) -> None:
        conf = dict(conf or {})
        self.resize_max = conf.pop("resize_max", DEFAULT_RESIZE_MAX)
        self.lift = Lift(conf)
        self.conf = {**self.lift.conf, "resize_max": self.resize_max}

    @property
    def untrained_warning(self) -> str | None:
        return self.lift.untrained_warning

    def identity(self) -> dict:
        return {"name": self.name, "weights": {k: n.sha256 for k, n in self.lift.networks.items()},
                "max_keypoints": int(self.lift.conf["max_keypoints"]), "resize_max": self.resize_max,
                "upright": bool(self.lift.conf["upright"])}

    def __call__(self, gray: np.ndarray) -> Features:
        small, _ = _resize(gray, self.resize_max)
        f = self.lift(small)
        return f if small is gray else _rescale(f, gray.shape, small.shape)


def reference_lift(conf: dict | None = None) -> LiftExtractor:
    """LIFT on PyTorch in float32 (on CUDA where there is one) with the localizer's other options:
    the reference whose network inputs INT8 calibration records, whatever back end and precision
    the localizer runs."""
    return LiftExtractor({"device": "cuda" if torch.cuda.is_available() else "cpu", **(conf or {}),
                          "backend": "torch", "precision": None})


class SiftExtractor:
    """OpenCV SIFT with RootSIFT descriptors (L1-normalise, square root): the stronger of the two
    common SIFT baselines, as hloc uses."""

    name = "sift"
    untrained_warning = None

    def __init__(self, conf: dict | None = None) -> None:
        conf = dict(conf or {})
        self.resize_max = conf.pop("resize_max", DEFAULT_RESIZE_MAX)
        self.max_keypoints = int(conf.pop("max_keypoints", 1000))
        if conf:
            raise ValueError(f"unknown SIFT options {sorted(conf)}")
        self.conf = {"max_keypoints": self.max_keypoints, "resize_max": self.resize_max}

    def identity(self) -> dict:
        return {"name": self.name, "opencv": cv2.__version__, "rootsift": True,
                "max_keypoints": self.max_keypoints, "resize_max": self.resize_max}

    def __call__(self, gray: np.ndarray) -> Features:
        if gray.ndim != 2 or gray.size == 0:
            raise ValueError(f"expected a non-empty (H, W) grey image, got shape {gray.shape}")
        t = time.perf_counter()
        small, _ = _resize(gray, self.resize_max)
        xy, size, angle, response, desc = sift_detect(small, self.max_keypoints)
        desc = desc.astype(np.float32)
        desc /= np.maximum(desc.sum(1, keepdims=True), 1e-8)
        desc = np.sqrt(desc)
        f = Features(xy, size, angle, response, desc.astype(np.float32), small.shape,
                     {"total": time.perf_counter() - t})
        return f if small is gray else _rescale(f, gray.shape, small.shape)


def make_extractor(name: str, conf: dict | None = None):
    """An extractor by name ('lift' or 'sift'): ``extractor(gray) → Features``."""
    if name == "lift":
        return LiftExtractor(conf)
    if name == "sift":
        return SiftExtractor(conf)
    raise ValueError(f"unknown features {name!r}; choose from {', '.join(EXTRACTORS)}")
