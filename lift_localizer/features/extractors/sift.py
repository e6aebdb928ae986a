"""OpenCV SIFT with RootSIFT descriptors (L1-normalise, square root): the stronger of the two common
SIFT baselines, as hloc uses."""
from __future__ import annotations

import time

import cv2
import numpy as np

from ..sift import sift_detect
from ..types import Features
from .common import DEFAULT_RESIZE_MAX, _rescale, _resize, check_gray, checked_conf


class SiftExtractor:
    name = "sift"
    # RootSIFT: L2 between RootSIFT vectors is the Hellinger distance between the SIFT histograms.
    descriptor_size = 128
    descriptor_note = "128 float32 (RootSIFT), L2"
    default_conf = {"max_keypoints": 1000, "resize_max": DEFAULT_RESIZE_MAX}
    options = frozenset(default_conf)
    needs_weights = False
    has_netvlad = True
    retrieval_network: str | None = None
    untrained_warning = None

    def __init__(self, conf: dict | None = None) -> None:
        conf = checked_conf("SIFT", self.default_conf, conf)
        self.resize_max = conf["resize_max"]
        self.max_keypoints = int(conf["max_keypoints"])
        self.conf = {"max_keypoints": self.max_keypoints, "resize_max": self.resize_max}

    @staticmethod
    def query_conf(conf: dict, features: dict, localizer: dict) -> dict:
        """A localizer's extractor options: budget and working size only (SIFT runs on the CPU)."""
        return conf

    def identity(self) -> dict:
        return {"name": self.name, "opencv": cv2.__version__, "rootsift": True,
                "max_keypoints": self.max_keypoints, "resize_max": self.resize_max}

    def __call__(self, gray: np.ndarray) -> Features:
        check_gray(gray, self.name)
        t = time.perf_counter()
        small = _resize(gray, self.resize_max)
        xy, size, angle, response, desc = sift_detect(small, self.max_keypoints)
        desc = desc.astype(np.float32)
        desc /= np.maximum(desc.sum(1, keepdims=True), 1e-8)
        desc = np.sqrt(desc)
        f = Features(xy, size, angle, response, desc.astype(np.float32), small.shape,
                     {"total": time.perf_counter() - t})
        return f if small is gray else _rescale(f, gray.shape, small.shape)
