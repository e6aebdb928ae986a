"""Pinhole cameras with OpenCV (plumb_bob) distortion, as CameraInfo and COLMAP describe them.

Keypoints are undistorted once, on arrival, to an ideal pinhole camera with the same K; after
that every solver (pycolmap, poselib, OpenCV) sees the same PINHOLE model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np


# Distortion coefficient counts OpenCV reads, and those each CameraInfo model names.
OPENCV_COUNTS = (4, 5, 8, 12, 14)
DISTORTION_COUNTS = {"plumb_bob": (5,), "rational_polynomial": (8,)}


class CameraError(ValueError):
    """Camera parameters that cannot describe a real camera."""


@dataclass(frozen=True)
class Camera:
    """width × height pixels, K (3×3) and OpenCV distortion (k1 k2 p1 p2 [k3 ...]), or none."""

    width: int
    height: int
    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        K = np.asarray(self.K, np.float64).reshape(3, 3)
        dist = np.asarray(self.dist, np.float64).ravel()
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)
        if self.width <= 0 or self.height <= 0:
            raise CameraError(f"camera size {self.width}×{self.height} is not positive")
        if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise CameraError(f"camera matrix has no positive focal length: K = {K.tolist()}")
        if not np.all(np.isfinite(dist)):
            raise CameraError("distortion coefficients are not finite")
        if np.any(dist != 0) and len(dist) not in OPENCV_COUNTS:
            raise CameraError(f"{len(dist)} distortion coefficients (OpenCV reads {', '.join(map(str, OPENCV_COUNTS))})")

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    @property
    def params(self) -> np.ndarray:
        """fx fy cx cy."""
        return np.array([self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]])

    def undistort_points(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) distorted pixels → (N, 2) pixels of the ideal pinhole camera with the same K."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        if not self.has_distortion or len(xy) == 0:
            return xy.copy()
        return cv2.undistortPoints(xy[:, None], self.K, self.dist, P=self.K)[:, 0].astype(np.float64)

    def pinhole(self) -> Camera:
        return Camera(self.width, self.height, self.K)

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "K": self.K.tolist(), "dist": self.dist.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Camera:
        return cls(int(d["width"]), int(d["height"]), np.array(d["K"]), np.array(d.get("dist", [])))

    def to_colmap(self):
        """The pycolmap camera: PINHOLE without distortion, OPENCV (k1 k2 p1 p2) or FULL_OPENCV."""
        import pycolmap

        fx, fy, cx, cy = self.params
        d = np.zeros(8)
        d[: min(len(self.dist), 8)] = self.dist[:8]
        # OpenCV orders k1 k2 p1 p2 k3 k4 k5 k6; COLMAP's FULL_OPENCV does too.
        if not self.has_distortion:
            model, params = "PINHOLE", [fx, fy, cx, cy]
        elif np.all(d[4:] == 0):
            model, params = "OPENCV", [fx, fy, cx, cy, *d[:4]]
        else:
            model, params = "FULL_OPENCV", [fx, fy, cx, cy, *d]
        return pycolmap.Camera(model=model, width=self.width, height=self.height, params=params)


def camera_from_camera_info(msg) -> Camera:
    """sensor_msgs/CameraInfo (rclpy or rosbags message) → Camera; plumb_bob / rational_polynomial
    distortion, or none. Raises CameraError for an uncalibrated (K = 0) or unknown model."""
    K = np.asarray(msg.k, np.float64).reshape(3, 3)
    if K[0, 0] == 0:
        raise CameraError("camera_info has K = 0 (uncalibrated camera)")
    model = (msg.distortion_model or "").strip()
    dist = np.asarray(msg.d, np.float64).ravel()
    if model not in ("", "plumb_bob", "rational_polynomial") and np.any(dist != 0):
        raise CameraError(f"unsupported distortion model {model!r} (need plumb_bob or rational_polynomial)")
    # Checked here, not at the first frame: OpenCV would refuse another count on every image.
    counts = DISTORTION_COUNTS.get(model, OPENCV_COUNTS)
    if np.any(dist != 0) and len(dist) not in counts:
        raise CameraError(f"distortion model {model or '(none)'!r} with {len(dist)} coefficients "
                          f"(need {' or '.join(map(str, counts))})")
    return Camera(int(msg.width), int(msg.height), K, dist)
