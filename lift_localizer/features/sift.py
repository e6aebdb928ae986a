"""OpenCV SIFT, the baseline every LIFT measurement is set beside, in this project's conventions."""
from __future__ import annotations

import cv2
import numpy as np

# OpenCV doubles the image before its first octave. The default upscale does not align pixel
# centres, so its keypoints come out this many pixels (of the image SIFT ran on) right of and below
# where they are; the precise upscale has no such bias. The extractor and the SIFT maps keep the
# default; code that needs true positions (LIFT's training patches) removes it with true_positions
# or runs sift_detect with precise_upscale.
UPSCALE_OFFSET_PX = 0.25


def opencv_angle(degrees) -> np.ndarray:
    """OpenCV KeyPoint.angle (degrees) → radians in our convention (float32, not wrapped).

    OpenCV measures the angle from x towards y in its y-down image, as we do (tests/test_sift.py:
    an image turned clockwise by 90° gives angles 90° larger), so only the unit changes.
    """
    return np.radians(np.asarray(degrees, np.float32))


def sift_detect(gray: np.ndarray, n: int, precise_upscale: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Up to ``n`` SIFT keypoints of a grey image in [0, 255], strongest first.

    Returns xy (N, 2) pixels, OpenCV sizes (N,), angles (N,) radians in our convention, the DoG
    responses (N,) and the SIFT descriptors (N, 128) float32. Without ``precise_upscale`` the
    positions carry OpenCV's UPSCALE_OFFSET_PX bias.
    """
    sift = cv2.SIFT_create(nfeatures=n, enable_precise_upscale=precise_upscale)
    kps, desc = sift.detectAndCompute(np.clip(gray, 0, 255).astype(np.uint8), None)
    desc = desc if desc is not None else np.zeros((0, 128), np.float32)
    response = np.array([k.response for k in kps], np.float32)
    # OpenCV keeps the n strongest but not in order; sorted, any prefix is a top-k set (equal-count
    # comparisons cut both extractors' keypoints by score).
    order = np.argsort(-response, kind="stable")
    xy = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)[order]
    size = np.array([k.size for k in kps], np.float32)[order]
    angle = opencv_angle([k.angle for k in kps])[order]
    return xy, size, angle, response[order], desc[order]


def sift_keypoints(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`sift_detect` without the responses: xy, sizes, angles, descriptors."""
    xy, size, angle, _, desc = sift_detect(gray, n)
    return xy, size, angle, desc


def true_positions(xy: np.ndarray, pixel_size=1.0) -> np.ndarray:
    """Keypoints of :func:`sift_detect` (default upscale) moved to where they are, in float64.

    ``pixel_size``: the size, per axis, of a pixel of the image SIFT ran on in the pixels of ``xy``
    (an extractor that shrank the image and scaled its keypoints back up).
    """
    return np.asarray(xy, np.float64) - UPSCALE_OFFSET_PX * np.asarray(pixel_size, np.float64)
