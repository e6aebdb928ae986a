"""DESC: the LIFT descriptor network (Simo-Serra et al. / Yi et al.), 64×64 patch → 128-D.

conv 7×7×32, tanh, L2-pool 2, subtractive normalisation, conv 6×6×64, tanh, L2-pool 3,
subtractive normalisation, conv 5×5×128, tanh, L2-pool 4. Descriptors are compared with the L2
distance, unnormalised, as in the original.

Two cheaper variants are trained by distillation from the full one, so that their descriptors live
in the same space (``lift-localizer train desc --architecture thin|fast``):

- ``lift-desc-thin-v1``: 16 and 32 channels in the first two convolutions (15 instead of 51 MMAC
  per patch);
- ``lift-desc-fast-v1``: 16 and 64 channels, and the first two convolutions strided by their
  pooling windows (2, then 3) with |tanh| in place of their L2 pooling (6.3 MMAC per patch). On a
  CPU its cost was not in the multiply-adds alone: the full-resolution first layer, its squares and
  pooling took more time than the second convolution (docs/benchmarks.md).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from .layers import l2_pool, subtractive_normalization

ARCHITECTURE = "lift-desc-v1"
# Channels of the first two convolutions, per architecture (the third always gives 128).
WIDTHS = {"lift-desc-v1": (32, 64), "lift-desc-thin-v1": (16, 32), "lift-desc-fast-v1": (16, 64)}
# Architectures whose first two convolutions stride over their pooling windows.
STRIDED = frozenset({"lift-desc-fast-v1"})
# Short names for the command line.
ARCHITECTURE_NAMES = {"full": "lift-desc-v1", "thin": "lift-desc-thin-v1", "fast": "lift-desc-fast-v1"}
# The L2 pooling windows after the first two convolutions (the strides of a strided architecture).
POOLS = (2, 3)
PATCH_SIZE = 64
DIM = 128


def gaussian_kernel(size: int = 5, sigma: float = 1.25) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


class DESC(nn.Module):
    """Input (N, 1, 64, 64) normalised patches; output (N, 128)."""

    def __init__(self, architecture: str = ARCHITECTURE) -> None:
        super().__init__()
        if architecture not in WIDTHS:
            raise ValueError(f"unknown DESC architecture {architecture!r} ({', '.join(WIDTHS)})")
        self.architecture = architecture
        c1, c2 = WIDTHS[architecture]
        self.strided = architecture in STRIDED
        s1, s2 = POOLS if self.strided else (1, 1)
        self.conv1 = nn.Conv2d(1, c1, 7, stride=s1)
        self.conv2 = nn.Conv2d(c1, c2, 6, stride=s2)
        self.conv3 = nn.Conv2d(c2, DIM, 5)
        # The subtractive-normalisation kernels are weights of the model (the released network
        # stores its own), so they live in the state dict.
        self.register_buffer("norm1", gaussian_kernel())
        self.register_buffer("norm2", gaussian_kernel())

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.strided:
            # One sample per pooling window; |tanh| keeps the pooled map's sign (non-negative).
            x = torch.tanh(self.conv1(patches)).abs()  # 64 → 29
            x = subtractive_normalization(x, self.norm1)
            x = torch.tanh(self.conv2(x)).abs()  # 29 → 8
        else:
            x = l2_pool(torch.tanh(self.conv1(patches)), POOLS[0])  # 58 → 29
            x = subtractive_normalization(x, self.norm1)
            x = l2_pool(torch.tanh(self.conv2(x)), POOLS[1])  # 24 → 8
        x = subtractive_normalization(x, self.norm2)
        x = l2_pool(torch.tanh(self.conv3(x)), 4)  # 4 → 1
        return x.flatten(1)


@torch.no_grad()
def pruned(desc: DESC, architecture: str) -> DESC:
    """``desc`` cut to the channel widths of ``architecture``: the second convolution's outputs that
    the third weighs most (L1 norm of the weights reading them), then the first convolution's outputs
    that those weigh most; the kept filters are copied. The start of a distilled DESC: on held-out
    patches the cut network, untrained, keeps most of the full one's matching (docs/training.md),
    where a randomly initialised one starts from nothing. A strided architecture's second and third
    convolutions are scaled by the pooling window's side: an L2 pool of a window of w² similar
    values is w times one of them."""
    out = DESC(architecture)
    c1, c2 = WIDTHS[architecture]
    keep2 = desc.conv3.weight.abs().sum((0, 2, 3)).argsort(descending=True)[:c2].sort().values
    keep1 = desc.conv2.weight[keep2].abs().sum((0, 2, 3)).argsort(descending=True)[:c1].sort().values
    out.conv1.weight.copy_(desc.conv1.weight[keep1])
    out.conv1.bias.copy_(desc.conv1.bias[keep1])
    out.conv2.weight.copy_(desc.conv2.weight[keep2][:, keep1])
    out.conv2.bias.copy_(desc.conv2.bias[keep2])
    out.conv3.weight.copy_(desc.conv3.weight[:, keep2])
    out.conv3.bias.copy_(desc.conv3.bias)
    if out.strided:
        out.conv2.weight.mul_(POOLS[0])
        out.conv3.weight.mul_(POOLS[1])
    out.norm1.copy_(desc.norm1)
    out.norm2.copy_(desc.norm2)
    return out


# Layer codes of the released Torch7 network: 1 convolution, 5 tanh, 4 L2 pooling, 7 subtractive norm.
_REFERENCE_LAYERS = [1, 5, 4, 7, 1, 5, 4, 7, 1, 5, 4]


def load_reference(path: str | Path) -> tuple[DESC, float, float]:
    """Load the DESC weights released with LIFT (HDF5 arrays only, nothing unpickled).

    For checking the architecture and as a quality anchor; never shipped nor used at run time
    (academic licence). Returns the network and the patch mean and std it expects.
    """
    with h5py.File(path, "r") as f:
        layers = list(np.asarray(f["layers"]).ravel())
        if layers != _REFERENCE_LAYERS:
            raise ValueError(f"{path}: unexpected layer list {layers}")
        for name, want in (("l-3-kw", 2), ("l-7-kw", 3), ("l-11-kw", 4)):
            if int(np.asarray(f[name]).ravel()[0]) != want:
                raise ValueError(f"{path}: {name} is not {want}")
        net = DESC()
        state = {
            "conv1.weight": f["l-1-weights"], "conv1.bias": f["l-1-bias"],
            "conv2.weight": f["l-5-weights"], "conv2.bias": f["l-5-bias"],
            "conv3.weight": f["l-9-weights"], "conv3.bias": f["l-9-bias"],
            "norm1": f["l-4-filter"], "norm2": f["l-8-filter"],
        }
        net.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in state.items()})
        mean = float(np.asarray(f["patch-mean"]).ravel()[0])
        std = float(np.asarray(f["patch-std"]).ravel()[0])
    return net.eval(), mean, std
