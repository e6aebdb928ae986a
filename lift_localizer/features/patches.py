"""Patches at keypoints, cut by a spatial transformer (affine sampling grid + bilinear sampling).

Differentiable in the image, the centres, the supports and the angles, so training can back-propagate
through it. The grid is built with a matrix product rather than ``affine_grid`` because TensorRT's
ONNX parser has GridSample but not AffineGrid.

Conventions: pixel (0, 0) is the centre of the top-left pixel; an angle θ (radians) is the
direction of the patch's x axis in the image (x right, y down), so the patch is "rotated by θ".
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


_UNIT_GRIDS: dict = {}


def _unit_grid(size: int, device, dtype) -> torch.Tensor:
    """(size*size, 3) homogeneous patch coordinates in [-0.5, 0.5] (pixel centres), x fastest.
    Cached per size, device and dtype (constants: the warm-up before a CUDA graph capture builds them)."""
    key = (size, str(device), dtype)
    if key not in _UNIT_GRIDS:
        _UNIT_GRIDS[key] = _constant(lambda: _make_unit_grid(size, device, dtype))
    return _UNIT_GRIDS[key]


def _constant(make):
    """A cached constant, built as a normal tensor even inside ``torch.inference_mode`` (an inference
    tensor could not be saved for backward when training later uses the same constant)."""
    with torch.inference_mode(False):
        return make()


def _make_unit_grid(size: int, device, dtype) -> torch.Tensor:
    t = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten(), torch.ones_like(xx.flatten())], dim=1)


def crop_patches(
    image: torch.Tensor,
    centers: torch.Tensor,
    supports: torch.Tensor,
    angles: torch.Tensor | None = None,
    size: int = 64,
    batch_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Square patches of side ``supports`` image pixels, centred and rotated, resampled to size×size.

    Args:
        image: (B, C, H, W).
        centers: (N, 2) x, y in pixels.
        supports: (N,) full patch width in pixels.
        angles: (N,) radians, or None for upright patches.
        batch_index: (N,) which image each patch comes from (default: all from image 0).
    Returns:
        (N, C, size, size). Samples outside the image are 0.
    """
    if len(centers) == 0:
        return image.new_zeros((0, image.shape[1], size, size))
    affine = patch_affine(centers.to(image.dtype), supports, angles)
    h, w = image.shape[-2:]
    # Image pixel p → grid_sample's [-1, 1] (align_corners=False): g = (2 p + 1) / W - 1.
    return _sample(image, _grid(affine, 2 / w, 1 / w - 1, 2 / h, 1 / h - 1, size), batch_index)


def patch_affine(centers: torch.Tensor, supports: torch.Tensor, angles: torch.Tensor | None) -> torch.Tensor:
    """(N, 2), (N,), (N,) or None → (N, 2, 3): image pixel = A · (u, v, 1) for patch coordinates
    u, v in [-0.5, 0.5], i.e. centre + R(θ) · support · (u, v)."""
    d = supports.to(centers.dtype)
    if angles is None:
        cos, sin = d, torch.zeros_like(d)
    else:
        cos, sin = torch.cos(angles).to(d.dtype) * d, torch.sin(angles).to(d.dtype) * d
    return torch.stack([torch.stack([cos, -sin, centers[:, 0]], 1), torch.stack([sin, cos, centers[:, 1]], 1)], 1)


def _grid(affine: torch.Tensor, scale_x, offset_x, scale_y, offset_y, size: int) -> torch.Tensor:
    """(N, 2, 3) pixel affines → (N, size, size, 2) grid_sample coordinates g = p · scale + offset per
    axis (numbers, or (N, 1) scales and (N,) offsets: one per patch). The mapping goes into the small
    affine, so the grid itself is written once."""
    rows = []
    for i, scale, offset in ((0, scale_x, offset_x), (1, scale_y, offset_y)):
        row = affine[:, i] * scale
        row[:, 2].add_(offset)
        rows.append(row)
    return _affine_grid(torch.stack(rows, 1), size)


def _affine_grid(affine: torch.Tensor, size: int) -> torch.Tensor:
    """(N, 2, 3) affines in grid_sample's coordinates → (N, size, size, 2) grid, a strided view of
    the (N, 2, size²) product (grid_sample reads strides: no transposing copy of the grid)."""
    unit = _unit_grid(size, affine.device, affine.dtype)                      # (S, 3)
    return torch.matmul(affine, unit.T).transpose(1, 2).unflatten(1, (size, size))


