"""Keypoints from DET score maps: non-maximum suppression over position and scale, the edge test,
sub-pixel and sub-scale refinement, the border margin, and the top N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .scale_space import SUPPORT_PER_SCALE, Level

# Score of pixels where DET's window does not fit; finite so that interpolation never makes NaNs.
INVALID = -1e30


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


def detect(
    scores: list[torch.Tensor],
    levels: list[Level],
    image_size: tuple[int, int],
    max_keypoints: int = 1000,
    score_threshold: float | None = None,
    edge_threshold: float = 10.0,
    refine: bool = True,
    border_ratio: float = SUPPORT_PER_SCALE / 2 * math.sqrt(2),
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
    Returns:
        the best ``max_keypoints`` detections by score, best first.
    """
    if not levels:
        return Detections.empty()
    height, width = image_size
    thr = -math.inf if score_threshold is None else score_threshold
    edge_limit = (edge_threshold + 1) ** 2 / edge_threshold
    log_scales = [math.log2(lv.scale) for lv in levels]
    # Each level is compared with its neighbours' 3×3 maxima taken on their own pixel grids and then
    # resampled onto its grid, so a peak that falls between two of its samples is not missed (else
    # one blob survives at two adjacent levels).
    pooled = [F.max_pool2d(m[None, None], 3, 1, 1)[0, 0] for m in scores]
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
        f0 = cur[v, u]
        fl, fr, fu, fd = cur[v, u - 1], cur[v, u + 1], cur[v - 1, u], cur[v + 1, u]
        dxx, dyy = fl - 2 * f0 + fr, fu - 2 * f0 + fd
        dxy = (cur[v + 1, u + 1] - cur[v + 1, u - 1] - cur[v - 1, u + 1] + cur[v - 1, u - 1]) / 4
        tr, det = dxx + dyy, dxx * dyy - dxy * dxy
        keep = (det > 0) & (tr * tr < edge_limit * det) & torch.isfinite(tr)
        v, u, f0 = v[keep], u[keep], f0[keep]
        uf, vf = u.to(cur.dtype), v.to(cur.dtype)
        log_s = torch.full_like(f0, log_scales[i])
        if refine and len(v):
            if 0 < i < len(levels) - 1:
                step = (log_scales[i + 1] - log_scales[i - 1]) / 2
                below = _sample_at(scores[i - 1], uf, vf, size)
                above = _sample_at(scores[i + 1], uf, vf, size)
                log_s = log_s + step * _parabola_offset(below, f0, above)
            uf = uf + _parabola_offset(cur[v, u - 1], f0, cur[v, u + 1])
            vf = vf + _parabola_offset(cur[v - 1, u], f0, cur[v + 1, u])
        # Stay on the device until the end: one transfer instead of several per level.
        x, y = lv.to_image(uf, vf)
        out.append((x, y, torch.exp2(log_s), f0, torch.full_like(f0, i)))
    if not out:
        return Detections.empty()
    x, y, s, sc, lvl = (torch.cat(a) for a in zip(*out))
    margin = border_ratio * s
    inside = (x + 0.5 >= margin) & (x + 0.5 + margin <= width) & (y + 0.5 >= margin) & \
             (y + 0.5 + margin <= height)
    x, y, s, sc, lvl = (t[inside] for t in (x, y, s, sc, lvl))
    order = torch.argsort(-sc, stable=True)[:max_keypoints]
    xy, s, sc, lvl = (t.cpu().numpy() for t in (torch.stack([x, y], 1)[order], s[order], sc[order], lvl[order]))
    return Detections(xy.astype(np.float32), s.astype(np.float32), sc.astype(np.float32), lvl.astype(np.int64))
