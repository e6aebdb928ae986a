"""ORI: the orientation network of Yi et al., CVPR 2016, as used in LIFT.

conv 5×5×10, ReLU, max-pool 2, conv 5×5×20, ReLU, max-pool 2, conv 3×3×50, ReLU, max-pool 2,
fully connected to 100 GHH units (4×4 pieces), fully connected to 2 GHH units → (cos, sin).

A cheaper variant, ``lift-ori-fast-v1``, strides its first two convolutions by 2 instead of
max-pooling them (the same weights' shapes, a quarter of their multiply-adds), and is trained by
distillation from the full one (``lift-localizer train ori --architecture fast --teacher ori``).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from .layers import ghh

ARCHITECTURE = "lift-ori-v1"
ARCHITECTURES = ("lift-ori-v1", "lift-ori-fast-v1")
# Short names for the command line.
ARCHITECTURE_NAMES = {"full": "lift-ori-v1", "fast": "lift-ori-fast-v1"}
PATCH_SIZE = 64
NUM_SUM = 4
NUM_MAX = 4
HIDDEN = 100


class ORI(nn.Module):
    """Input (N, 1, 64, 64) normalised patches; output (N, 2) unit vectors (cos θ, sin θ)."""

    def __init__(self, architecture: str = ARCHITECTURE) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown ORI architecture {architecture!r} ({', '.join(ARCHITECTURES)})")
        self.architecture = architecture
        self.strided = architecture == "lift-ori-fast-v1"
        stride = 2 if self.strided else 1
        self.conv1 = nn.Conv2d(1, 10, 5, stride=stride)
        self.conv2 = nn.Conv2d(10, 20, 5, stride=stride)
        self.conv3 = nn.Conv2d(20, 50, 3)
        # 64 → 60 → 30 → 26 → 13 → 11 → 5 (strided: 64 → 30 → 13 → 11 → 5)
        self.fc1 = nn.Linear(50 * 5 * 5, HIDDEN * NUM_SUM * NUM_MAX)
        self.fc2 = nn.Linear(HIDDEN, 2 * NUM_SUM * NUM_MAX)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.strided:
            x = F.relu(self.conv2(F.relu(self.conv1(patches))))
        else:
            x = F.max_pool2d(F.relu(self.conv1(patches)), 2)
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = ghh(self.fc1(x.flatten(1)), NUM_SUM, NUM_MAX)
        x = ghh(self.fc2(x), NUM_SUM, NUM_MAX)
        # As LIFT: scale by the larger magnitude first so that the normalisation never divides by 0.
        x = x / x.abs().amax(dim=1, keepdim=True).clamp_min(1e-10)
        x = x + torch.where(x >= 0, 1e-3, -1e-3)
        return x / x.norm(dim=1, keepdim=True)


def angle(cos_sin: torch.Tensor) -> torch.Tensor:
    """(N, 2) → (N,) radians in (-π, π]."""
    return torch.atan2(cos_sin[:, 1], cos_sin[:, 0])


@torch.no_grad()
def converted(ori: ORI, architecture: str) -> ORI:
    """``ori``'s weights in ``architecture`` (every architecture has the same tensors): the start of a
    distilled ORI, where a random one would start from arbitrary angles."""
    out = ORI(architecture)
    out.load_state_dict(ori.state_dict())
    return out


def upright_init(ori: ORI, seed: int = 0) -> ORI:
    """Untrained starting point: random hidden layers and an output fixed at angle 0 (upright).

    An untrained ORI with random output weights would give arbitrary angles and make descriptors
    of the same point disagree; a constant 0 behaves like upright SIFT/SURF until ORI is trained.
    """
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(seed)
        for layer in (ori.conv1, ori.conv2, ori.conv3, ori.fc1):
            layer.reset_parameters()
        ori.fc2.weight.zero_()
        bias = torch.zeros(2, NUM_SUM, NUM_MAX)
        bias[0, 0] = 1.0  # cos: group 0 gives 1, the other groups 0; sin: all 0
        ori.fc2.bias.copy_(bias.flatten())
    return ori
