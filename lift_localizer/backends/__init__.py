"""Back ends that run the LIFT networks. Each offers ``det(level)``, ``ori(patches)`` and
``desc(patches)`` on normalised inputs (see ``torch_backend.TorchBackend`` for the shapes)."""
from __future__ import annotations

from ..weights import LoadedNetwork


def available_backends() -> tuple[str, ...]:
    """The back ends that can run here (torch always; onnx where onnxruntime imports)."""
    names = ["torch"]
    try:
        import onnxruntime  # noqa: F401
        names.append("onnx")
    except ImportError:
        pass
    return tuple(names)


BACKENDS = available_backends()


def make_backend(name: str, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256,
                 model_dir: str | None = None, precision: str = "fp32"):
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(networks, device=device, batch_size=batch_size, precision=precision)
    if name == "onnx" and "onnx" in BACKENDS:
        from .onnx_backend import OnnxBackend

        return OnnxBackend(networks, device=device, batch_size=batch_size, model_dir=model_dir)
    raise ValueError(f"unknown back end {name!r}; available here: {', '.join(BACKENDS)}")
