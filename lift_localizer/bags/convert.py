"""sensor_msgs images → numpy arrays, without cv_bridge and without ROS.

Works on any object with the message's field names: rclpy messages and rosbags messages alike
(``data`` may be bytes, array.array, a list or a numpy array). ``image_from_msg`` returns what
cv_bridge's ``imgmsg_to_cv2(msg, 'passthrough')`` returns for the same message; ``image_to_bgr_or_gray``
gives H×W grey or H×W×3 BGR for every supported encoding (what the feature pipeline reads).
"""
from __future__ import annotations

import cv2
import numpy as np

from ..images import MAX_IMAGE_SIDE, ImageError, check_size, decode

# encoding → (channels, dtype)
ENCODINGS: dict[str, tuple[int, type]] = {
    "mono8": (1, np.uint8), "8UC1": (1, np.uint8), "mono16": (1, np.uint16), "16UC1": (1, np.uint16),
    "bgr8": (3, np.uint8), "rgb8": (3, np.uint8), "8UC3": (3, np.uint8),
    "bgra8": (4, np.uint8), "rgba8": (4, np.uint8), "8UC4": (4, np.uint8),
    "yuv422": (2, np.uint8), "uyvy": (2, np.uint8), "yuv422_yuy2": (2, np.uint8), "yuyv": (2, np.uint8),
    "bayer_rggb8": (1, np.uint8), "bayer_bggr8": (1, np.uint8), "bayer_gbrg8": (1, np.uint8),
    "bayer_grbg8": (1, np.uint8),
}

# OpenCV names Bayer patterns by the second row's first two pixels: ROS's rggb is OpenCV's BG.
_TO_BGR = {
    "rgb8": cv2.COLOR_RGB2BGR, "bgra8": cv2.COLOR_BGRA2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "8UC4": cv2.COLOR_BGRA2BGR,
    "yuv422": cv2.COLOR_YUV2BGR_UYVY, "uyvy": cv2.COLOR_YUV2BGR_UYVY,
    "yuv422_yuy2": cv2.COLOR_YUV2BGR_YUYV, "yuyv": cv2.COLOR_YUV2BGR_YUYV,
    "bayer_rggb8": cv2.COLOR_BayerBG2BGR, "bayer_bggr8": cv2.COLOR_BayerRG2BGR,
    "bayer_gbrg8": cv2.COLOR_BayerGR2BGR, "bayer_grbg8": cv2.COLOR_BayerGB2BGR,
}


def _bytes(data) -> np.ndarray:
    if isinstance(data, np.ndarray):
        return data.view(np.uint8).ravel()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, np.uint8).ravel()   # array.array('B') or a list


def image_from_msg(msg, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """sensor_msgs/Image → array in the message's own layout (H×W, H×W×C; uint8 or uint16).
    Raises ImageError naming the problem (unknown encoding, empty, a side over ``max_side``, step
    or data too short)."""
    encoding = str(msg.encoding)
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r} (supported: {', '.join(ENCODINGS)})")
    channels, dtype = ENCODINGS[encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    itemsize = np.dtype(dtype).itemsize
    check_size(w, h, max_side)
    row = w * channels * itemsize
    if step < row:
        raise ImageError(f"step {step} is smaller than width × bytes per pixel = {row} ({encoding})")
    data = _bytes(msg.data)
    if data.size < h * step:
        raise ImageError(f"image data has {data.size} bytes, {h} rows × step {step} need {h * step}")
    rows = data[: h * step].reshape(h, step)[:, :row]
    order = ">" if getattr(msg, "is_bigendian", False) else "<"
    image = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(order)).astype(dtype, copy=False)
    image = image.reshape(h, w, channels)
    return image[:, :, 0] if channels == 1 else image


def image_to_bgr_or_gray(msg, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """sensor_msgs/Image → H×W grey (mono8/16) or H×W×3 BGR (every colour, YUV and Bayer encoding)."""
    image = image_from_msg(msg, max_side)
    code = _TO_BGR.get(str(msg.encoding))
    return cv2.cvtColor(image, code) if code is not None else image


def compressed_image_from_msg(msg, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, …) → H×W grey or H×W×3 BGR (or 16-bit PNG as is).
    The size the header declares is checked against ``max_side`` before decoding."""
    data = _bytes(msg.data)
    if data.size == 0:
        raise ImageError(f"empty compressed image (format {msg.format!r})")
    try:
        image = decode(data, max_side)
    except ImageError as e:
        raise ImageError(f"compressed image (format {msg.format!r}): {e}") from None
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def make_image_fields(image: np.ndarray, encoding: str) -> dict:
    """The fields of a sensor_msgs/Image holding ``image`` (no row padding, little-endian)."""
    if encoding not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {encoding!r}")
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": image.nbytes // h, "data": image.tobytes()}


def _cv_bridge():
    try:
        from cv_bridge import CvBridge, CvBridgeError
    except ImportError:
        return None, None
    return CvBridge(), CvBridgeError


_BRIDGE, _BRIDGE_ERROR = _cv_bridge()
CONVERTER = "cv_bridge" if _BRIDGE is not None else "lift_localizer.bags.convert"


def decode_image(msg, compressed: bool = False, max_side: int | None = MAX_IMAGE_SIDE) -> np.ndarray:
    """Image or CompressedImage message → H×W grey or H×W×3 BGR, with cv_bridge where it is installed
    and this module's conversion (the same arrays) where it is not. Raises ImageError, also for a
    side over ``max_side`` (checked before any conversion or decoding)."""
    # cv_bridge's compressed path is cv2.imdecode of whatever size the header claims: ours checks it first.
    if compressed:
        return compressed_image_from_msg(msg, max_side)
    if _BRIDGE is None:
        return image_to_bgr_or_gray(msg, max_side)
    if str(msg.encoding) not in ENCODINGS:
        raise ImageError(f"unsupported image encoding {str(msg.encoding)!r} (supported: {', '.join(ENCODINGS)})")
    check_size(int(msg.width), int(msg.height), max_side)
    try:
        image = _BRIDGE.imgmsg_to_cv2(msg, "passthrough")
    except (_BRIDGE_ERROR, TypeError, ValueError, cv2.error):
        # cv_bridge knows fewer encoding names (uyvy, yuyv) and says less about broken messages.
        return image_to_bgr_or_gray(msg, max_side)
    if image is None or image.size == 0:
        raise ImageError("empty image")
    code = _TO_BGR.get(str(msg.encoding))
    return cv2.cvtColor(image, code) if code is not None else image
