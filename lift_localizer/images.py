"""Images in: files or arrays of any common depth and channel count → grey float32 in [0, 255]."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import cv2
import numpy as np

# The longest image side read unless a caller says otherwise. Real cameras stay below it (8K video
# is 7680 wide); a 1 kB compressed file can claim 20000², whose decoding alone takes gigabytes.
MAX_IMAGE_SIDE = 8192


class ImageError(ValueError):
    """An image that cannot be used; the message names the file or the problem."""


def check_size(width: int, height: int, max_side: int | None) -> None:
    """Raise ImageError where ``width`` × ``height`` is empty or a side exceeds ``max_side`` (None: no bound)."""
    if width <= 0 or height <= 0:
        raise ImageError(f"empty image ({width}×{height})")
    if max_side is not None and max(width, height) > max_side:
        raise ImageError(f"image is {width}×{height}, larger than {max_side} pixels a side (the bound is a "
                         f"parameter: max_image_side for the node, --max-image-side for the commands)")


def encoded_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) that an encoded image's header declares, read without decoding the pixels;
    None where the format is not one Pillow identifies. Raises ImageError above Pillow's own bound
    (twice ``PIL.Image.MAX_IMAGE_PIXELS``), which it applies before saying the size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above 89 Mpx: the caller bounds the size itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data.tobytes())) as im:   # lazy: parses the header only
                return im.size
    except Image.DecompressionBombError as e:
        raise ImageError(f"image declares more pixels than can be decoded safely ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def decode(data: np.ndarray, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """Encoded bytes (uint8 array: PNG, JPEG, TIFF, …) → the image as OpenCV decodes it, unchanged
    depth and channels. The declared size is checked before any pixel is decoded."""
    if data.size == 0:
        raise ImageError("empty data")
    if max_side is not None:
        size = encoded_size(data)
        if size is None:
            raise ImageError(f"could not be decoded: not an image whose size its header says ({data.size} bytes; "
                             "corrupt, truncated or an unsupported format)")
        check_size(*size, max_side)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageError(f"could not be decoded: not an image OpenCV can decode ({data.size} bytes; corrupt, "
                         "truncated or another format)")
    return image


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


def read_image(path: str | Path, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """Read an image file as grey float32 in [0, 255]; ImageError names the file and the reason.
    A side longer than ``max_side`` is refused from the file's header, before decoding."""
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
    try:
        return to_gray(decode(data, max_side))
    except ImageError as e:
        raise ImageError(f"{path}: {e}") from None
