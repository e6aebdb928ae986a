"""DET: the TILDE-style detector of LIFT, one 25×25 convolution with 16 filters and a GHH.

It is purely convolutional (no padding), so it runs on a whole scale-space level at once and a
score at output pixel (i, j) belongs to input pixel (i + 12, j + 12).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .layers import ghh
from .settings import START_SIGMA_FACTOR  # noqa: F401 — re-exported: DET's untrained start

ARCHITECTURE = "lift-det-v1"
FILTER_SIZE = 25
NUM_SUM = 4
NUM_MAX = 4
# Half the width of LIFT's 48-pixel detector input: the scale space resizes the image for scale s
# by HALF_WINDOW / (12 s), LIFT's 23.5 / (12 s) (see scale_space.py).
HALF_WINDOW = (48 - 1) / 2.0


class DET(nn.Module):
    """Score map of one scale-space level.

    Input (B, 1, H, W) normalised grey levels; output (B, 1, H - 24, W - 24).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, NUM_SUM * NUM_MAX, FILTER_SIZE)

    @property
    def margin(self) -> int:
        return FILTER_SIZE // 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return ghh(self.conv(image), NUM_SUM, NUM_MAX)


def laplacian_of_gaussian(size: int, sigma: float) -> torch.Tensor:
    """Scale-normalised, zero-mean Laplacian-of-Gaussian kernel, (size, size), negative centre."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    q = (xx**2 + yy**2) / (2 * sigma**2)
    k = (q - 1) * torch.exp(-q) / (math.pi * sigma**2)
    return (k - k.mean()).float()


def analytic_init(det: DET, sigma_factor: float = 1.0) -> DET:
    """Untrained starting point: |LoG| blob response, the classic scale-space detector.

    The LoG's sigma is ``sigma_factor`` × the keypoint scale s in level pixels (23.5 / 12), so with 1.0 a
    Gaussian blob of standard deviation s in the image peaks at the level of scale s (the closed form
    tests rely on); the shipped start uses ``START_SIGMA_FACTOR``. Written as a GHH:
    group 0 holds (+L, -L, +L, -L), whose max is |L|; the other groups are zero and add nothing.
    """
    sigma = HALF_WINDOW / 12.0 * sigma_factor
    log = laplacian_of_gaussian(FILTER_SIZE, sigma)
    with torch.no_grad():
        det.conv.weight.zero_()
        det.conv.bias.zero_()
        for m in range(NUM_MAX):
            det.conv.weight[m, 0] = log if m % 2 == 0 else -log
    return det
