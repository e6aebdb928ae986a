"""OpenCV SIFT, the baseline every LIFT measurement is set beside, in this project's conventions."""
from __future__ import annotations

import cv2
import numpy as np


def sift_detect(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n`` SIFT keypoints of a grey image in [0, 255], strongest first.

    Returns xy (N, 2) pixels, OpenCV sizes (N,), angles (N,) radians in our convention, the DoG
    responses (N,) and the SIFT descriptors (N, 128) float32.
    """
    kps, desc = cv2.SIFT_create(nfeatures=n).detectAndCompute(np.clip(gray, 0, 255).astype(np.uint8), None)
    desc = desc if desc is not None else np.zeros((0, 128), np.float32)
    response = np.array([k.response for k in kps], np.float32)
    # OpenCV keeps the n strongest but not in order; sorted, any prefix is a top-k set (equal-count
    # comparisons cut both extractors' keypoints by score).
    order = np.argsort(-response, kind="stable")
    xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)[order]
    size = np.array([k.size for k in kps], np.float32)[order]
    # OpenCV's KeyPoint.angle (degrees) is measured from x towards y in its y-down image, as ours is
    # (tests/test_sift.py: an image turned clockwise by 90° gives angles 90° larger).
    angle = np.radians(np.array([k.angle for k in kps], np.float32))[order]
    return xy, size, angle, response[order], desc[order]


def sift_keypoints(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sift_detect` without the responses: xy, sizes, angles, descriptors."""
    xy, size, angle, _, desc = sift_detect(gray, n)
    return xy, size, angle, desc
