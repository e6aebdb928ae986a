"""ONNX Runtime back end: the exported graphs (backends/export.py) on the CPU, or on CUDA with
onnxruntime-gpu. Patches are cropped by the caller in PyTorch: GridSample in ONNX Runtime is ~6×
slower than torch's on the CPU.

The graphs come from ``model_dir`` (an existing export, checked against the loaded weights' hashes)
or, by default, are exported on first use into a cache folder keyed by those hashes
(backends/onnx_cache.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..weights import LoadedNetwork
from .onnx_cache import KINDS, ensure_export

PRECISIONS = ("fp32", "int8")


class OnnxBackend:
    name = "onnx"

    def __init__(self, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256,
                 model_dir: str | Path | None = None, threads: int | None = None, precision: str = "fp32") -> None:
        """``precision`` int8: DESC quantised (backends/onnx_int8.py), DET and ORI in float32; CPU only."""
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: the onnx back end runs {' or '.join(PRECISIONS)}")
        if precision == "int8" and str(device).startswith("cuda"):
            raise ValueError("precision int8 on the onnx back end runs on the CPU (INT8 on a GPU: the tensorrt back end)")
        directory, manifest = ensure_export(networks, model_dir)
        files = {kind: directory / manifest["models"][kind]["file"] for kind in KINDS}
        if precision == "int8":
            from .onnx_int8 import KINDS as INT8_KINDS, ensure_int8

            int8_dir, int8_manifest = ensure_int8(networks, model_dir)
            files.update({kind: int8_dir / int8_manifest["models"][kind]["file"] for kind in INT8_KINDS})
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Same thread count as torch, so back ends compare on equal terms.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        # ONNX Runtime's threads otherwise spin for a while after each run, taking the cores from the
        # PyTorch stages that follow (the patch crops, the next frame's DET): measured on 2 cores,
        # desc patches 38–47 → 12–15 ms and LIFT ~480 → ~430 ms, ORI and DESC no slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ValueError("the onnx back end on cuda needs onnxruntime-gpu (CUDAExecutionProvider)")
            providers.insert(0, "CUDAExecutionProvider")
        self.sessions = {kind: ort.InferenceSession(str(path), options, providers=providers)
                         for kind, path in files.items()}
        self.batch_size = batch_size
        self.device = torch.device("cpu")

    def _run(self, kind: str, x: torch.Tensor) -> torch.Tensor:
        session = self.sessions[kind]
        (out,) = session.run(None, {session.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32, copy=False)})
        return torch.from_numpy(out)

    def det(self, level: torch.Tensor) -> torch.Tensor:
        """(1, 1, h, w) normalised level → (h - 24, w - 24) scores."""
        return self._run("det", level)[0, 0]

    def _batched(self, kind: str, patches: torch.Tensor, dim: int) -> torch.Tensor:
        if len(patches) == 0:
            return torch.zeros((0, dim))
        return torch.cat([self._run(kind, patches[i:i + self.batch_size])
                          for i in range(0, len(patches), self.batch_size)])

    def ori(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 2) (cos, sin)."""
        return self._batched("ori", patches, 2)

    def desc(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 128)."""
        return self._batched("desc", patches, 128)
