"""Whether TensorRT can run here, the error it raises, and the atomic writes of what it builds:
what the back end and the INT8 calibration share."""
from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import torch

from . import cuda_memory

MIN_TENSORRT = (8, 5)


class TensorRTError(RuntimeError):
    """TensorRT could not build, load or run an engine; the message says which and why."""


def write_atomic(path: Path, data) -> None:
    # Two processes may build the same engine; each writes a whole file and the last rename wins.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _tensorrt_version(trt) -> tuple[int, int]:
    major, minor = (int(v) for v in trt.__version__.split(".")[:2])
    return major, minor


def available() -> tuple[bool, str]:
    """(True, "TensorRT x.y on <how>") where TensorRT imports and a CUDA device exists, else (False, why)."""
    if importlib.util.find_spec("tensorrt") is None:
        return False, "TensorRT is not installed (no Python module 'tensorrt')"
    try:
        import tensorrt as trt
    except Exception as e:  # a wheel without its libnvinfer, say
        return False, f"TensorRT does not import: {e}"
    if _tensorrt_version(trt) < MIN_TENSORRT:
        return False, f"TensorRT {trt.__version__} is older than 8.5 (no name-based execution API)"
    ok, why = cuda_memory.available()
    if ok:
        return True, f"TensorRT {trt.__version__}, {why}"
    if torch.cuda.is_available():
        return True, f"TensorRT {trt.__version__}, torch CUDA"
    return False, f"no CUDA device for TensorRT ({why}; torch sees none either)"
