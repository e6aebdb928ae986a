"""The levels of a scale space packed side by side into one image, for the fixed-shape NMS.

Non-maximum suppression level by level costs a few dozen small operations per level: about 3100
PyTorch operations for the paper's 21 levels, each a kernel launch on a GPU, where launches, not
arithmetic, set the time. Packed into one canvas with a 2-pixel gutter between levels (each level's
edge replicated once, so that a 3×3 window or a bilinear read at a level's edge sees only that
level's values, as per-level padding would give), every level is tested at once: a 3×3 max pool
and one ``grid_sample`` per neighbouring level (the neighbour's scores at each pixel's position in
it, exactly what ``F.interpolate`` onto the level's grid gives) find the scale-space maxima; the
finite differences and refinement then read only the best of them (``at``, ``window``,
``neighbour_grid``) — a few dozen operations in all.
Shelf packing keeps the canvas within about 1.5× the levels' total area.

    atlas = Atlas(levels, device)
    canvas = atlas.pack(score_maps)                    # (Ha, Wa)
    below = atlas.from_neighbour(canvas, "below")      # level i-1's scores on level i's pixels
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from ..nets.det import FILTER_SIZE
from ..nets.scale_space import Level

# The score of pixels where DET's window does not fit (keypoints.py imports it from here); finite so that
# interpolation never makes NaNs.
INVALID = -1e30
DET_MARGIN = FILTER_SIZE // 2   # DET's 25×25 window reaches 12 pixels from its centre


def _shelves(levels: list[Level], gutter: int) -> tuple[list[tuple[int, int]], int, int]:
    """Top-left corners of the levels in a canvas as wide as the two largest side by side, and its size."""
    width = sum(lv.width + gutter for lv in levels[:2]) + gutter
    corners, x, y, shelf = [], gutter, gutter, 0
    for lv in levels:
        if x + lv.width + gutter > width:
            x, y, shelf = gutter, y + shelf + gutter, 0
        corners.append((x, y))
        x += lv.width + gutter
        shelf = max(shelf, lv.height)
    return corners, y + shelf + gutter, width


class Atlas:
    """Layout and per-pixel constants of the packed scale space (all tensors on ``device``).

    Per canvas pixel (what passes over the whole canvas need): ``level`` (int64, -1 in the gutters),
    ``interior`` (inside a level, off its outermost ring), ``has_below``, ``has_above``; ``scored``:
    where DET's window lies inside the pixel's own level (``score_margin`` pixels from its edges), so
    that one DET pass over the packed levels scores exactly what a pass per level scores. What only
    selected pixels need comes from ``at`` (per-level tables: ~20 bytes a pixel less, 130 MB for the
    paper's 21 levels at 640×480).
    """

    def __init__(self, levels: list[Level], device: torch.device | str = "cpu", gutter: int = 2,
                 score_margin: int = DET_MARGIN) -> None:
        if not levels:
            raise ValueError("no levels to pack")
        if gutter < 2:
            raise ValueError("the gutter holds each level's replicated edge and a separation: at least 2 pixels")
        self.levels, self.device = list(levels), torch.device(device)
        self.corners, self.height, self.width = _shelves(self.levels, gutter)
        n = len(levels)
        level = np.full((self.height, self.width), -1, np.int64)
        u = np.zeros(level.shape, np.float32)
        v = np.zeros(level.shape, np.float32)
        interior = np.zeros(level.shape, bool)
        scored = np.zeros(level.shape, bool)
        m = score_margin
        for i, (lv, (x0, y0)) in enumerate(zip(levels, self.corners)):
            scored[y0 + m:y0 + lv.height - m, x0 + m:x0 + lv.width - m] = True
            level[y0:y0 + lv.height, x0:x0 + lv.width] = i
            u[y0:y0 + lv.height, x0:x0 + lv.width] = np.arange(lv.width)[None, :]
            v[y0:y0 + lv.height, x0:x0 + lv.width] = np.arange(lv.height)[:, None]
            interior[y0 + 1:y0 + lv.height - 1, x0 + 1:x0 + lv.width - 1] = True
        inside = level >= 0
        li = np.where(inside, level, 0)
        log_scales = np.log2([lv.scale for lv in levels])
        steps = np.zeros(n)
        steps[1:-1] = (log_scales[2:] - log_scales[:-2]) / 2
        t = lambda a, dtype=torch.float32: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self.level = t(level, torch.int64)
        # Per level: corner x, y, log2 scale, step (half the log-scale distance between its neighbours,
        # 0 at the first and last levels: no sub-scale refinement there), level pixels per image pixel in x, y.
        self._per_level = t(np.stack([[c[0] for c in self.corners], [c[1] for c in self.corners], log_scales,
                                      steps, [lv.ratio_x for lv in levels], [lv.ratio_y for lv in levels]], 1))
        # Flat-index offsets of a pixel's 3×3 window, row by row.
        self.window = t([dy * self.width + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1)], torch.int64)
        self.interior = t(interior, torch.bool)
        self.scored = t(scored, torch.bool)
        self.has_below = t(inside & (li > 0), torch.bool)
        self.has_above = t(inside & (li < n - 1), torch.bool)
        self._grids = {"below": t(self._grid(li, u, v, inside & (li > 0), -1)),
                       "above": t(self._grid(li, u, v, inside & (li < n - 1), +1))}

    def at(self, index: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(N,) flat canvas indices of pixels inside levels → per pixel: level (int64), u, v (its pixel
        in that level), log2 scale, step, ratio_x, ratio_y (level pixels per image pixel); (N,) each."""
        level = self.level.flatten()[index]
        x0, y0, log_scale, step, ratio_x, ratio_y = self._per_level[level].unbind(1)
        u = (index % self.width).to(x0.dtype) - x0
        v = torch.div(index, self.width, rounding_mode="floor").to(y0.dtype) - y0
        return level, u, v, log_scale, step, ratio_x, ratio_y

    def neighbour_grid(self, which: str, index: torch.Tensor) -> torch.Tensor:
        """(N,) flat canvas indices → (1, 1, N, 2): where ``from_neighbour`` reads for those pixels."""
        return self._grids[which].view(-1, 2)[index].view(1, 1, -1, 2)

    def _grid(self, li: np.ndarray, u: np.ndarray, v: np.ndarray, valid: np.ndarray, offset: int) -> np.ndarray:
        """(1, Ha, Wa, 2) grid_sample coordinates of each pixel's position in level li + offset.

        ``F.interpolate(bilinear, align_corners=False)`` reads level j at (u + 0.5) w_j / w_i - 0.5,
        clamped to [0, w_j - 1] (and likewise in y): the same point in the canvas, normalised by its size.
        """
        sizes = np.array([(lv.height, lv.width) for lv in self.levels], np.float64)
        corners = np.array(self.corners, np.float64)
        j = np.clip(li + offset, 0, len(self.levels) - 1)
        hi, wi = sizes[li, 0], sizes[li, 1]
        hj, wj = sizes[j, 0], sizes[j, 1]
        xs = np.clip((u + 0.5) * wj / wi - 0.5, 0, wj - 1) + corners[j, 0]
        ys = np.clip((v + 0.5) * hj / hi - 0.5, 0, hj - 1) + corners[j, 1]
        # Pixels with no such neighbour read themselves (finite; masked by has_below / has_above).
        own_x = u + corners[li, 0]
        own_y = v + corners[li, 1]
        xs, ys = np.where(valid, xs, own_x), np.where(valid, ys, own_y)
        grid = np.stack([(2 * xs + 1) / self.width - 1, (2 * ys + 1) / self.height - 1], axis=-1)
        return grid[None]

    def pack(self, maps: list[torch.Tensor], fill: float = INVALID, replicate_edges: bool = True) -> torch.Tensor:
        """Per level a (level.height, level.width) map → the (Ha, Wa) canvas: each level with its edge
        replicated one pixel out (unless ``replicate_edges`` is False: where nothing reads the
        gutters, one operation less per level), ``fill`` in the rest of the gutters."""
        canvas = torch.full((self.height, self.width), fill, dtype=maps[0].dtype, device=maps[0].device)
        for m, lv, (x0, y0) in zip(maps, self.levels, self.corners):
            if replicate_edges:
                canvas[y0 - 1:y0 + lv.height + 1, x0 - 1:x0 + lv.width + 1] = \
                    F.pad(m[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
            else:
                canvas[y0:y0 + lv.height, x0:x0 + lv.width] = m
        return canvas

    def from_neighbour(self, canvas: torch.Tensor, which: str) -> torch.Tensor:
        """(Ha, Wa) → (Ha, Wa): at each pixel of level i, level i - 1's (``below``) or i + 1's
        (``above``) values at the same image position, bilinearly interpolated."""
        grid = self._grids[which].to(canvas.dtype)
        return F.grid_sample(canvas[None, None], grid, mode="bilinear", align_corners=False)[0, 0]


@functools.lru_cache(maxsize=16)
def atlas_for(levels: tuple[Level, ...], device: str) -> Atlas:
    """The atlas of these levels on ``device``, built once (outside any CUDA graph capture: its
    constants are copied from the host)."""
    return Atlas(list(levels), device)
