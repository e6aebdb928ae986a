"""Synthetic posed images the project makes itself: a textured plane seen from known cameras.

The texture is drawn procedurally (shapes and strokes at many scales, in NumPy alone), so the demo and tests
need no downloaded or licensed images, and every view comes with its exact homography. Also the
texture a localizer warms up on (``warm_up_image``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with reflected borders, in float32 NumPy."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel = (kernel / kernel.sum()).astype(np.float32)
    out = img.astype(np.float32)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in (0, 1)], mode="reflect")
        n = out.shape[axis]
        out = sum(k * np.take(padded, np.arange(i, i + n), axis=axis) for i, k in enumerate(kernel))
    return out


def _paint(img: np.ndarray, colour: float, box: tuple[int, int, int, int], sdf) -> None:
    """Blend ``colour`` into ``img`` where the signed distance ``sdf(x, y)`` (pixels, negative
    inside) is below zero, with one pixel of linear anti-aliasing; only inside ``box``."""
    h, w = img.shape
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w - 1), min(box[3], h - 1)
    if x1 < x0 or y1 < y0:
        return
    yy, xx = np.mgrid[y0:y1 + 1, x0:x1 + 1].astype(np.float32)
    alpha = np.clip(0.5 - sdf(xx, yy), 0.0, 1.0)
    region = img[y0:y1 + 1, x0:x1 + 1]
    region += alpha * (colour - region)


def _segment_distance(xx: np.ndarray, yy: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = b - a
    t = np.clip(((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / max(float(d @ d), 1e-9), 0.0, 1.0)
    return np.hypot(xx - a[0] - t * d[0], yy - a[1] - t * d[1])


def _stroke(img: np.ndarray, colour: float, a: np.ndarray, b: np.ndarray, half_width: float) -> None:
    """A straight stroke from ``a`` to ``b`` (x, y), ``2 × half_width`` pixels wide, round-ended."""
    lo, hi = np.minimum(a, b).astype(int) - 4, np.maximum(a, b).astype(int) + 4
    _paint(img, colour, (lo[0], lo[1], hi[0], hi[1]), lambda x, y: _segment_distance(x, y, a, b) - half_width)


def _polygon_sdf(pts: np.ndarray):
    """Signed distance to a simple or self-intersecting polygon (even-odd inside test)."""
    def sdf(xx, yy):
        dist = np.full(xx.shape, np.inf, np.float32)
        inside = np.zeros(xx.shape, bool)
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            dist = np.minimum(dist, _segment_distance(xx, yy, a, b))
            crosses = (a[1] > yy) != (b[1] > yy)
            with np.errstate(divide="ignore", invalid="ignore"):
                x_at = a[0] + (yy - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
            inside ^= crosses & (xx < x_at)
        return np.where(inside, -dist, dist)
    return sdf


GLYPH_WORDS = 60  # words per 1024x1024 texels: corners enough for the small-image room tests


@functools.lru_cache(maxsize=16)
def make_texture(size: int = 1024, seed: int = 0) -> np.ndarray:
    """(size, size) uint8 texture with structure from 3 to 100 pixels, read-only.

    Drawn with NumPy alone (signed distances with one pixel of anti-aliasing, a separable
    Gaussian blur), so the same seed gives the same pixels whatever OpenCV build is installed.
    A room's six 1024² textures take ~2 s to draw: each (size, seed) is drawn once per process
    (16 MB at most are kept), hence read-only."""
    texture = _draw_texture(size, seed)
    texture.setflags(write=False)
    return texture


def _draw_texture(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img = (90 + 60 * np.sin(2 * np.pi * (1.3 * xx + 0.7 * yy)) * np.cos(2 * np.pi * 0.9 * yy)).astype(np.float32)
    for _ in range(int(size * size / 2500)):
        kind = rng.integers(0, 5)
        colour = float(rng.integers(0, 256))
        c = rng.integers(0, size, 2).astype(np.float32)
        r = float(np.exp(rng.uniform(np.log(3), np.log(60))))
        box = (int(c[0] - r - 2), int(c[1] - r - 2), int(c[0] + r + 2), int(c[1] + r + 2))
        if kind == 0:  # disc
            _paint(img, colour, box, lambda x, y, c=c, r=r: np.hypot(x - c[0], y - c[1]) - r)
        elif kind == 1:  # axis-aligned rectangle from the centre to a random corner
            d = c + rng.uniform(-r, r, 2).astype(np.float32)
            lo, hi = np.minimum(c, d), np.maximum(c, d)
            mid, half = (lo + hi) / 2, (hi - lo) / 2 + 0.5
            _paint(img, colour, box, lambda x, y, m=mid, h=half: np.maximum(np.abs(x - m[0]) - h[0],
                                                                           np.abs(y - m[1]) - h[1]))
        elif kind == 2:  # rotated ellipse (distance approximated by the scaled radius)
            a, b = r, max(2.0, r * float(rng.uniform(0.3, 1.0)))
            th = np.radians(float(rng.uniform(0, 180)))
            co, si = np.cos(th), np.sin(th)

            def ellipse(x, y, c=c, a=a, b=b, co=co, si=si):
                u, v = (x - c[0]) * co + (y - c[1]) * si, -(x - c[0]) * si + (y - c[1]) * co
                q = np.sqrt((u / a) ** 2 + (v / b) ** 2)
                return (q - 1) * min(a, b)
            _paint(img, colour, box, ellipse)
        elif kind == 3:  # polygon of 3 to 5 random vertices
            pts = (rng.normal(0, r, (int(rng.integers(3, 6)), 2)) + c).astype(np.float32)
            lo, hi = pts.min(0).astype(int) - 2, pts.max(0).astype(int) + 2
            _paint(img, colour, (lo[0], lo[1], hi[0], hi[1]), _polygon_sdf(pts))
        else:  # stroke 1 to 4 pixels wide: the fine structure
            _stroke(img, colour, c, c + rng.normal(0, 2 * r, 2).astype(np.float32), float(rng.uniform(0.5, 2.0)))
    for _ in range(max(1, round(GLYPH_WORDS * size * size / 1024**2))):
        _glyphs(img, rng, size)
    return np.clip(np.rint(_gaussian_blur(img, 0.8)), 0, 255).astype(np.uint8)


def _glyphs(img: np.ndarray, rng: np.random.Generator, size: int) -> None:
    """A "word" of five made-up glyphs, each two to four strokes between the points of a 3×3 grid:
    dense, distinctive corners and junctions like printed text, 20 to 90 pixels tall."""
    height = float(rng.uniform(20, 90))
    half = float(rng.integers(1, 5)) / 2
    colour = float(rng.integers(0, 256))
    origin = rng.integers(0, max(size - 100, 1), 2).astype(np.float32)
    grid = np.stack(np.meshgrid([0.0, 0.3, 0.6], [0.0, 0.5, 1.0]), -1).reshape(-1, 2).astype(np.float32)
    for k in range(5):
        corner = origin + np.array([0.8 * height * k, 0.0], np.float32)
        for _ in range(int(rng.integers(2, 5))):
            i, j = rng.choice(len(grid), 2, replace=False)
            _stroke(img, colour, corner + height * grid[i], corner + height * grid[j], half)


def warm_up_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """(H, W) float32 grey texture with blobs at every scale, so that a warm-up detects a full
    keypoint budget and runs ORI and DESC at the batch sizes real frames use."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for sigma in (1.0, 2.0, 4.0, 8.0, 16.0):
        # float32 from the start: a float64 draw at a large camera size is gigabytes on its own.
        image += cv2.GaussianBlur(rng.standard_normal((height, width), dtype=np.float32), (0, 0), sigma) * sigma
    image -= image.min()
    return image * np.float32(255.0 / max(float(image.max()), 1e-6))


