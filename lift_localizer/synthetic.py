"""Synthetic posed images the project makes itself: a textured plane seen from known cameras.

The texture is drawn procedurally (shapes, lines and text at many scales), so the demo and tests
need no downloaded or licensed images, and every view comes with its exact homography. Also the
texture a localizer warms up on (``warm_up_image``).
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


def warm_up_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) float32 grey texture with blobs at every scale, so that a warm-up detects a full
    keypoint budget and runs ORI and DESC at the batch sizes real frames use."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for sigma in (1.0, 2.0, 4.0, 8.0, 16.0):
        image += cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), sigma) * sigma
    image -= image.min()
    return image * np.float32(255.0 / max(float(image.max()), 1e-6))


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


@dataclass
class Rectangle:
    """A textured rectangle in the world: corner ``origin``, edges ``u`` and ``v`` (metres); texture
    pixel (0, 0) at the origin, columns along u, rows along v."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    texture: np.ndarray


def room(size: float = 6.0, height: float = 2.4, seed: int = 0) -> list[Rectangle]:
    """The inside of a box room centred on the origin (y down, floor at y = height/2): four walls,
    floor and ceiling, each with its own procedurally drawn texture."""
    s, h = size / 2, height / 2
    P = np.array
    faces = [  # origin, u, v — every face seen from inside
        (P([-s, -h, s]), P([2 * s, 0, 0]), P([0, 2 * h, 0])),     # far wall z = +s
        (P([s, -h, -s]), P([-2 * s, 0, 0]), P([0, 2 * h, 0])),    # near wall z = -s
        (P([-s, -h, -s]), P([0, 0, 2 * s]), P([0, 2 * h, 0])),    # left wall x = -s
        (P([s, -h, s]), P([0, 0, -2 * s]), P([0, 2 * h, 0])),     # right wall x = +s
        (P([-s, h, s]), P([2 * s, 0, 0]), P([0, 0, -2 * s])),     # floor y = +h
        (P([-s, -h, -s]), P([2 * s, 0, 0]), P([0, 0, 2 * s])),    # ceiling y = -h
    ]
    return [Rectangle(o.astype(float), u.astype(float), v.astype(float), make_texture(1024, seed + 1 + i))
            for i, (o, u, v) in enumerate(faces)]


def render(scene: list[Rectangle], K: np.ndarray, T_map_camera: np.ndarray,
           image_size: tuple[int, int] = (480, 640), supersample: int = 2) -> np.ndarray:
    """Ray-cast the rectangles into an (H, W) uint8 image from a camera with pose T_map_camera
    (optical frame: x right, y down, z forward); supersampled to keep textures free of aliasing."""
    h, w = image_size
    s = supersample
    xs = (np.arange(w * s) + 0.5) / s - 0.5
    ys = (np.arange(h * s) + 0.5) / s - 0.5
    px, py = np.meshgrid(xs, ys)
    rays = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones_like(px)], -1)
    d = rays @ T_map_camera[:3, :3].T
    c = T_map_camera[:3, 3]
    depth = np.full(px.shape, np.inf)
    out = np.zeros(px.shape, np.float32)
    for rect in scene:
        n = np.cross(rect.u, rect.v)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((rect.origin - c) @ n) / (d @ n)
        p = c + d * t[..., None] - rect.origin
        a = p @ rect.u / (rect.u @ rect.u)
        b = p @ rect.v / (rect.v @ rect.v)
        hit = (t > 0) & (t < depth) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        th, tw = rect.texture.shape
        sampled = cv2.remap(rect.texture, (a * (tw - 1)).astype(np.float32), (b * (th - 1)).astype(np.float32),
                            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        out[hit] = sampled[hit]
        depth[hit] = t[hit]
    return cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA).round().astype(np.uint8)


def look_at(position: np.ndarray, target: np.ndarray, down: np.ndarray | None = None) -> np.ndarray:
    """T_map_camera of a camera at ``position`` looking at ``target`` with image y towards ``down``
    (default +y, the map's "down" in the synthetic room)."""
    down = np.array([0.0, 1.0, 0.0]) if down is None else np.asarray(down, float)
    z = np.asarray(target, float) - position
    z /= np.linalg.norm(z)
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.column_stack([x, y, z])
    T[:3, 3] = position
    return T


def room_sequence(num_mapping: int = 12, num_query: int = 6, radius: float = 0.8,
                  image_size: tuple[int, int] = (360, 480), seed: int = 0):
    """A posed sequence inside ``room()``: mapping cameras on a circle looking outwards at evenly
    spaced headings, query cameras between them, moved, raised and tilted. Returns
    (K, mapping [(image, T)], query [(image, T)])."""
    h, w = image_size
    K = np.array([[0.8 * w, 0, (w - 1) / 2], [0, 0.8 * w, (h - 1) / 2], [0, 0, 1]])
    scene = room(seed=seed)
    rng = np.random.default_rng(seed)

    def camera(heading: float, r: float, dy: float, pitch: float) -> np.ndarray:
        pos = np.array([r * np.sin(heading), dy, r * np.cos(heading)])
        look = pos + np.array([np.sin(heading), np.tan(pitch), np.cos(heading)])
        return look_at(pos, look)

    mapping = [camera(2 * np.pi * k / num_mapping, radius, 0.0, 0.0) for k in range(num_mapping)]
    query = [camera(2 * np.pi * (k * num_mapping / num_query + 0.5) / num_mapping + rng.uniform(-0.1, 0.1),
                    radius + rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2), np.radians(rng.uniform(-8, 8)))
             for k in range(num_query)]
    return (K, [(render(scene, K, T, image_size), T) for T in mapping],
            [(render(scene, K, T, image_size), T) for T in query])
