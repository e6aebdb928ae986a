"""Synthetic posed images the project makes itself: a textured plane seen from known cameras.

The texture is drawn procedurally (shapes, lines and text at many scales), so the demo and tests
need no downloaded or licensed images, and every view comes with its exact homography.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def make_texture(size: int = 1024, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 texture with structure from 3 to 100 pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 90 + 60 * np.sin(2 * np.pi * (1.3 * xx + 0.7 * yy)) * np.cos(2 * np.pi * 0.9 * yy)
    img = np.clip(base, 0, 255).astype(np.uint8)
    for _ in range(int(size * size / 2500)):
        kind = rng.integers(0, 4)
        colour = int(rng.integers(0, 256))
        c = tuple(int(v) for v in rng.integers(0, size, 2))
        r = int(np.exp(rng.uniform(np.log(3), np.log(60))))
        if kind == 0:
            cv2.circle(img, c, r, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            d = tuple(int(v) for v in rng.integers(-r, r + 1, 2) + np.array(c))
            cv2.rectangle(img, c, d, colour, -1, cv2.LINE_AA)
        elif kind == 2:
            axes = (r, max(2, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(img, c, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
        else:
            pts = (rng.normal(0, r, (int(rng.integers(3, 6)), 2)) + np.array(c)).astype(np.int32)
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
    for _ in range(12):
        text = "".join(rng.choice(list("LIFTROS2AR0123456789"), 5))
        org = tuple(int(v) for v in rng.integers(0, size - 100, 2))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.8, 3)),
                    int(rng.integers(0, 256)), int(rng.integers(1, 5)), cv2.LINE_AA)
    return cv2.GaussianBlur(img, (0, 0), 0.8)


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z (R = Rz Ry Rx)."""
    return cv2.Rodrigues(np.radians([0, 0, rz]))[0] @ cv2.Rodrigues(np.radians([0, ry, 0]))[0] \
        @ cv2.Rodrigues(np.radians([rx, 0, 0]))[0]


@dataclass
class View:
    """A rendered view: image (H, W) uint8, intrinsics K, world→camera pose R, t, and the
    homography H mapping texture pixels to image pixels."""

    image: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    H: np.ndarray


def plane_view(texture: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray,
               image_size: tuple[int, int] = (480, 640), plane_width: float = 2.0) -> View:
    """Render the texture on the plane z = 0 (centred at the origin, ``plane_width`` metres wide)
    seen by a camera with x_cam = R x_world + t."""
    size = texture.shape[1]
    m = plane_width / size
    # texture pixel (u, v) → world (X, Y, 0), pixel centres, plane centred on the origin
    A = np.array([[m, 0, -m * (size - 1) / 2], [0, m, -m * (size - 1) / 2], [0, 0, 1]])
    H = K @ np.column_stack([R[:, 0], R[:, 1], t]) @ A
    H = H / H[2, 2]
    h, w = image_size
    image = cv2.warpPerspective(texture, H, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    return View(image, K, R, t, H)


def demo_views(texture: np.ndarray, image_size: tuple[int, int] = (480, 640)) -> list[View]:
    """Five views of the plane: frontal, rotated in-plane, tilted, closer, and moved sideways."""
    h, w = image_size
    K = np.array([[500.0, 0, (w - 1) / 2], [0, 500.0, (h - 1) / 2], [0, 0, 1]])
    poses = [((0, 0, 0), (0, 0, 2.0)), ((0, 0, 20), (0.05, 0, 2.0)), ((25, 0, 0), (0, 0.1, 2.1)),
             ((0, -15, 5), (0, 0, 1.5)), ((5, 10, -10), (-0.15, 0.05, 2.2))]
    return [plane_view(texture, K, rotation(*r), np.array(t, float), image_size) for r, t in poses]


def transfer(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a homography to (N, 2) points."""
    if len(xy) == 0:
        return xy.reshape(0, 2)
    return cv2.perspectiveTransform(xy.reshape(-1, 1, 2).astype(np.float64), H).reshape(-1, 2)
