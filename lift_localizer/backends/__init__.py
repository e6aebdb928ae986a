"""Back ends that run the LIFT networks. Each offers ``det(level)``, ``ori(patches)`` and
``desc(patches)`` on normalised inputs (see ``torch_backend.TorchBackend`` for the shapes)."""
from __future__ import annotations

import importlib.util
import warnings
from typing import TYPE_CHECKING

from .names import BACKEND_NAMES, EXPORT_BACKENDS  # noqa: F401 — re-exported: the names live there, torch-free

if TYPE_CHECKING:  # annotations only: importing weights imports torch, which naming a back end must not
    from ..weights import LoadedNetwork


class BackendUnavailable(ValueError):
    """A back end that this installation or machine cannot run; the message says why."""


def unavailable(name: str) -> str | None:
    """Why back end ``name`` cannot run here ("NAME: reason (what to install)"), or None when it can.
    auto and torch always can: auto falls back to torch."""
    if name in ("auto", "torch"):
        return None
    if name == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            return "onnx: the onnxruntime Python package is not installed (pip install onnxruntime)"
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            return f"onnx: onnxruntime does not import ({e})"
        return None
    if name == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return ("tensorrt: the tensorrt Python package is not installed (JetPack on a Jetson; NVIDIA's "
                    "tensorrt wheels and a CUDA GPU elsewhere)")
        from .tensorrt_backend import available as tensorrt_available

        ok, why = tensorrt_available()
        return None if ok else f"tensorrt: {why}"
    return f"unknown back end {name!r}: choose one of {', '.join(BACKEND_NAMES)}"


def available_backends() -> tuple[str, ...]:
    """The back ends that can run here (auto and torch always; onnx where onnxruntime imports;
    tensorrt where TensorRT imports and a CUDA device exists)."""
    return tuple(name for name in BACKEND_NAMES if unavailable(name) is None)


def __getattr__(name: str) -> tuple[str, ...]:
    # BACKENDS, the back ends that can run here, is worked out on first use and kept: trying
    # TensorRT imports torch and trying onnx imports onnxruntime, which naming a back end must not.
    if name == "BACKENDS":
        if name not in globals():
            globals()[name] = available_backends()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SplitBackend:
    """DET on one back end, ORI and DESC on another: on the CPU, PyTorch's 25×25 convolution is
    faster than ONNX Runtime's and ONNX Runtime's DESC and ORI are 2–4× faster than PyTorch's
    (docs/benchmarks.md, `lift-localizer benchmark`)."""

    name = "auto"

    def __init__(self, det_backend, patch_backend) -> None:
        self.det_backend, self.patch_backend = det_backend, patch_backend
        self.det, self.ori, self.desc = det_backend.det, patch_backend.ori, patch_backend.desc


def make_backend(name: str, networks: dict[str, LoadedNetwork], device: str = "cpu", batch_size: int = 256,
                 model_dir: str | None = None, precision: str | None = None, det_conv: str | None = None,
                 det_tolerance: float | None = None):
    """``precision`` None: the back end's default (fp32 for torch and onnx, fp16 for tensorrt);
    ``int8`` on the CPU (onnx, or auto): DESC quantised on ONNX Runtime (backends/onnx_int8.py).
    ``auto``: TensorRT on a GPU where it exists (torch, with a RuntimeWarning saying why, where its
    engines cannot be made; torch also where ``det_conv`` names a route, which only torch runs),
    torch on other GPUs, and on the CPU torch for DET with ONNX Runtime for ORI and DESC where
    onnxruntime is installed. ``det_conv``, ``det_tolerance``:
    how DET's convolution runs where DET runs on torch (see ``TorchBackend``); ``auto``: ``exact`` on
    the CPU (measured faster or equal, same scores to float rounding), ``measure`` on a GPU (the
    fastest exact route, timed there on the first image)."""
    on_cpu = not str(device).startswith("cuda")
    if name != "auto" and (why := unavailable(name)) is not None:
        raise BackendUnavailable(why)
    if name == "auto":
        if not on_cpu:
            if "tensorrt" in __getattr__("BACKENDS") and det_conv in (None, "auto"):
                try:
                    return _tensorrt(networks, model_dir, precision)
                except (RuntimeError, ValueError, OSError, ImportError) as e:
                    # auto promises a working extractor: an engine that will not parse or build (an
                    # unsupported GPU or TensorRT, a full disk) must not leave the node without a map.
                    warnings.warn(f"back end auto: TensorRT could not be used ({type(e).__name__}: {e}); LIFT "
                                  f"runs on the torch back end on {device} instead (backend tensorrt raises this "
                                  "error instead of falling back)", RuntimeWarning, stacklevel=2)
            name = "torch"
        elif "onnx" in __getattr__("BACKENDS"):
            # DET stays in float32 on torch whatever the precision: int8 is DESC's.
            return SplitBackend(make_backend("torch", networks, device, batch_size, det_conv=det_conv,
                                             det_tolerance=det_tolerance),
                                make_backend("onnx", networks, device, batch_size, model_dir, precision))
        elif precision == "int8":
            raise BackendUnavailable(f"precision int8 on the CPU runs DESC on ONNX Runtime: {unavailable('onnx')}")
        else:
            name = "torch"
    if det_conv == "auto":
        det_conv = None if name != "torch" else "exact" if on_cpu else "measure"
    if det_conv is not None and name != "torch":
        raise ValueError(f"det_conv={det_conv!r} needs DET on the torch back end (auto on the CPU, or torch), "
                         f"not {name!r}")
    if name == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend(networks, device=device, batch_size=batch_size, precision=precision or "fp32",
                            det_conv=det_conv, det_tolerance=det_tolerance)
    if name == "onnx":
        from .onnx_backend import OnnxBackend

        return OnnxBackend(networks, device=device, batch_size=batch_size, model_dir=model_dir,
                           precision=precision or "fp32")
    if name == "tensorrt":
        return _tensorrt(networks, model_dir, precision)
    raise ValueError(f"unknown back end {name!r}: choose one of {', '.join(BACKEND_NAMES)}")


def _tensorrt(networks: dict[str, LoadedNetwork], model_dir: str | None, precision: str | None):
    from .onnx_cache import ensure_export
    from .tensorrt_backend import TensorRTBackend, available as tensorrt_available

    ok, why = tensorrt_available()
    if not ok:
        raise ValueError(f"the tensorrt back end cannot run here: {why}")
    # The export is checked against (or made from) the loaded weights, whose cards normalise the inputs.
    directory, _ = ensure_export(networks, model_dir)
    return TensorRTBackend(directory, precision=precision or "fp16",
                           expected_weights={k: networks[k].sha256 for k in ("det", "ori", "desc")})