def rotation(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rotation matrix from angles in degrees about x, then y, then z (R = Rz Ry Rx)."""
    return cv2.Rodrigues(np.radians([0, 0, rz]))[0] @ cv2.Rodrigues(np.radians([0, ry, 0]))[0] \
        @ cv2.Rodrigues(np.radians([rx, 0, 0]))[0]


def bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray, outside: float | None = None) -> np.ndarray:
    """Sample ``image`` (H, W) at float pixel coordinates (any shape) with bilinear interpolation,
    in float32 NumPy: the same values whatever OpenCV build is installed (OpenCV interpolates uint8
    images in fixed point, differently across versions). ``outside=None`` clamps to the border;
    a number is the value beyond it."""
    img = image.astype(np.float32)
    if outside is not None:
        img = np.pad(img, 1, constant_values=outside)
        x, y = x + 1, y + 1
    h, w = img.shape
    x = np.clip(x, 0, w - 1).astype(np.float32)
    y = np.clip(y, 0, h - 1).astype(np.float32)
    x0 = np.minimum(np.floor(x).astype(np.intp), w - 2) if w > 1 else np.zeros(x.shape, np.intp)
    y0 = np.minimum(np.floor(y).astype(np.intp), h - 2) if h > 1 else np.zeros(y.shape, np.intp)
    fx, fy = x - x0, y - y0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    top = img[y0, x0] * (1 - fx) + img[y0, x1] * fx
    bottom = img[y1, x0] * (1 - fx) + img[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


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
    py, px = np.mgrid[0:h, 0:w].astype(np.float64)
    src = np.stack([px, py, np.ones_like(px)], -1) @ np.linalg.inv(H).T
    image = bilinear(texture, src[..., 0] / src[..., 2], src[..., 1] / src[..., 2], outside=0.0)
    return View(np.clip(np.rint(image), 0, 255).astype(np.uint8), K, R, t, H)


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
        out[hit] = bilinear(rect.texture, a[hit] * (tw - 1), b[hit] * (th - 1))
        depth[hit] = t[hit]
    # Box filter over each s×s block (what INTER_AREA does for an integer factor), in NumPy so the
    # pixels do not depend on the OpenCV build.
    out = out.reshape(h, s, w, s).mean(axis=(1, 3))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


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


# The room's keypoint budget in the demo, half the commands' (commands.feature_defaults): its views are
# small (480×360 by default) and the demo is meant to run in about a minute on 2 cores (README).
SYNTHETIC_MAX_KEYPOINTS = 1000


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
