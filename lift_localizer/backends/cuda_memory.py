"""Device memory, pinned host memory and streams for the TensorRT back end, without PyTorch's CUDA.

On a Jetson, PyTorch is often a CPU-only build while TensorRT comes from JetPack, so the
TensorRT back end moves CPU tensors to the GPU itself. Two implementations of the same small
interface: NVIDIA's cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.x), the
default, and pycuda where cuda-python is missing. Both use the device's primary context, the one
TensorRT and PyTorch use, so pointers can be shared between them.

    api = open_api()
    stream = Stream(api)
    host, dev = PinnedBuffer(api), DeviceBuffer(api)
    h = host.view((n, 128), np.float32)    # grows only when n grows
    stream.upload(dev.ensure(h.nbytes), h)  # async H2D on the stream
    stream.synchronize()

Buffers are grow-only and meant to be kept across frames: after the first (largest) frame no
call allocates. Async copies are only asynchronous from pinned host memory; from pageable
memory CUDA stages them synchronously, which is correct but slower.
"""
from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

_GRANULE = 1 << 20  # round allocations up to 1 MiB so that slowly growing sizes do not reallocate each time


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's error."""


def _round_up(nbytes: int) -> int:
    return max(_GRANULE, -(-int(nbytes) // _GRANULE) * _GRANULE)


def _import_cudart():
    # cuda-python >= 12 moved the bindings to cuda.bindings; 13 removed the old cuda.cudart path.
    try:
        from cuda.bindings import driver, runtime
    except ImportError:
        from cuda import cuda as driver, cudart as runtime
    return driver, runtime


class CudaPythonApi:
    """NVIDIA cuda-python (runtime API); pointers and stream handles are plain ints."""

    name = "cuda-python"

    def __init__(self) -> None:
        self.driver, self.rt = _import_cudart()

    def _check(self, call: str, result: Any) -> Any:
        # cuda-python returns (error, *values) instead of raising.
        err, *values = result if isinstance(result, tuple) else (result,)
        if int(getattr(err, "value", err)) != 0:
            raise CudaError(f"{call} failed: {getattr(err, 'name', err)}")
        return values[0] if len(values) == 1 else values

    def alloc_device(self, nbytes: int) -> tuple[int, Any]:
        ptr = int(self._check("cudaMalloc", self.rt.cudaMalloc(nbytes)))
        return ptr, ptr

    def free_device(self, owner: Any) -> None:
        self._check("cudaFree", self.rt.cudaFree(owner))

    def alloc_host(self, nbytes: int) -> tuple[np.ndarray, Any]:
        ptr = int(self._check("cudaMallocHost", self.rt.cudaMallocHost(nbytes)))
        array = np.frombuffer((ctypes.c_uint8 * nbytes).from_address(ptr), dtype=np.uint8)
        return array, ptr

    def free_host(self, owner: Any) -> None:
        self._check("cudaFreeHost", self.rt.cudaFreeHost(owner))

    def create_stream(self) -> Any:
        # Non-blocking: no implicit ordering against the legacy default stream that other libraries use.
        return self._check("cudaStreamCreateWithFlags",
                           self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking))

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._check("cudaStreamDestroy", self.rt.cudaStreamDestroy(stream))

    def synchronize(self, stream: Any) -> None:
        self._check("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes, kind, stream))

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes, kind, stream))

    def device_count(self) -> int:
        # Driver API: counting devices this way creates no context (no GPU memory, no start-up cost).
        self._check("cuInit", self.driver.cuInit(0))
        return int(self._check("cuDeviceGetCount", self.driver.cuDeviceGetCount()))

    def device_info(self) -> tuple[str, tuple[int, int]]:
        device = self._check("cudaGetDevice", self.rt.cudaGetDevice())
        props = self._check("cudaGetDeviceProperties", self.rt.cudaGetDeviceProperties(device))
        name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
        return name.strip(), (int(props.major), int(props.minor))


