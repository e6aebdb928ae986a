"""Images in: files or arrays of any common depth and channel count → grey float32 in [0, 255]."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


class ImageError(ValueError):
    """An image that cannot be used; the message names the file or the problem."""


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA; uint8, uint16 or float in [0, 1] or
    [0, 255] → (H, W) float32 grey levels in [0, 255]. 16-bit images use their full range."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ImageError(f"unsupported image shape {image.shape}: need H×W, H×W×1, H×W×3 or H×W×4")
    if image.size == 0:
        raise ImageError(f"empty image (shape {image.shape})")
    if image.dtype == np.uint8:
        scale = 1.0
    elif image.dtype == np.uint16:
        scale = 255.0 / 65535.0
    elif image.dtype in (np.float32, np.float64):
        finite = np.isfinite(image)
        if not finite.all():
            raise ImageError("image has NaN or infinite values")
        scale = 255.0 if image.max(initial=0.0) <= 1.0 else 1.0
    else:
        raise ImageError(f"unsupported pixel type {image.dtype}")
    image = image.astype(np.float32) * np.float32(scale)
    if image.ndim == 3:
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        image = cv2.cvtColor(image, code)
    return np.ascontiguousarray(image)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as grey float32 in [0, 255]; ImageError names the file and the reason."""
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{path}: no such file")
    if p.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    try:
        data = np.fromfile(p, dtype=np.uint8)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror or e})") from None
    if data.size == 0:
        raise ImageError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"{path}: not an image OpenCV can decode (corrupt, truncated or another format)")
    try:
        return to_gray(image)
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
