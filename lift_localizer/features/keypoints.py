"""Keypoints from DET score maps: non-maximum suppression over position and scale, the edge test,
sub-pixel and sub-scale refinement, the border margin, and the top N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .atlas import INVALID, Atlas, atlas_for
from ..nets.scale_space import SUPPORT_PER_SCALE, Level

# Smallest curvature of a maximum, relative to its score (float32 rounding through resizing and DET is ~1e-6).
FLAT_CURVATURE = 1e-4


@dataclass
class Detections:
    """Keypoints in image pixels: xy (N, 2), scale (N,) = sigma in pixels, score (N,), level (N,)."""

    xy: np.ndarray
    scale: np.ndarray
    score: np.ndarray
    level: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32),
                   np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.score)


def pad_score_map(score: torch.Tensor, level: Level) -> torch.Tensor:
    """Valid-convolution score map (h - 2m, w - 2m) → (level.height, level.width), INVALID around."""
    mh = (level.height - score.shape[-2]) // 2
    mw = (level.width - score.shape[-1]) // 2
    return F.pad(score, (mw, level.width - score.shape[-1] - mw, mh, level.height - score.shape[-2] - mh),
                 value=INVALID)


def _resample(score: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A level's score map sampled on another level's grid (both cover the whole image)."""
    return F.interpolate(score[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]


def _sample_at(score: torch.Tensor, u: torch.Tensor, v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear values of a level's score map at points (u, v) given in pixels of another level of
    ``size`` (both levels cover the whole image)."""
    h, w = size
    grid = torch.stack([(2 * u + 1) / w - 1, (2 * v + 1) / h - 1], dim=-1).view(1, 1, -1, 2)
    return F.grid_sample(score[None, None], grid.to(score.dtype), mode="bilinear",
                         align_corners=False)[0, 0, 0]


def _parabola_offset(fm: torch.Tensor, f0: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Offset of the vertex of the parabola through (-1, fm), (0, f0), (1, fp), clipped to ±0.5."""
    curv = fm - 2 * f0 + fp
    off = torch.where(curv < 0, 0.5 * (fm - fp) / curv.clamp(max=-1e-12), torch.zeros_like(f0))
    return off.clamp(-0.5, 0.5)


def max3x3(score: torch.Tensor) -> torch.Tensor:
    """(H, W) → (H, W): the maximum over each pixel's 3×3 neighbourhood (outside the map: -inf), as
    ``max_pool2d(·, 3, 1, 1)`` but by shifted maxima: on the CPU max_pool2d spends ~4 ms on one
    554×312 map, this 0.2 ms."""
    p = F.pad(score, (1, 1, 1, 1), value=-math.inf)
    rows = torch.maximum(torch.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return torch.maximum(torch.maximum(rows[:-2], rows[1:-1]), rows[2:])


def _tests_and_refinement(at, f0, uf, vf, below, above, log_scale, step, refine: bool, edge_limit: float):
    """SIFT's edge test and the parabolic refinement, elementwise on candidates.

    ``at(dy, dx)`` gives the score map at each candidate's (v + dy, u + dx); the same code serves
    gathered candidates of one level (the CPU path; ``log_scale`` and ``step`` numbers, ``step`` None at
    the first and last levels) and every pixel of the atlas (``select_static``; per-pixel tensors).
    Returns keep, u, v, log scale.
    """
    fl, fr, fu, fd = at(0, -1), at(0, 1), at(-1, 0), at(1, 0)
    dxx, dyy = fl - 2 * f0 + fr, fu - 2 * f0 + fd
    dxy = (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1)) / 4
    tr, det = dxx + dyy, dxx * dyy - dxy * dxy
    # A maximum must curve by more than float rounding: a flat area (a blank wall, saturated sky) scores
    # a constant wherever DET responds to brightness, and its rounding noise is not a keypoint.
    curved = -tr > FLAT_CURVATURE * f0.abs()
    keep = (det > 0) & curved & (tr * tr < edge_limit * det) & torch.isfinite(tr)
    log_s = torch.zeros_like(f0) + log_scale   # a number, or a tensor per candidate (the atlas)
    if refine:
        if step is not None:
            log_s = log_s + step * _parabola_offset(below(), f0, above())
        uf = uf + _parabola_offset(fl, f0, fr)
        vf = vf + _parabola_offset(fu, f0, fd)
    return keep, uf, vf, log_s


def _level_maxima(scores: list[torch.Tensor], levels: list[Level], score_threshold: float | None,
                  edge_threshold: float, refine: bool):
    """Per level, the maxima that pass the tests, refined and gathered by ``nonzero``: tuples
    (x, y, scale, score, level) of tensors in image pixels."""
    thr = -math.inf if score_threshold is None else score_threshold
    edge_limit = (edge_threshold + 1) ** 2 / edge_threshold
    log_scales = [math.log2(lv.scale) for lv in levels]
    # Each level is compared with its neighbours' 3×3 maxima taken on their own pixel grids and then
    # resampled onto its grid, so a peak that falls between two of its samples is not missed (else
    # one blob survives at two adjacent levels).
    pooled = [max3x3(m) for m in scores]
    out = []
    for i, (cur, lv) in enumerate(zip(scores, levels)):
        size = (lv.height, lv.width)
        neighbourhood = pooled[i]
        for j in (i - 1, i + 1):
            if 0 <= j < len(levels):
                neighbourhood = torch.maximum(neighbourhood, _resample(pooled[j], size))
        is_max = (cur >= neighbourhood) & (cur > thr) & (cur > INVALID / 2)
        # Finite differences need the 8 neighbours: drop the outermost ring.
        is_max[[0, -1], :] = False
        is_max[:, [0, -1]] = False
        v, u = torch.nonzero(is_max, as_tuple=True)
        if len(v) == 0:
            continue
        interior = 0 < i < len(levels) - 1
        step = (log_scales[i + 1] - log_scales[i - 1]) / 2 if interior else None
        uf, vf = u.to(cur.dtype), v.to(cur.dtype)
        keep, uf, vf, log_s = _tests_and_refinement(
            lambda dy, dx: cur[v + dy, u + dx], cur[v, u], uf, vf,
            lambda: _sample_at(scores[i - 1], u.to(cur.dtype), v.to(cur.dtype), size),
            lambda: _sample_at(scores[i + 1], u.to(cur.dtype), v.to(cur.dtype), size),
            log_scales[i], step, refine, edge_limit)
        f0, uf, vf, log_s = cur[v, u][keep], uf[keep], vf[keep], log_s[keep]
        x, y = lv.to_image(uf, vf)
        out.append((x, y, torch.exp2(log_s), f0, torch.full_like(f0, i)))
    return out


def _inside(x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, image_size: tuple[int, int],
            border_ratio: float) -> torch.Tensor:
    height, width = image_size
    margin = border_ratio * s
    return (x + 0.5 >= margin) & (x + 0.5 + margin <= width) & (y + 0.5 >= margin) & (y + 0.5 + margin <= height)


# Candidates select_static refines per keypoint asked for: the best maxima by score, before the edge,
# curvature and border tests. On 36 real images (webcam, TUM, KITTI, fox, ScanNet, LLFF, Sacré-Cœur;
# 1000 keypoints) the 1000th passing maximum ranked at most 2330th.
CANDIDATES_PER_KEYPOINT = 8


def select_static(
    cur: torch.Tensor,
    atlas: Atlas,
    image_size: tuple[int, int],
    max_keypoints: int = 1000,
    score_threshold: float | None = None,
    edge_threshold: float = 10.0,
    refine: bool = True,
    border_ratio: float = SUPPORT_PER_SCALE / 2 * math.sqrt(2),
    candidates: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``detect`` with shapes that depend only on the levels and ``max_keypoints``, no
    synchronisation with the host (a CUDA graph can capture it), and a few dozen operations whatever
    the number of levels: every pixel of every level is tested at once, in the levels' ``Atlas``
    (``atlas_for(tuple(levels), device)``: the fixed-shape plan of an image size, built outside).
    ``cur``: the (Ha, Wa) canvas of the levels' score maps (``atlas.pack(maps)``, or one DET pass
    over the packed levels, ``Lift.score_canvas``), INVALID where DET did not run.

    Only the scale-space maximum test runs over the whole canvas (a dozen passes over memory, which
    is what an embedded GPU's time goes to); the edge and curvature tests and the refinement run on
    the best ``candidates`` maxima (default ``CANDIDATES_PER_KEYPOINT × max_keypoints``), gathered.
    The result is ``detect``'s unless more than ``candidates − max_keypoints`` of them fail the tests.

    Returns:
        xy (K, 2), scale (K,), score (K,), level (K,) on the scores' device, best first, with
        K = min(max_keypoints, pixels of the atlas); entries past the last keypoint score -inf
        (their other values are finite but meaningless).
    """
    thr = -math.inf if score_threshold is None else score_threshold
    edge_limit = (edge_threshold + 1) ** 2 / edge_threshold
    pooled = F.max_pool2d(cur[None, None], 3, 1, 1)[0, 0]
    minus_inf = torch.full_like(cur, -math.inf)
    # The neighbours' 3×3 maxima on their own grids, read at each pixel's position (see _level_maxima).
    neighbourhood = torch.maximum(pooled, torch.maximum(
        torch.where(atlas.has_below, atlas.from_neighbour(pooled, "below"), minus_inf),
        torch.where(atlas.has_above, atlas.from_neighbour(pooled, "above"), minus_inf)))
    is_max = (cur >= neighbourhood) & (cur > thr) & (cur > INVALID / 2) & atlas.interior
    flat = cur.flatten()
    n = min(len(flat), candidates or CANDIDATES_PER_KEYPOINT * max_keypoints)
    score, idx = torch.topk(torch.where(is_max, cur, minus_inf).flatten(), n)
    # Padding candidates (fewer maxima than n) may sit on the canvas's edge: point them at a pixel
    # whose 3×3 neighbourhood exists (level 0's, off its ring); their score stays -inf.
    x0, y0 = atlas.corners[0]
    idx = torch.where(torch.isfinite(score), idx, torch.full_like(idx, (y0 + 1) * atlas.width + x0 + 1))
    level, u, v, log_scale, step, ratio_x, ratio_y = atlas.at(idx)
    window = flat[idx[:, None] + atlas.window]   # (n, 9): the 3×3 neighbourhoods, row by row

    def neighbour(which: str) -> torch.Tensor:
        grid = atlas.neighbour_grid(which, idx).to(cur.dtype)
        return F.grid_sample(cur[None, None], grid, mode="bilinear", align_corners=False)[0, 0, 0]

    keep, uf, vf, log_s = _tests_and_refinement(
        lambda dy, dx: window[:, (dy + 1) * 3 + dx + 1], window[:, 4], u, v,
        lambda: neighbour("below"), lambda: neighbour("above"), log_scale, step, refine, edge_limit)
    x, y = (uf + 0.5) / ratio_x - 0.5, (vf + 0.5) / ratio_y - 0.5
    s = torch.exp2(log_s)
    sc = torch.where(keep & _inside(x, y, s, image_size, border_ratio), score, torch.full_like(score, -math.inf))
    top, order = torch.topk(sc, min(max_keypoints, n))
    return torch.stack([x[order], y[order]], 1), s[order], top, level[order]


def _to_detections(xy, s, sc, lvl) -> Detections:
    xy, s, sc, lvl = (t.cpu().numpy() for t in (xy, s, sc, lvl))
    return Detections(xy.astype(np.float32), s.astype(np.float32), sc.astype(np.float32), lvl.astype(np.int64))


def detect(
    scores: list[torch.Tensor],
    levels: list[Level],
    image_size: tuple[int, int],
    max_keypoints: int = 1000,
    score_threshold: float | None = None,
    edge_threshold: float = 10.0,
    refine: bool = True,
    border_ratio: float = SUPPORT_PER_SCALE / 2 * math.sqrt(2),
    dense: bool | None = None,
) -> Detections:
    """Select keypoints from per-level score maps.

    Args:
        scores: per level, a (level.height, level.width) map, INVALID where DET did not run.
        levels: the matching levels, ordered by increasing scale (uniform in log scale).
        image_size: (H, W) of the original image.
        score_threshold: keep maxima above it (None: any).
        edge_threshold: SIFT's r: reject when tr(H)^2 / det(H) >= (r + 1)^2 / r, or det(H) <= 0.
        border_ratio: keep keypoints whose centre is at least border_ratio × scale from the image
            border; the default fits the descriptor support rotated by any angle.
        dense: test every pixel and select once at the end (``select_static``: no per-level
            ``nonzero``, which waits for the GPU: on CUDA this is several times faster), or gather
            each level's maxima first (less arithmetic: faster on the CPU). None: dense on CUDA.
    Returns:
        the best ``max_keypoints`` detections by score, best first.
    """
    if not levels:
        return Detections.empty()
    if dense is None:
        dense = scores[0].is_cuda
    args = (score_threshold, edge_threshold, refine)
    if dense:
        atlas = atlas_for(tuple(levels), str(scores[0].device))
        xy, s, sc, lvl = select_static(atlas.pack(scores), atlas, image_size, max_keypoints, *args, border_ratio)
        found = torch.isfinite(sc)
        return _to_detections(xy[found], s[found], sc[found], lvl[found])
    out = _level_maxima(scores, levels, *args)
    if not out:
        return Detections.empty()
    x, y, s, sc, lvl = (torch.cat(a) for a in zip(*out))
    inside = _inside(x, y, s, image_size, border_ratio)
    x, y, s, sc, lvl = (t[inside] for t in (x, y, s, sc, lvl))
    order = torch.argsort(-sc, stable=True)[:max_keypoints]
    return _to_detections(torch.stack([x, y], 1)[order], s[order], sc[order], lvl[order])
