"""Quadruplets from synthetic views: random homographies with photometric changes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .options import default_conf, merge_options
from .quadruplets import Quads, free_location, inside, quads_from_rows
from .scenes import Scene, wrap


@dataclass
class Warp:
    """A synthetic view: image ``base`` of a scene warped by H (base pixels → view pixels) with
    photometric changes."""

    base: int
    H: np.ndarray
    gamma: float
    contrast: float
    brightness: float
    blur: float
    noise: float
    seed: int


def random_homography(size: tuple[int, int], rng: np.random.Generator, hc: dict) -> np.ndarray:
    """Rotation, scale, anisotropy, perspective and translation about the image centre."""
    w, h = size
    half = max(w, h) / 2
    N = np.array([[1 / half, 0, -(w - 1) / 2 / half], [0, 1 / half, -(h - 1) / 2 / half], [0, 0, 1]])
    theta = np.radians(rng.uniform(-hc["rotation_deg"], hc["rotation_deg"]))
    s = np.exp(rng.uniform(*np.log(hc["scale"])))
    a = np.exp(rng.uniform(-hc["aspect"], hc["aspect"]))
    R = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    S = np.diag([s * a, s / a, 1.0])
    P = np.eye(3)
    P[2, :2] = rng.uniform(-hc["perspective"], hc["perspective"], 2)
    T = np.eye(3)
    T[:2, 2] = rng.uniform(-hc["translation"], hc["translation"], 2) * np.array([w, h]) / half
    H = np.linalg.inv(N) @ T @ P @ R @ S @ N
    return H / H[2, 2]


def transfer(H: np.ndarray, xy: np.ndarray, sigma: np.ndarray, angle: np.ndarray):
    """Keypoints through a homography: positions, scales (× sqrt|det J|) and angles (direction of
    J (cos θ, sin θ)), J the homography's Jacobian at each point."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    X = np.c_[xy, np.ones(len(xy))] @ H.T
    z = X[:, 2]
    out = X[:, :2] / z[:, None]
    # J = (A - x' c^T) / z with H = [[A, b], [c^T, 1]]
    A, c = H[:2, :2], H[2, :2]
    J = (A[None] - out[:, :, None] * c[None, None, :]) / z[:, None, None]
    det = np.abs(np.linalg.det(J))
    d = np.einsum("nij,nj->ni", J, np.stack([np.cos(angle), np.sin(angle)], 1))
    return out, np.asarray(sigma) * np.sqrt(det), np.arctan2(d[:, 1], d[:, 0]), z > 0


def warp_image(gray: np.ndarray, warp: Warp) -> np.ndarray:
    """The synthetic view of ``gray`` (float32 0..255): warped (pre-blurred where it shrinks), then
    gamma, contrast, brightness, blur and noise."""
    h, w = gray.shape
    J = warp.H[:2, :2] / warp.H[2, 2]
    shrink = math.sqrt(abs(np.linalg.det(J)))
    src = gray
    if shrink < 1:
        src = cv2.GaussianBlur(gray, (0, 0), 0.6 * math.sqrt(1 / shrink ** 2 - 1))
    out = cv2.warpPerspective(src, warp.H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    valid = cv2.warpPerspective(np.ones_like(gray), warp.H, (w, h), flags=cv2.INTER_LINEAR) > 0.5
    x = np.clip(out / 255.0, 0, 1) ** warp.gamma
    mean = float(x[valid].mean()) if valid.any() else 0.5
    x = (x - mean) * warp.contrast + mean + warp.brightness / 255.0
    x = x * 255.0
    if warp.blur > 0:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), warp.blur)
    if warp.noise > 0:
        x = x + np.random.default_rng(warp.seed).normal(0, warp.noise, x.shape)
    x = np.where(valid, x, 0)
    return np.clip(x, 0, 255).astype(np.float32)


def homography_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None
                     ) -> tuple[Quads, list[Warp]]:
    """Up to ``n`` quadruplets from synthetic views of the scene's images: P1 a keypoint that is a
    point (SfM / stable webcam), P2 its transfer into a random homography with photometric changes,
    P3 another such keypoint in the same view, P4 a keypoint-free place of the original image.
    Image indices ≥ len(scene) refer to the returned warps."""
    conf = merge_options(default_conf, conf or {})
    hc = conf["homography"]
    sep = conf["min_separation_sigmas"]
    usable = [i for i in range(len(scene)) if (scene.point_ids[i] >= 0).sum() >= 2]
    rows, warps = [], []
    if not usable:
        return Quads.empty(), warps
    max_warps = 4 * (n // max(1, hc["points_per_warp"]) + len(usable))
    order = []
    while len(rows) < n and len(warps) < max_warps:
        if not order:
            order = list(rng.permutation(usable))
        i = int(order.pop())
        size = scene.sizes[i]
        H = random_homography(size, rng, hc)
        warp = Warp(i, H, float(np.exp(rng.uniform(*np.log(hc["gamma"])))), float(rng.uniform(*hc["contrast"])),
                    float(rng.uniform(-hc["brightness"], hc["brightness"])),
                    float(rng.uniform(*hc["blur"])) if rng.random() < 0.5 else 0.0,
                    float(rng.uniform(*hc["noise"])), int(rng.integers(2**31)))
        good = np.flatnonzero((scene.point_ids[i] >= 0)
                              & inside(scene.keypoints[i], scene.sigmas[i], size, conf["border_sigmas"]))
        xy, sg, an = scene.keypoints[i][good], scene.sigmas[i][good], scene.angles[i][good]
        xy2, sg2, an2, front = transfer(H, xy, sg, an)
        ok = front & inside(xy2, sg2, size, conf["border_sigmas"])
        if ok.sum() < 2:
            continue
        view = len(scene) + len(warps)
        warps.append(warp)
        sel = np.flatnonzero(ok)
        for j in rng.permutation(sel)[: hc["points_per_warp"]]:
            if len(rows) >= n:
                break
            far = sel[np.linalg.norm(xy[sel] - xy[j], axis=1) >= sep * np.maximum(sg[sel], sg[j])]
            free = free_location(scene.keypoints[i], scene.sigmas[i], size, conf, rng)
            if len(far) == 0 or free is None:
                continue
            t = int(rng.choice(far))
            rows.append(((i, view, view, i), (xy[j], xy2[j], xy2[t], free[0]), (sg[j], sg2[j], sg2[t], free[1]),
                         (an[j], wrap(an2[j]), wrap(an2[t]), 0.0),
                         (int(scene.point_ids[i][good[j]]), int(scene.point_ids[i][good[t]]))))
    return quads_from_rows(rows), warps
