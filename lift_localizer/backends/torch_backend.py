"""PyTorch back end: the reference implementation, on the CPU or a CUDA device."""
from __future__ import annotations

import copy
import time

import torch

from ..weights import LoadedNetwork


class TorchBackend:
    name = "torch"

    def __init__(self, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256,
                 precision: str = "fp32", det_conv: str | None = None, det_tolerance: float | None = None) -> None:
        """``det_conv``: None runs the DET module as it is (dense 25×25 convolution); ``exact``,
        ``separable``, ``fft`` or ``dense``: ``nets.det_separable.FastDET`` in that mode (``exact``:
        the same scores to float rounding through the distinct filters, by the cheaper of torch.fft and
        the dense convolution; ``separable``: within ``det_tolerance``, the score map's largest error as
        a fraction of its range, default 0.003, else exact); ``measure``: the fastest exact route (the
        module, the distinct filters densely or by FFT), timed by ``tune_det`` on the first image's
        levels (the costs of ``COSTS`` were measured on this project's CPU, not on the user's GPU).
        ``self.det_note`` says what runs."""
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
        self.det_module = self.det_net   # the module as it is, on the device and in the precision
        self.det_note = "dense 25×25 convolution (the DET module as it is)"
        self._det_candidates: dict[str, torch.nn.Module] | None = None
        if det_conv == "measure":
            from ..nets.det_separable import FastDET

            det = networks["det"]
            self._det_candidates = {"module": self.det_net}
            for mode in ("dense", "fft"):
                fast = FastDET(det.module, mode, device=self.device, mean=det.mean, std=det.std)
                self._det_candidates[f"{mode} over {len(fast.bank.unique)} distinct filters"] = fast
            self.det_note = "the DET module until tune_det measures the exact routes"
        elif det_conv is not None:
            from ..nets.det_separable import DEFAULT_TOLERANCE, FastDET

            det = networks["det"]
            self.det_net = FastDET(det.module, det_conv, DEFAULT_TOLERANCE if det_tolerance is None else det_tolerance,
                                   device=self.device, mean=det.mean, std=det.std)
            self.det_note = f"{det_conv}: {self.det_net.describe()}"

    @torch.inference_mode()
    def det(self, level: torch.Tensor) -> torch.Tensor:
        """(1, 1, h, w) normalised level → (h - 24, w - 24) scores (float32)."""
        return self.det_net(level.to(self.device, self.dtype))[0, 0].float()

    @property
    def measuring(self) -> bool:
        """True until ``tune_det`` has chosen DET's route (``det_conv="measure"``)."""
        return bool(self._det_candidates)

    def tune_det(self, levels: list[torch.Tensor], repeat: int = 3) -> str:
        """With ``det_conv="measure"``: time DET over ``levels`` (normalised (1, 1, h, w) inputs) by
        each exact route and keep the fastest; a no-op otherwise, and after the first call. Returns
        ``det_note``."""
        if not self._det_candidates:
            return self.det_note
        sync = (lambda: torch.cuda.synchronize(self.device)) if self.device.type == "cuda" else (lambda: None)
        times = {}
        for name, net in self._det_candidates.items():
            self.det_net = net
            for x in levels:   # warm-up: cuDNN's choice, cuFFT's plans, cached filters
                self.det(x)
            sync()
            t = time.perf_counter()
            for _ in range(repeat):
                for x in levels:
                    self.det(x)
            sync()
            times[name] = (time.perf_counter() - t) / repeat
        best = min(times, key=times.get)
        self.det_net = self._det_candidates[best]
        self._det_candidates = None
        self.det_note = f"measured over {len(levels)} DET input{'s' if len(levels) > 1 else ''}: " + ", ".join(
            f"{k} {1000 * v:.2f} ms" for k, v in times.items()) + f" → {best}"
        return self.det_note

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