def _sample(image: torch.Tensor, grid: torch.Tensor, batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """(B, C, H, W), (N, size, size, 2) grid → (N, C, size, size), zeros outside."""
    n, (b, c, h, w) = len(grid), image.shape
    source = image[:1].expand(n, c, h, w) if batch_index is None else image[batch_index]
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


_BINOMIAL: dict = {}


def _binomial(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Cached per device: a CUDA graph cannot capture the copy of a constant from the host, so the
    # warm-up run before a capture creates it.
    key = (str(device), dtype)
    if key not in _BINOMIAL:
        _BINOMIAL[key] = _constant(lambda: torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype, device=device) / 16)
    return _BINOMIAL[key]


def blur_downsample(image: torch.Tensor) -> torch.Tensor:
    """One octave down: 5-tap binomial blur, then every other pixel. (B, C, H, W) → (B, C, ⌈H/2⌉, ⌈W/2⌉)."""
    k1 = _binomial(image.device, image.dtype)
    c = image.shape[1]
    x = F.pad(image, (2, 2, 2, 2), mode="replicate")
    x = F.conv2d(x, k1.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    x = F.conv2d(x, k1.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return x[:, :, ::2, ::2]


class PatchSampler:
    """Crops patches from the octave of an image pyramid that suits each patch's resolution.

    Sampling a large support straight from the full image would alias; each patch is cut from the
    finest octave whose pixels are no smaller than the patch's pixels.
    """

    def __init__(self, image: torch.Tensor, size: int = 64, max_octaves: int = 6) -> None:
        self.size = size
        self.octaves = [image]
        for _ in range(max_octaves - 1):
            prev = self.octaves[-1]
            if min(prev.shape[-2:]) < 2 * size:
                break
            self.octaves.append(blur_downsample(prev))
        self._canvas: tuple[torch.Tensor, torch.Tensor] | None = None

    def octave_of(self, supports: torch.Tensor) -> torch.Tensor:
        """(N,) supports in image pixels → (N,) the octave each patch is cut from."""
        spacing = supports / self.size
        return torch.floor(torch.log2(spacing.clamp_min(1.0))).long().clamp(max=len(self.octaves) - 1)

    def __call__(self, centers: torch.Tensor, supports: torch.Tensor,
                 angles: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 2), (N,), (N,) → (N, C, size, size); see crop_patches."""
        octave = self.octave_of(supports)
        parts = []
        for k in torch.unique(octave).tolist():
            idx = torch.nonzero(octave == k).squeeze(1)
            # Octave k keeps every 2^k-th pixel of the blurred image: its pixel j is image pixel 2^k j.
            f = 2.0 ** -k
            parts.append((idx, crop_patches(self.octaves[k], centers[idx] * f, supports[idx] * f,
                                            None if angles is None else angles[idx], self.size)))
        if len(parts) == 1:
            return parts[0][1]
        # Every patch belongs to one octave, so every row is written: no zero fill, and index_copy_
        # rather than boolean indexing (together ~3 ms less per 1000 patches on 2 cores).
        out = self.octaves[0].new_empty((len(centers), self.octaves[0].shape[1], self.size, self.size))
        for idx, patches in parts:
            out.index_copy_(0, idx, patches)
        return out

    def static(self, centers: torch.Tensor, supports: torch.Tensor,
               angles: torch.Tensor | None = None) -> torch.Tensor:
        """The patches of ``__call__`` without waiting for the device (no ``unique``, no boolean
        indexing), for CUDA graphs: the octaves are packed into one canvas, 2 zero pixels apart, and
        every patch is sampled from it through its own octave's scale and offset: one grid and one
        ``grid_sample`` for all patches. Equal to ``__call__`` to float rounding for patches that lie
        inside the image (what ``select_static``'s border test keeps; a patch reaching out of its
        image further than one pixel would read the neighbouring octave instead of zeros)."""
        octave = self.octave_of(supports)
        canvas, table = self._packed()
        t = table[octave]                                   # (N, 4): scale and offset in x, then in y
        affine = patch_affine(centers, supports, angles)
        return _sample(canvas, _grid(affine, t[:, 0:1], t[:, 1], t[:, 2:3], t[:, 3], self.size))

    def _packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(1, C, Hc, Wc) canvas of the octaves and the (octaves, 4) table mapping image pixels to its
        grid_sample coordinates (built once per frame; the table once per image size)."""
        if self._canvas is None:
            base = self.octaves[0]
            corners, (hc, wc), table = _octave_layout(tuple(tuple(o.shape[-2:]) for o in self.octaves),
                                                      base.device, base.dtype)
            canvas = base.new_zeros((1, base.shape[1], hc, wc))
            for o, (x0, y0) in zip(self.octaves, corners):
                canvas[:, :, y0:y0 + o.shape[-2], x0:x0 + o.shape[-1]] = o[:1]
            self._canvas = (canvas, table)
        return self._canvas


_LAYOUTS: dict = {}


def _octave_layout(shapes: tuple[tuple[int, int], ...], device, dtype, gutter: int = 2):
    """Octave 0 at the canvas's top left, the others stacked to its right, ``gutter`` zero pixels
    apart: their corners, the canvas size and, per octave, (2f / Wc, (2 x0 + 1) / Wc - 1, 2f / Hc,
    (2 y0 + 1) / Hc - 1) with f = 2^-k, so that image pixel p is at grid coordinate p · scale + offset.
    Cached (a constant: the warm-up before a CUDA graph capture builds it)."""
    key = (shapes, str(device), dtype)
    if key not in _LAYOUTS:
        (h0, w0), rest = shapes[0], shapes[1:]
        corners, y = [(0, 0)], 0
        for h, _ in rest:
            corners.append((w0 + gutter, y))
            y += h + gutter
        hc, wc = max(h0, y), w0 + (gutter + rest[0][1] if rest else 0)
        rows = [[2 * 2.0 ** -k / wc, (2 * x0 + 1) / wc - 1, 2 * 2.0 ** -k / hc, (2 * y0 + 1) / hc - 1]
                for k, (x0, y0) in enumerate(corners)]
        _LAYOUTS[key] = (corners, (hc, wc), _constant(lambda: torch.tensor(rows, dtype=dtype, device=device)))
    return _LAYOUTS[key]