class PyCudaApi:
    """pycuda; device allocations are pycuda objects kept alive by their buffer."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        cuda.init()
        self.cuda = cuda
        self._context = None

    def _ensure_context(self) -> None:
        # The primary context (not pycuda.autoinit's own) so that TensorRT and PyTorch see our pointers.
        if self._context is None:
            import pycuda.autoprimaryctx  # noqa: F401  (pycuda >= 2021.1: retains and pushes the primary context)

            self._context = self.cuda.Context.get_current()

    def alloc_device(self, nbytes: int) -> tuple[int, Any]:
        self._ensure_context()
        allocation = self.cuda.mem_alloc(nbytes)
        return int(allocation), allocation

    def free_device(self, owner: Any) -> None:
        owner.free()

    def alloc_host(self, nbytes: int) -> tuple[np.ndarray, Any]:
        self._ensure_context()
        array = self.cuda.pagelocked_empty(nbytes, np.uint8)
        return array, array

    def free_host(self, owner: Any) -> None:
        owner.base.free()

    def create_stream(self) -> Any:
        self._ensure_context()
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        pass  # pycuda destroys the stream with the object

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()

    def htod_async(self, dst: int, src: np.ndarray, stream: Any) -> None:
        self.cuda.memcpy_htod_async(dst, src, stream)

    def dtoh_async(self, dst: np.ndarray, src: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(dst, src, stream)

    def device_count(self) -> int:
        return int(self.cuda.Device.count())

    def device_info(self) -> tuple[str, tuple[int, int]]:
        self._ensure_context()
        device = self.cuda.Context.get_device()
        return device.name().strip(), tuple(int(v) for v in device.compute_capability())


CudaApi = CudaPythonApi | PyCudaApi
_IMPLEMENTATIONS = {"cuda-python": CudaPythonApi, "pycuda": PyCudaApi}


def open_api(prefer: str | None = None) -> CudaApi:
    """The first implementation that imports and sees a CUDA device: cuda-python, then pycuda.

    Raises CudaError with every reason when none does."""
    order = [prefer] if prefer else list(_IMPLEMENTATIONS)
    reasons = []
    for name in order:
        if name not in _IMPLEMENTATIONS:
            raise ValueError(f"unknown CUDA API {name!r}; expected one of {sorted(_IMPLEMENTATIONS)}")
        try:
            api = _IMPLEMENTATIONS[name]()
            if api.device_count() < 1:
                reasons.append(f"{name}: no CUDA device")
                continue
            return api
        except ImportError as e:
            reasons.append(f"{name} is not installed ({e.name or e})")
        except Exception as e:  # a driver without a GPU raises from the first call; say so, do not crash
            reasons.append(f"{name}: {e}")
    raise CudaError("no usable CUDA API: " + "; ".join(reasons))


def available() -> tuple[bool, str]:
    """(True, "cuda-python") or (False, why not), without allocating anything on the GPU."""
    try:
        return True, open_api().name
    except CudaError as e:
        return False, str(e)


class DeviceBuffer:
    """Device memory of at least ``nbytes``; reused, reallocated only when a larger size is asked for."""

    def __init__(self, api: CudaApi, nbytes: int = 0) -> None:
        self.api = api
        self.ptr = 0
        self.nbytes = 0
        self._owner: Any = None
        if nbytes:
            self.ensure(nbytes)

    def ensure(self, nbytes: int) -> int:
        """Grow to hold ``nbytes`` (contents are not kept); returns the device pointer."""
        if nbytes > self.nbytes:
            self.free()
            size = _round_up(nbytes)
            self.ptr, self._owner = self.api.alloc_device(size)
            self.nbytes = size
        return self.ptr

    def free(self) -> None:
        if self._owner is not None:
            self.api.free_device(self._owner)
        self.ptr, self.nbytes, self._owner = 0, 0, None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass  # interpreter shutdown: CUDA may already be gone


class PinnedBuffer:
    """Page-locked host memory (needed for truly asynchronous copies), grow-only like DeviceBuffer."""

    def __init__(self, api: CudaApi, nbytes: int = 0) -> None:
        self.api = api
        self._array = np.zeros(0, np.uint8)
        self._owner: Any = None
        if nbytes:
            self.ensure(nbytes)

    @property
    def nbytes(self) -> int:
        return self._array.nbytes

    def ensure(self, nbytes: int) -> None:
        if nbytes > self.nbytes:
            self.free()
            self._array, self._owner = self.api.alloc_host(_round_up(nbytes))

    def view(self, shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
        """A C-contiguous array of ``shape`` over the start of the buffer (grown if needed).

        The view is invalidated by the next ``ensure``/``view`` that grows the buffer."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.ensure(nbytes)
        return self._array[:nbytes].view(dtype).reshape(shape)

    def free(self) -> None:
        if self._owner is not None:
            self.api.free_host(self._owner)
        self._array, self._owner = np.zeros(0, np.uint8), None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Stream:
    """A CUDA stream with async copies between host arrays and device pointers."""

    def __init__(self, api: CudaApi) -> None:
        self.api = api
        self._stream = api.create_stream()

    @property
    def handle(self) -> int:
        """The cudaStream_t as an int, what TensorRT's execute_async_v3 takes."""
        return self.api.stream_handle(self._stream)

    def upload(self, dst: int, src: np.ndarray) -> None:
        """Enqueue host → device; ``src`` (C-contiguous) must stay alive and untouched until synchronize()."""
        if not src.flags.c_contiguous:
            # A contiguous temporary could be freed before the copy runs.
            raise ValueError("upload needs a C-contiguous source")
        self.api.htod_async(int(dst), src, self._stream)

    def download(self, dst: np.ndarray, src: int) -> None:
        """Enqueue device → host into ``dst`` (C-contiguous), valid after synchronize()."""
        if not dst.flags.c_contiguous:
            raise ValueError("download needs a C-contiguous destination")
        self.api.dtoh_async(dst, int(src), self._stream)

    def synchronize(self) -> None:
        self.api.synchronize(self._stream)

    def __del__(self) -> None:
        try:
            self.api.destroy_stream(self._stream)
        except Exception:
            pass
