"""PyTorch back end: the reference implementation, on the CPU or a CUDA device."""
from __future__ import annotations

import copy

import torch

from ..weights import LoadedNetwork


class TorchBackend:
    name = "torch"

    def __init__(self, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256,
                 precision: str = "fp32", det_conv: str | None = None, det_tolerance: float | None = None) -> None:
        """``det_conv``: None runs the DET module as it is (dense 25×25 convolution); ``exact``,
        ``separable``, ``fft`` or ``dense``: ``features.det_separable.FastDET`` in that mode (``exact``:
        the same scores to float rounding through the distinct filters, by the cheaper of torch.fft and
        the dense convolution; ``separable``: within ``det_tolerance``, the score map's largest error as
        a fraction of its range, default 0.003, else exact). ``self.det_note`` says what runs."""
        self.device = torch.device(device)
        self.batch_size = batch_size
        if precision not in ("fp32", "fp16"):
            raise ValueError(f"precision {precision!r}: fp32 or fp16")
        if precision == "fp16" and self.device.type != "cuda":
            raise ValueError("fp16 needs a CUDA device (PyTorch's CPU convolutions have no fast half path)")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        # fp16 works on copies, so that the shared float32 modules (training, other back ends) stay as they are.
        own = copy.deepcopy if precision == "fp16" else (lambda m: m)
        self.det_net, self.ori_net, self.desc_net = (
            own(networks[k].module).to(self.device, self.dtype).eval() for k in ("det", "ori", "desc"))
        self.det_note = "dense 25×25 convolution (the DET module as it is)"
        if det_conv is not None:
            from ..features.det_separable import DEFAULT_TOLERANCE, FastDET

            det = networks["det"]
            self.det_net = FastDET(det.module, det_conv, DEFAULT_TOLERANCE if det_tolerance is None else det_tolerance,
                                   device=self.device, mean=det.mean, std=det.std)
            self.det_note = f"{det_conv}: {self.det_net.describe()}"

    @torch.inference_mode()
    def det(self, level: torch.Tensor) -> torch.Tensor:
        """(1, 1, h, w) normalised level → (h - 24, w - 24) scores (float32)."""
        return self.det_net(level.to(self.device, self.dtype))[0, 0].float()

    def _batched(self, net: torch.nn.Module, patches: torch.Tensor, dim: int) -> torch.Tensor:
        out = torch.empty((len(patches), dim), device=self.device)
        with torch.inference_mode():
            for i in range(0, len(patches), self.batch_size):
                out[i:i + self.batch_size] = net(patches[i:i + self.batch_size].to(self.device, self.dtype)).float()
        return out

    def ori(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 2) (cos, sin)."""
        return self._batched(self.ori_net, patches, 2)

    def desc(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 128)."""
        return self._batched(self.desc_net, patches, 128)
