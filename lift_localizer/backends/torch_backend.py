"""PyTorch back end: the reference implementation, on the CPU or a CUDA device."""
from __future__ import annotations

import torch

from ..weights import LoadedNetwork


class TorchBackend:
    name = "torch"

    def __init__(self, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256) -> None:
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.det_net = networks["det"].module.to(self.device).eval()
        self.ori_net = networks["ori"].module.to(self.device).eval()
        self.desc_net = networks["desc"].module.to(self.device).eval()

    @torch.inference_mode()
    def det(self, level: torch.Tensor) -> torch.Tensor:
        """(1, 1, h, w) normalised level → (h - 24, w - 24) scores."""
        return self.det_net(level.to(self.device))[0, 0]

    def _batched(self, net: torch.nn.Module, patches: torch.Tensor, dim: int) -> torch.Tensor:
        out = patches.new_empty((len(patches), dim), device=self.device)
        with torch.inference_mode():
            for i in range(0, len(patches), self.batch_size):
                out[i:i + self.batch_size] = net(patches[i:i + self.batch_size].to(self.device))
        return out

    def ori(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 2) (cos, sin)."""
        return self._batched(self.ori_net, patches, 2)

    def desc(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 128)."""
        return self._batched(self.desc_net, patches, 128)
