"""Quadruplets from scenes: P1, P2 one point in two images, P3 another point, P4 a place with no
keypoint (Yi et al., ECCV 2016, §4); from SfM points and from fixed webcams."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import default_conf, merge_options
from .scenes import Scene


@dataclass
class Quads:
    """Where each patch of N quadruplets is cut: image index (scenes' images, then warps), centre,
    sigma and angle per patch (P4: upright, angle 0), and the ids of P1/P2's point and P3's."""

    image: np.ndarray   # (N, 4) int64
    xy: np.ndarray      # (N, 4, 2)
    sigma: np.ndarray   # (N, 4)
    angle: np.ndarray   # (N, 4)
    point: np.ndarray   # (N, 2) int64

    @staticmethod
    def empty() -> Quads:
        return Quads(np.zeros((0, 4), np.int64), np.zeros((0, 4, 2)), np.zeros((0, 4)), np.zeros((0, 4)),
                     np.zeros((0, 2), np.int64))

    def __len__(self) -> int:
        return len(self.image)


def spread(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``n`` candidates in random order, every group's first candidate before any
    group's second, and so on (as many different points as possible)."""
    m = len(groups)
    if m == 0 or n <= 0:
        return np.zeros(0, np.int64)
    order = rng.permutation(m)
    g = np.asarray(groups)[order]
    by_group = np.argsort(g, kind="stable")
    sg = g[by_group]
    start = np.r_[0, np.flatnonzero(sg[1:] != sg[:-1]) + 1]
    rank_sorted = np.arange(m) - np.repeat(start, np.diff(np.r_[start, m]))
    rank = np.empty(m, np.int64)
    rank[by_group] = rank_sorted
    return order[np.argsort(rank, kind="stable")][:n]


def inside(xy: np.ndarray, sigma: np.ndarray, size: tuple[int, int], border_sigmas: float) -> np.ndarray:
    w, h = size
    m = border_sigmas * np.asarray(sigma)
    xy = np.asarray(xy).reshape(-1, 2)
    return (xy[:, 0] >= m) & (xy[:, 1] >= m) & (xy[:, 0] <= w - 1 - m) & (xy[:, 1] <= h - 1 - m)


def free_location(xy: np.ndarray, sigma: np.ndarray, size: tuple[int, int], conf: dict, rng: np.random.Generator,
                  tries: int = 8) -> tuple[np.ndarray, float] | None:
    """P4: a random centre and scale (drawn from the keypoints' scales) whose support lies inside the
    image and that is ≥ min_separation_sigmas × max(sigma, sigma_k) from every keypoint k."""
    if len(sigma) == 0:
        return None
    w, h = size
    k = conf["min_separation_sigmas"]
    for _ in range(tries):
        s = sigma[rng.integers(0, len(sigma), 64)]
        m = conf["border_sigmas"] * s
        ok = (w - 1 - 2 * m > 0) & (h - 1 - 2 * m > 0)
        if not ok.any():
            continue
        s, m = s[ok], m[ok]
        c = np.stack([m + rng.random(len(s)) * (w - 1 - 2 * m), m + rng.random(len(s)) * (h - 1 - 2 * m)], 1)
        d = np.linalg.norm(c[:, None] - xy[None], axis=2)
        good = np.all(d >= k * np.maximum(s[:, None], sigma[None]), axis=1)
        if good.any():
            j = int(np.flatnonzero(good)[0])
            return c[j], float(s[j])
    return None


def _observations(scene: Scene, conf: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, keypoint, point id) of every usable observation of a point."""
    img, kp, pid = [], [], []
    for i in range(len(scene)):
        p = scene.point_ids[i]
        ok = (p >= 0) & inside(scene.keypoints[i], scene.sigmas[i], scene.sizes[i], conf["border_sigmas"])
        idx = np.flatnonzero(ok)
        img.append(np.full(len(idx), i))
        kp.append(idx)
        pid.append(p[idx])
    return np.concatenate(img).astype(np.int64), np.concatenate(kp).astype(np.int64), np.concatenate(pid)


def _other_point(scene: Scene, obs, avoid_pid: int, near: list[tuple[int, np.ndarray, float]], conf: dict,
                 rng: np.random.Generator, tries: int = 20):
    """A random observation of another point, not within min_separation_sigmas of P1/P2 in their images."""
    img, kp, pid = obs
    for _ in range(tries):
        j = int(rng.integers(0, len(img)))
        if pid[j] == avoid_pid:
            continue
        i, k = int(img[j]), int(kp[j])
        xy, s = scene.keypoints[i][k], scene.sigmas[i][k]
        if any(i == ni and np.linalg.norm(xy - nxy) < conf["min_separation_sigmas"] * max(s, ns)
               for ni, nxy, ns in near):
            continue
        return i, k, int(pid[j])
    return None


def sfm_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None) -> Quads:
    """Up to ``n`` quadruplets from an SfM scene: P1, P2 two observations of one 3D point in two
    images (each with its own SIFT scale and angle), P3 an observation of another point, P4 a
    keypoint-free place in P2's image."""
    conf = merge_options(default_conf, conf or {})
    obs = _observations(scene, conf)
    img, kp, pid = obs
    if len(img) == 0:
        return Quads.empty()
    order = np.argsort(pid, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(pid[order])) + 1, len(order)]
    cand_a, cand_b, cand_p = [], [], []
    for s, e in zip(starts[:-1], starts[1:]):
        members = order[s:e]
        pairs = [(a, b) for ai, a in enumerate(members) for b in members[ai + 1:] if img[a] != img[b]]
        if not pairs:
            continue
        for t in rng.permutation(len(pairs))[: conf["max_pairs_per_point"]]:
            a, b = pairs[t]
            if rng.random() < 0.5:
                a, b = b, a
            cand_a.append(a)
            cand_b.append(b)
            cand_p.append(pid[a])
    cand_a, cand_b, cand_p = (np.array(v, np.int64) for v in (cand_a, cand_b, cand_p))
    chosen = spread(cand_p, len(cand_p), rng)
    rows = []
    for c in chosen:
        if len(rows) >= n:
            break
        a, b = int(cand_a[c]), int(cand_b[c])
        ia, ka, ib, kb = int(img[a]), int(kp[a]), int(img[b]), int(kp[b])
        near = [(ia, scene.keypoints[ia][ka], scene.sigmas[ia][ka]), (ib, scene.keypoints[ib][kb], scene.sigmas[ib][kb])]
        other = _other_point(scene, obs, int(cand_p[c]), near, conf, rng)
        free = free_location(scene.keypoints[ib], scene.sigmas[ib], scene.sizes[ib], conf, rng)
        if other is None or free is None:
            continue
        i3, k3, p3 = other
        rows.append(((ia, ib, i3, ib),
                     (scene.keypoints[ia][ka], scene.keypoints[ib][kb], scene.keypoints[i3][k3], free[0]),
                     (scene.sigmas[ia][ka], scene.sigmas[ib][kb], scene.sigmas[i3][k3], free[1]),
                     (scene.angles[ia][ka], scene.angles[ib][kb], scene.angles[i3][k3], 0.0),
                     (int(cand_p[c]), p3)))
    return quads_from_rows(rows)


