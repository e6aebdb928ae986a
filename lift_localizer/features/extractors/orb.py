"""OpenCV ORB (oriented FAST, rotated BRIEF): the cheap binary baseline, with no network and no
trained model of any kind.

Descriptors: ORB's 256 bits, unpacked to a (N, 256) float32 vector of 0s and 1s. The localizer's
matcher is float mutual nearest neighbours with a ratio test on L2 distances, and between two such
vectors the squared L2 distance is exactly the Hamming distance, so L2 ranks neighbours as Hamming
does; the ratio test on L2 is the test on the square root of the Hamming distances (ratio r on L2 is
r² on Hamming). Stored as float32 a map holds 1 KiB per keypoint (8× the packed bits), the price of
sharing the map format and matcher with the float descriptors.

No NetVLAD is shipped for ORB: a map of ORB features has no global index and the localizer ranks
map images by descriptor votes (localization/vote_retrieval.py).
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from ..types import Features
from .common import DEFAULT_RESIZE_MAX, _rescale, _resize, check_gray, checked_conf

ORB_BITS = 256


class OrbExtractor:
    name = "orb"
    descriptor_size = ORB_BITS
    descriptor_note = "256 float32 in {0, 1} (ORB's bits), L2² = Hamming"
    default_conf = {
        "max_keypoints": 1000,
        "resize_max": DEFAULT_RESIZE_MAX,
        # OpenCV's defaults: 8 levels 1.2 apart, FAST threshold 20.
        "scale_factor": 1.2,
        "num_levels": 8,
        "fast_threshold": 20,
    }
    options = frozenset(default_conf)
    needs_weights = False
    has_netvlad = False
    retrieval_network: str | None = None
    untrained_warning = None

    def __init__(self, conf: dict | None = None) -> None:
        conf = checked_conf("ORB", self.default_conf, conf)
        self.resize_max = conf["resize_max"]
        self.max_keypoints = int(conf["max_keypoints"])
        self.scale_factor = float(conf["scale_factor"])
        self.num_levels = int(conf["num_levels"])
        self.fast_threshold = int(conf["fast_threshold"])
        self.conf = {"max_keypoints": self.max_keypoints, "resize_max": self.resize_max,
                     "scale_factor": self.scale_factor, "num_levels": self.num_levels,
                     "fast_threshold": self.fast_threshold}
        self.orb = cv2.ORB_create(nfeatures=self.max_keypoints, scaleFactor=self.scale_factor,
                                  nlevels=self.num_levels, fastThreshold=self.fast_threshold)

    @staticmethod
    def query_conf(conf: dict, features: dict, localizer: dict) -> dict:
        """A localizer's extractor options: budget and working size, and the map's pyramid and FAST
        threshold (``features``: map.json's record), so queries are detected as the map was."""
        return {**conf, **{k: features[k] for k in ("scale_factor", "num_levels", "fast_threshold") if k in features}}

    def identity(self) -> dict:
        return {"name": self.name, "opencv": cv2.__version__, "max_keypoints": self.max_keypoints,
                "resize_max": self.resize_max, "scale_factor": self.scale_factor, "num_levels": self.num_levels,
                "fast_threshold": self.fast_threshold}

    def __call__(self, gray: np.ndarray) -> Features:
        check_gray(gray, self.name)
        t = time.perf_counter()
        small = _resize(gray, self.resize_max)
        image = np.clip(small, 0, 255).astype(np.uint8)
        kps, desc = self.orb.detectAndCompute(image, None)
        kps = list(kps)
        desc = desc if desc is not None else np.zeros((0, ORB_BITS // 8), np.uint8)
        response = np.array([k.response for k in kps], np.float32)
        # Strongest first, as the other extractors: any prefix is then a top-k set.
        order = np.argsort(-response, kind="stable")[:self.max_keypoints]
        xy = self._pixel_centres(kps, image.shape)[order]
        size = np.array([k.size for k in kps], np.float32)[order]
        # KeyPoint.angle: degrees from x towards y in the y-down image (the intensity centroid's
        # atan2(m01, m10)), as SIFT's and ours.
        angle = np.radians(np.array([k.angle for k in kps], np.float32))[order]
        bits = np.unpackbits(desc[order], axis=1).astype(np.float32)
        f = Features(xy.astype(np.float32), size, angle.astype(np.float32), response[order], bits, small.shape,
                     {"total": time.perf_counter() - t})
        return f if small is gray else _rescale(f, gray.shape, small.shape)

    def _pixel_centres(self, kps: list, shape: tuple[int, int]) -> np.ndarray:
        """(N, 2) keypoints in this image's pixels, (0, 0) the centre of the top-left pixel.

        OpenCV reports a keypoint found at pixel x_l of pyramid level l as x_l · s^l. That level is
        the image resized to round(W / s^l) × round(H / s^l) pixels, so the pixel's centre is at
        (x_l + 0.5) · W / W_l − 0.5 in the image: up to (s^l − 1) / 2 pixels (1.3 at level 7) from
        OpenCV's figure, in the same direction for every keypoint of the level."""
        if not kps:
            return np.zeros((0, 2), np.float32)
        h, w = shape
        pt = np.array([k.pt for k in kps], np.float64).reshape(-1, 2)
        scale = self.scale_factor ** np.array([k.octave for k in kps], np.float64)
        # OpenCV's level sizes (cvRound of the image size over the level's scale).
        size = np.stack([np.maximum(np.round(w / scale), 1), np.maximum(np.round(h / scale), 1)], axis=1)
        return ((pt / scale[:, None] + 0.5) * np.array([w, h]) / size - 0.5).astype(np.float32)
