"""Layers of the LIFT networks that PyTorch does not have: GHH, L2 pooling, subtractive normalisation.

Pure functions on tensors; shapes in the docstrings.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def ghh(x: torch.Tensor, num_sum: int = 4, num_max: int = 4) -> torch.Tensor:
    """Generalised hinging hyperplanes (Yi et al. CVPR 2016, as in the LIFT code).

    Channels are grouped consecutively: channel ``(u * num_sum + s) * num_max + m`` is piece ``m``
    of group ``s`` of output unit ``u``. Each group takes the max over its pieces, then the groups
    are summed with alternating signs (+, -, +, -, ...).

    Args:
        x: (B, U * num_sum * num_max, ...) responses.
    Returns:
        (B, U, ...) activations.
    """
    b, c = x.shape[:2]
    group = num_sum * num_max
    if c % group:
        raise ValueError(f"GHH needs a multiple of {group} channels, got {c}")
    rest = x.shape[2:]
    x = x.reshape(b, c // group, num_sum, num_max, *rest).amax(dim=3)
    sign = torch.ones(num_sum, dtype=x.dtype, device=x.device)
    sign[1::2] = -1
    return (x * sign.view(1, 1, num_sum, *([1] * len(rest)))).sum(dim=2)


def l2_pool(x: torch.Tensor, window: int) -> torch.Tensor:
    """Square root of the SUM of squares over non-overlapping ``window``×``window`` blocks.

    Args:
        x: (B, C, H, W).
    Returns:
        (B, C, H // window, W // window).
    """
    return torch.sqrt(F.avg_pool2d(x * x, window, window) * float(window * window))


def subtractive_normalization(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Torch7's SpatialSubtractiveNormalization with a 2-D kernel.

    One local mean is computed from the channel-averaged map with the kernel normalised to sum 1
    (zero padding), divided by the same kernel applied to an all-ones image (so the border is not
    darkened), and subtracted from every channel.

    Args:
        x: (B, C, H, W).
        kernel: (k, k), odd k.
    Returns:
        (B, C, H, W).
    """
    k = (kernel / kernel.sum()).to(x)[None, None]
    pad = kernel.shape[-1] // 2
    mean = F.conv2d(x.mean(dim=1, keepdim=True), k, padding=pad)
    ones = torch.ones((1, 1) + x.shape[2:], dtype=x.dtype, device=x.device)
    coef = F.conv2d(ones, k, padding=pad)
    return x - mean / coef