def quads_from_rows(rows) -> Quads:
    if not rows:
        return Quads.empty()
    im, xy, sg, an, pt = zip(*rows)
    return Quads(np.array(im, np.int64), np.array(xy, np.float64), np.array(sg, np.float64),
                 np.array(an, np.float64), np.array(pt, np.int64))


def webcam_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None) -> Quads:
    """Up to ``n`` quadruplets from a fixed camera: P1 a stable keypoint of one image, P2 the same
    (registered) pixel, scale and angle in another image where it is re-detected, P3 another stable
    keypoint cut from P2's image, P4 a keypoint-free place of P2's image."""
    conf = merge_options(default_conf, conf or {})
    sep = conf["min_separation_sigmas"]
    cand_i, cand_k, cells = [], [], []
    for i in range(len(scene)):
        ok = (scene.point_ids[i] >= 0) & inside(scene.keypoints[i], scene.sigmas[i], scene.sizes[i],
                                                 conf["border_sigmas"])
        for k in np.flatnonzero(ok):
            ref = scene.keypoints[i][k] - scene.offsets[i]
            cand_i.append(i)
            cand_k.append(int(k))
            cells.append(int(ref[1] // 3) * 100000 + int(ref[0] // 3))
    if not cand_i:
        return Quads.empty()
    cand_i, cand_k = np.array(cand_i), np.array(cand_k)
    w, h = scene.sizes[0]
    off = scene.offsets
    rows = []
    for c in spread(np.array(cells), len(cells), rng):
        if len(rows) >= n:
            break
        a, k = int(cand_i[c]), int(cand_k[c])
        others = np.flatnonzero(scene.redetected[a][k])
        if len(others) == 0:
            continue
        b = int(rng.choice(others))
        first, second = (a, b) if rng.random() < 0.5 else (b, a)   # either image may be the detecting one
        s1, t1 = scene.sigmas[a][k], scene.angles[a][k]
        ref1 = scene.keypoints[a][k] - off[a]
        xy1, xy2 = ref1 + off[first], ref1 + off[second]
        if not inside(np.stack([xy1, xy2]), [s1, s1], (w, h), conf["border_sigmas"]).all():
            continue
        third = None
        for _ in range(20):
            j = int(rng.integers(0, len(cand_i)))
            i3, k3 = int(cand_i[j]), int(cand_k[j])
            s3 = scene.sigmas[i3][k3]
            ref3 = scene.keypoints[i3][k3] - off[i3]
            if np.linalg.norm(ref3 - ref1) < max(sep * max(s1, s3), 2 * conf["webcam"]["repeat_px"]):
                continue
            if inside(ref3 + off[second], [s3], (w, h), conf["border_sigmas"])[0]:
                third = (ref3 + off[second], s3, scene.angles[i3][k3], int(scene.point_ids[i3][k3]))
                break
        free = free_location(scene.keypoints[second], scene.sigmas[second], (w, h), conf, rng)
        if third is None or free is None:
            continue
        rows.append(((first, second, second, second), (xy1, xy2, third[0], free[0]), (s1, s1, third[1], free[1]),
                     (t1, t1, third[2], 0.0), (int(scene.point_ids[a][k]), third[3])))
    return quads_from_rows(rows)
