"""TensorRT back end: engines built from the ONNX export, cached on disk, run on a CUDA stream.

    backend = TensorRTBackend("exported/", precision="fp16", levels_hw=levels_hw_for_image(480, 640))
    scores = backend.det(level)        # (1, 1, h, w) → (h - 24, w - 24)

Written against TensorRT's name-based API (``num_io_tensors``, ``set_input_shape``,
``set_tensor_address``, ``execute_async_v3``), which exists from TensorRT 8.5 on: JetPack 5.1
(8.5), JetPack 6.0 (8.6) and JetPack 6.1/6.2 and desktops (10.x) run the same code. Older
TensorRT (binding indices, ``execute_async_v2``) is refused with a message instead.

Optimisation profiles. DET gets ONE dynamic profile: min = the smallest level (per side), opt =
max = the largest. Not one profile per level: a 640×480 camera has 13 levels (21 with the paper preset), and as many profiles
would multiply the build time (minutes each on a Jetson) and the engine size for a network
that is a single 25×25 convolution plus a GHH, whose kernels hardly depend on the size; the
largest level dominates the run time, so it is the shape tuned for. ORI and DESC: batches 1 to
``max_batch``, tuned for ``max_batch`` (a frame usually brings the full keypoint budget).

Memory. A CUDA torch input is used in place: its ``data_ptr()`` is handed to TensorRT, the
output is a torch CUDA tensor, and the work is enqueued on torch's current stream, so it is
ordered with the surrounding torch code and nothing is copied or synchronised. A CPU input
goes through grow-only pinned and device buffers (``cuda_memory``) on the back end's own
stream: one H2D copy, the engine, one D2H copy, one synchronisation per call, and no
allocation once the largest frame has been seen.

Engine cache. Engines depend on the GPU, TensorRT's version, the precision, the profile and the
weights; ``engine_cache_key`` hashes all of them (and the ONNX file and, for INT8, the
calibration cache) and names the engine file, so a change of any rebuilds instead of loading a
stale or incompatible engine.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cuda_memory
from .tensorrt_runtime import TensorRTError, available, write_atomic
from .export import read_manifest
from ..weights import file_sha256
from .names import ENGINE_PRECISIONS as PRECISIONS

log = logging.getLogger(__name__)

NETWORKS = ("det", "ori", "desc")
PATCH_SHAPE = (1, 64, 64)
DET_MARGIN = 24  # DET's 25×25 convolution without padding: output = input - 24 per side
# Bumped when the build settings below change, so that engines built with the old ones are not reused.
ENGINE_CACHE_FORMAT = 1
WORKSPACE_BYTES = 1 << 30  # scratch memory tactics may use; bounded for Jetsons, whose GPU shares the RAM
# Without levels_hw: any level from the smallest DET accepts to 2560 pixels a side: a 640×480
# camera's largest level is 940×1253, a 1280×720 one's (the extractor's resize_max) 1410×2507;
# pass levels_hw_for_image(...) to tune for one camera.
DEFAULT_LEVELS_HW = ((DET_MARGIN + 3, DET_MARGIN + 3), (2560, 2560))

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]  # (min, opt, max)


# ---------------------------------------------------------------- pure Python: profiles, manifest, cache key


def det_profile(levels_hw: Iterable[tuple[int, int]]) -> Profile:
    """(min, opt, max) input shapes (1, 1, H, W) covering every level (h, w); tuned for the largest."""
    levels = [(int(h), int(w)) for h, w in levels_hw]
    if not levels:
        raise ValueError("levels_hw is empty: DET needs at least one level shape")
    small = [hw for hw in levels if min(hw) <= DET_MARGIN]
    if small:
        raise ValueError(f"levels {small} are too small for DET (more than {DET_MARGIN} pixels a side needed)")
    lo = (1, 1, min(h for h, _ in levels), min(w for _, w in levels))
    hi = (1, 1, max(h for h, _ in levels), max(w for _, w in levels))
    return lo, hi, hi


def batch_profile(max_batch: int) -> Profile:
    """(min, opt, max) patch-batch shapes (N, 1, 64, 64) for N in 1..max_batch, tuned for max_batch."""
    if max_batch < 32 or max_batch % 32:
        # Batches start at multiples of max_batch; ORI's rows are 8 bytes and TensorRT wants
        # 256-byte aligned tensor addresses.
        raise ValueError(f"max_batch must be a positive multiple of 32, got {max_batch}")
    return (1, *PATCH_SHAPE), (max_batch, *PATCH_SHAPE), (max_batch, *PATCH_SHAPE)


def levels_hw_for_image(height: int, width: int, conf: Mapping[str, Any] | None = None) -> list[tuple[int, int]]:
    """The DET level shapes LIFT uses for an image of this size (``conf``: Lift's options)."""
    from ..nets.det import FILTER_SIZE
    from ..nets.scale_space import DEFAULT_LEVELS, make_levels, scales_for

    scales = scales_for(height, width, {**DEFAULT_LEVELS, **(conf or {})})
    return [(lv.height, lv.width) for lv in make_levels(height, width, scales, min_size=FILTER_SIZE + 2)]


def load_manifest(manifest_dir: str | Path) -> dict:
    """Read and check ``manifest.json`` of an export (``lift-localizer export --output DIR``)."""
    root = Path(manifest_dir)
    path = root / "manifest.json"
    try:
        manifest = read_manifest(root)
    except ValueError as e:
        raise TensorRTError(str(e)) from None
    models = manifest.get("models")
    problems = []
    for name in NETWORKS:
        entry = models.get(name) if isinstance(models, dict) else None
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            problems.append(f"no model entry for {name!r}")
        elif not (root / entry["file"]).is_file():
            problems.append(f"{name}: {entry['file']} is missing")
        elif not isinstance(entry.get("weights_sha256"), str):
            problems.append(f"{name}: no weights_sha256")
    if problems:
        raise TensorRTError(f"{path}: " + "; ".join(problems))
    return manifest


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def engine_cache_key(*, network: str, gpu_name: str, compute_capability: tuple[int, int], tensorrt_version: str,
                     precision: str, profile: Profile, weights_sha256: str, onnx_sha256: str = "",
                     calibration_sha256: str = "") -> str:
    """Hex SHA-256 naming one engine: everything an engine is specific to, and nothing else.

    TensorRT engines run only on the GPU model (compute capability) and the exact TensorRT
    version they were built with; the precision, the profile's shapes and the weights change the
    engine itself; the ONNX file's hash covers a re-export of the same weights (another opset or
    graph), the calibration cache's hash a new INT8 calibration."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
    return _digest({
        "format": ENGINE_CACHE_FORMAT,
        "network": network,
        "gpu": " ".join(gpu_name.split()),
        "compute_capability": [int(v) for v in compute_capability],
        "tensorrt": tensorrt_version,
        "precision": precision,
        "profile": [[int(d) for d in shape] for shape in profile],
        "weights_sha256": weights_sha256,
        "onnx_sha256": onnx_sha256,
        "calibration_sha256": calibration_sha256 if precision == "int8" else "",
    })


def calibration_cache_key(*, network: str, gpu_name: str, compute_capability: tuple[int, int],
                          tensorrt_version: str, weights_sha256: str, onnx_sha256: str) -> str:
    """Hex SHA-256 naming one INT8 calibration table: keyed like the engines (GPU, TensorRT version,
    weights, ONNX file), less what the table does not depend on (precision, profile).

    The table holds a scale per tensor of the network, so a new export or new weights need a new
    calibration. The GPU and the TensorRT version are in the key conservatively: calibration runs
    inside an engine build on the machine that will run the engines, so the table is made there
    anyway, and a table that TensorRT refused would leave an INT8 build with no data. The images
    are not in the key (the back end cannot know them): calibrating again replaces the table, and
    the engine key, which hashes the table, changes with it."""
    return _digest({
        "format": ENGINE_CACHE_FORMAT,
        "kind": "int8-calibration",
        "network": network,
        "gpu": " ".join(gpu_name.split()),
        "compute_capability": [int(v) for v in compute_capability],
        "tensorrt": tensorrt_version,
        "weights_sha256": weights_sha256,
        "onnx_sha256": onnx_sha256,
    })


def calibration_file_name(network: str, key: str) -> str:
    return f"{network}-int8-{key[:24]}.calib"


def engine_file_name(network: str, precision: str, key: str) -> str:
    return f"{network}-{precision}-{key[:24]}.engine"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lift_localizer" / "tensorrt"


def engine_hash_path(path: Path) -> Path:
    """Where the hash of a cached engine is kept, beside it."""
    return path.with_name(path.name + ".sha256")


def write_engine(path: Path, data) -> None:
    """Cache an engine with the hash of its bytes, which ``read_engine`` checks before TensorRT sees them."""
    write_atomic(path, data)
    write_atomic(engine_hash_path(path), (hashlib.sha256(data).hexdigest() + "\n").encode())


def read_engine(path: Path) -> bytes | None:
    """A cached engine's bytes where they are the ones ``write_engine`` wrote; None (with a warning
    where a file is there) when the engine is missing, has no recorded hash or another one: it is
    then built again. A deserialised engine runs as native code, so a changed file is never loaded."""
    if not path.is_file():
        return None
    try:
        want = engine_hash_path(path).read_text().strip()
    except (OSError, UnicodeDecodeError):
        log.warning("%s: cached engine without its recorded hash; building it again", path)
        return None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != want:
        log.warning("%s: cached engine differs from the one built (its hash); building it again", path)
        return None
    return data


# ---------------------------------------------------------------- TensorRT


_LOGGER = None


def _trt():
    """The tensorrt module and the process's one logger (TensorRT expects a single logger)."""
    global _LOGGER
    import tensorrt as trt

    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return trt, _LOGGER


def build_engine(onnx_path: Path, profile: Profile, precision: str = "fp16", calibrator: Any = None,
                 calibration_shape: Shape | None = None) -> bytes:
    """Parse an ONNX model, build and serialise an engine for one optimisation profile.

    ``precision``: "fp32"; "fp16" (FP16 kernels where faster, FP32 elsewhere); "int8" (INT8
    with FP16 fallback; needs ``calibrator``, an IInt8Calibrator, and ``calibration_shape``,
    the fixed input shape of its batches)."""
    trt, logger = _trt()
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x must be told.
    flags = 0 if _tensorrt_version(trt)[0] >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT's ONNX parser refused the model: {errors}")
    if network.num_inputs != 1:
        raise TensorRTError(f"{onnx_path}: expected one input, the model has {network.num_inputs}")
    input_name = network.get_input(0).name
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(input_name, *profile)
    config.add_optimization_profile(opt_profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator is None or calibration_shape is None:
            raise ValueError("INT8 needs a calibrator and its calibration shape (see calibrate())")
        # Implicit quantization: the calibrator gives the activation ranges, TensorRT picks INT8
        # kernels where faster (FP16 elsewhere). Deprecated since TensorRT 10.1 in favour of Q/DQ
        # graphs, still supported through 10.x; see int8_calibration's docstring.
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
        # Dynamic shapes: TensorRT calibrates at the calibration profile's opt shape (it overwrites
        # min and max with opt), which must be the shape of every calibration batch.
        calib_profile = builder.create_optimization_profile()
        calib_profile.set_shape(input_name, calibration_shape, calibration_shape, calibration_shape)
        if not config.set_calibration_profile(calib_profile):
            raise TensorRTError(f"{onnx_path}: TensorRT refused the calibration profile {calibration_shape}")
    elif precision != "fp32":
        raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: TensorRT could not build a {precision} engine (see its log above)")
    return bytes(memoryview(serialized))


class _EngineRunner:
    """One deserialised engine with one execution context; a single float32 input and output."""

    def __init__(self, engine: Any, name: str, profile: Profile, api: cuda_memory.CudaApi | None) -> None:
        trt, _ = _trt()
        self.engine, self.name, self.profile, self.api = engine, name, profile, api
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise TensorRTError(f"{name}: expected one input and one output, the engine has {inputs} and {outputs}")
        wrong = [n for n in names if engine.get_tensor_dtype(n) != trt.float32]
        if wrong:
            raise TensorRTError(f"{name}: tensors {wrong} are not float32")
        self.input, self.output = inputs[0], outputs[0]
        if api is not None:
            self.stream = cuda_memory.Stream(api)
            self.host_in, self.host_out = cuda_memory.PinnedBuffer(api), cuda_memory.PinnedBuffer(api)
            self.dev_in, self.dev_out = cuda_memory.DeviceBuffer(api), cuda_memory.DeviceBuffer(api)

    def _set_shape(self, shape: Shape) -> Shape:
        if not self.context.set_input_shape(self.input, shape):
            lo, _, hi = self.profile
            raise TensorRTError(f"{self.name}: input shape {shape} is outside the engine's profile {lo}..{hi}"
                                + (" (build with levels_hw for this camera)" if self.name == "det" else ""))
        return tuple(self.context.get_tensor_shape(self.output))

    def _enqueue(self, in_ptr: int, out_ptr: int, stream: int) -> None:
        if not (self.context.set_tensor_address(self.input, in_ptr)
                and self.context.set_tensor_address(self.output, out_ptr)):
            raise TensorRTError(f"{self.name}: TensorRT refused a tensor address (alignment?)")
        if not self.context.execute_async_v3(stream):
            raise TensorRTError(f"{self.name}: execute_async_v3 failed (see TensorRT's log)")

    def run(self, x: torch.Tensor, chunk: int) -> torch.Tensor:
        """(N, ...) float32 → (N, ...) output, in batches of at most ``chunk``; on x's device. More
        than ``chunk`` rows run as equal batches (zero rows pad the last), so that every call of a
        frame has one shape: a CUDA graph can then capture them all."""
        x = x.to(torch.float32).contiguous()
        n = len(x)
        count, size = equal_chunks(n, chunk)
        if count * size > n:
            x = torch.cat([x, x.new_zeros((count * size - n, *x.shape[1:]))])
        if x.is_cuda:
            out = self._run_cuda(x, size)
        elif self.api is None:  # no cuda-python/pycuda: let torch move the data
            out = self._run_cuda(x.cuda(), size).cpu()
        else:
            out = self._run_host(x, size)
        return out[:n]

    def _run_cuda(self, x: torch.Tensor, size: int) -> torch.Tensor:
        # Zero copy: TensorRT reads and writes torch's memory, on torch's stream.
        stream = torch.cuda.current_stream(x.device).cuda_stream
        shape = self._set_shape((size, *x.shape[1:]))
        out = torch.empty((len(x), *shape[1:]), dtype=torch.float32, device=x.device)
        for i in range(0, len(x), size):
            self._enqueue(x[i:i + size].data_ptr(), out[i:i + size].data_ptr(), stream)
        return out

    def _run_host(self, x: torch.Tensor, size: int) -> torch.Tensor:
        n = len(x)
        host_in = self.host_in.view(tuple(x.shape), np.float32)
        np.copyto(host_in, x.numpy())
        dev_in = self.dev_in.ensure(host_in.nbytes)
        self.stream.upload(dev_in, host_in)
        shape = self._set_shape((size, *x.shape[1:]))
        host_out = self.host_out.view((n, *shape[1:]), np.float32)
        dev_out = self.dev_out.ensure(host_out.nbytes)
        row_in, row_out = host_in.nbytes // n, host_out.nbytes // n
        for i in range(0, n, size):
            self._enqueue(dev_in + i * row_in, dev_out + i * row_out, self.stream.handle)
        self.stream.download(host_out, dev_out)
        self.stream.synchronize()
        return torch.from_numpy(host_out.copy())  # the pinned buffer is reused by the next call


def equal_chunks(n: int, chunk: int, align: int = 32) -> tuple[int, int]:
    """How to run n rows in batches of at most ``chunk``: (count, size), all batches of one size. One
    batch of n when n ≤ chunk; else the fewest batches, each a multiple of ``align`` rows (a multiple
    of 32 keeps every batch's output 256-byte aligned, as TensorRT wants; ``chunk`` is one too)."""
    if n <= chunk:
        return 1, n
    count = -(-n // chunk)
    return count, min(chunk, -(-n // (count * align)) * align)


def _device_info(api: cuda_memory.CudaApi | None) -> tuple[str, tuple[int, int]]:
    if api is not None:
        return api.device_info()
    device = torch.cuda.current_device()
    return torch.cuda.get_device_name(device), tuple(torch.cuda.get_device_capability(device))


class TensorRTBackend:
    """LIFT's three networks as TensorRT engines; the interface of ``TorchBackend``.

    Args:
        manifest_dir: a directory written by ``lift-localizer export`` (manifest.json, *.onnx).
        precision: "fp16" (default), "fp32" or "int8" (needs the calibration tables that
            ``calibrate`` writes; ``lift-localizer export --backend tensorrt --precision int8
            --calibration-images DIR`` runs it).
        cache_dir: where engines (and INT8 calibration tables) live; default
            ``$XDG_CACHE_HOME/lift_localizer/tensorrt``.
        levels_hw: the DET level shapes (h, w) to cover, e.g. ``levels_hw_for_image(480, 640)``;
            default: any level up to 2560 pixels a side.
        max_batch: largest ORI/DESC batch per engine call (a multiple of 32); more patches run
            in several calls.
        calibration_dir: where ``calibrate`` wrote the INT8 calibration tables; default ``cache_dir``.
        expected_weights: network → weights hash that the export must have been made from (the
            pipeline normalises inputs with these weights' cards).
        cuda_api: "cuda-python" or "pycuda" for CPU inputs; default the first that works.
    """

    name = "tensorrt"

    def __init__(self, manifest_dir: str | Path, precision: str = "fp16", cache_dir: str | Path | None = None,
                 levels_hw: Sequence[tuple[int, int]] | None = None, max_batch: int = 1024,
                 calibration_dir: str | Path | None = None, expected_weights: Mapping[str, str] | None = None,
                 cuda_api: str | None = None) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; expected one of {PRECISIONS}")
        ok, why = available()
        if not ok:
            raise TensorRTError(f"the TensorRT back end cannot run here: {why}")
        self.root = Path(manifest_dir)
        self.manifest = load_manifest(self.root)
        self.precision = precision
        self.max_batch = int(max_batch)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.calibration_dir = Path(calibration_dir) if calibration_dir is not None else self.cache_dir
        for name, digest in (expected_weights or {}).items():
            exported = self.manifest["models"].get(name, {}).get("weights_sha256")
            if name in NETWORKS and exported != digest:
                raise TensorRTError(f"{self.root}: {name} was exported from weights {str(exported)[:12]}…, but the "
                                    f"pipeline loaded {digest[:12]}…; export again from the same weights")
        try:
            self.api = cuda_memory.open_api(cuda_api)
        except cuda_memory.CudaError as e:
            if not torch.cuda.is_available():
                raise TensorRTError(str(e)) from None
            self.api = None  # CPU inputs go through torch's CUDA instead
        self.profiles = {"det": det_profile(levels_hw or DEFAULT_LEVELS_HW),
                         "ori": batch_profile(self.max_batch), "desc": batch_profile(self.max_batch)}
        trt, logger = _trt()
        self._runtime = trt.Runtime(logger)  # kept: engines must not outlive their runtime
        self.engines = {name: _EngineRunner(self._engine(name), name, self.profiles[name], self.api)
                        for name in NETWORKS}

    def calibration_path(self, name: str) -> Path:
        """The INT8 calibration table of ``name`` for this GPU, TensorRT and export (see ``calibrate``)."""
        trt, _ = _trt()
        gpu, cc = _device_info(self.api)
        return _calibration_path(self.calibration_dir, self.root, self.manifest, name, gpu, cc, trt.__version__)

    def engine_path(self, name: str) -> Path:
        """The cache file of ``name``'s engine for this GPU, TensorRT, precision, profile and export."""
        trt, _ = _trt()
        entry = self.manifest["models"][name]
        gpu, cc = _device_info(self.api)
        calibration_sha256 = ""
        if self.precision == "int8":
            table = self.calibration_path(name)
            if not table.is_file():
                raise TensorRTError(
                    f"INT8 needs a calibration of {name.upper()} for this export, GPU and TensorRT, and there is "
                    f"none ({table} is missing): run `lift-localizer export --output {self.root} --backend tensorrt "
                    "--precision int8 --calibration-images DIR` with images like the camera's")
            calibration_sha256 = file_sha256(table)
        key = engine_cache_key(network=name, gpu_name=gpu, compute_capability=cc, tensorrt_version=trt.__version__,
                               precision=self.precision, profile=self.profiles[name],
                               weights_sha256=entry["weights_sha256"],
                               onnx_sha256=file_sha256(self.root / entry["file"]),
                               calibration_sha256=calibration_sha256)
        return self.cache_dir / engine_file_name(name, self.precision, key)

    def _engine(self, name: str) -> Any:
        path = self.engine_path(name)
        cached = read_engine(path)
        if cached is not None:
            engine = self._runtime.deserialize_cuda_engine(cached)
            if engine is not None:
                return engine
            log.warning("%s: TensorRT could not load this cached engine; building it again", path)
        log.warning("building the TensorRT %s engine for %s (%s); this takes a while, once per GPU and version",
                    self.precision, name.upper(), path.name)
        calibrator = calibration_shape = None
        if self.precision == "int8":
            from .int8_calibration import make_calibrator

            # Replays the table calibrate() wrote; it feeds no batches, so the shape is only formal.
            calibrator = make_calibrator(None, self.calibration_path(name))
            calibration_shape = self.profiles[name][1]
        try:
            data = build_engine(self.root / self.manifest["models"][name]["file"], self.profiles[name],
                                self.precision, calibrator, calibration_shape)
        except TensorRTError as e:
            if self.precision != "int8":
                raise
            raise TensorRTError(f"{e}; if TensorRT refused the calibration table {self.calibration_path(name)}, "
                                "calibrate again") from None
        write_engine(path, data)
        engine = self._runtime.deserialize_cuda_engine(data)
        if engine is None:
            raise TensorRTError(f"{path}: TensorRT could not load the engine it just built")
        return engine

    @property
    def det_max_hw(self) -> tuple[int, int]:
        """The largest (h, w) DET's engine takes: a larger packed canvas is scored level by level."""
        return tuple(int(d) for d in self.profiles["det"][2][2:])

    def det(self, level: torch.Tensor) -> torch.Tensor:
        """(1, 1, h, w) normalised level → (h - 24, w - 24) scores (on the level's device)."""
        return self.engines["det"].run(level, 1)[0, 0]

    def _batched(self, name: str, patches: torch.Tensor, dim: int) -> torch.Tensor:
        if len(patches) == 0:
            return torch.zeros((0, dim), dtype=torch.float32, device=patches.device)
        return self.engines[name].run(patches, self.max_batch)

    def ori(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 2) (cos, sin)."""
        return self._batched("ori", patches, 2)

    def desc(self, patches: torch.Tensor) -> torch.Tensor:
        """(N, 1, 64, 64) normalised patches → (N, 128)."""
        return self._batched("desc", patches, 128)


def build_engines(manifest_dir: str | Path, precision: str = "fp16", cache_dir: str | Path | None = None,
                  levels_hw: Sequence[tuple[int, int]] | None = None, max_batch: int = 1024) -> list[Path]:
    """Build the three engines now (or find them in the cache) rather than on first use; their paths."""
    backend = TensorRTBackend(manifest_dir, precision, cache_dir, levels_hw, max_batch)
    return [backend.engine_path(name) for name in NETWORKS]


# ---------------------------------------------------------------- INT8 calibration


def _calibration_path(directory: Path, root: Path, manifest: dict, name: str, gpu: str, cc: tuple[int, int],
                      tensorrt_version: str) -> Path:
    entry = manifest["models"][name]
    key = calibration_cache_key(network=name, gpu_name=gpu, compute_capability=cc, tensorrt_version=tensorrt_version,
                                weights_sha256=entry["weights_sha256"], onnx_sha256=file_sha256(root / entry["file"]))
    return Path(directory) / calibration_file_name(name, key)


def calibrate(manifest_dir: str | Path, images: str | Path | Iterable[str | Path], cache_dir: str | Path | None = None,
              *, levels_hw: Sequence[tuple[int, int]] | None = None, max_batch: int = 1024, max_images: int = 100,
              det_hw: tuple[int, int] | None = None, max_patches: int | None = None,
              reference: Callable[[], Any], progress: bool = False):
    """INT8 calibration on the user's images: one calibration table per network, and the INT8 engines.

    The batches are the exact inputs of each network at inference, from
    ``int8_calibration.calibration_batches`` (DET: ``det_hw`` crops of the scale-space levels,
    default 128×128; ORI/DESC: up to ``max_patches`` keypoint patches in batches of
    ``max_batch``, the profile's tuned size). TensorRT calibrates inside the INT8 engine build, so
    ``reference`` makes the LIFT extractor whose inputs are recorded
    (``features.extractors.reference_lift``). TensorRT calibrates inside the INT8 engine build, so
    this builds the engines for these profiles (``levels_hw``, ``max_batch``) and keeps them in the
    engine cache, where ``TensorRTBackend(precision="int8")`` with the same arguments finds them;
    the tables are written next to them, named by ``calibration_cache_key``.

    Returns ({network: table path}, the CalibrationData used). TensorRTError where TensorRT cannot
    run or calibration fails; ValueError where the images give too little data."""
    from . import int8_calibration as cal

    ok, why = available()
    if not ok:
        raise TensorRTError(f"INT8 calibration runs inside TensorRT's engine build, which cannot run here: {why}")
    trt, _ = _trt()
    root = Path(manifest_dir)
    manifest = load_manifest(root)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    profiles = {"det": det_profile(levels_hw or DEFAULT_LEVELS_HW),
                "ori": batch_profile(max_batch), "desc": batch_profile(max_batch)}
    lo, _, hi = profiles["det"]
    h, w = det_hw or cal.DET_CALIBRATION_HW
    det_hw = (min(max(h, lo[2]), hi[2]), min(max(w, lo[3]), hi[3]))  # inside the DET profile
    data = cal.calibration_batches(
        images, patch_batch=profiles["ori"][1][0], max_images=max_images, det_hw=det_hw,
        max_patches=max_patches or cal.MAX_PATCHES, reference=reference, progress=progress,
        expected_weights={name: manifest["models"][name]["weights_sha256"] for name in NETWORKS})
    api = cuda_memory.open_api() if cuda_memory.available()[0] else None
    gpu, cc = _device_info(api)
    tables = {}
    for name in NETWORKS:
        entry = manifest["models"][name]
        onnx_path = root / entry["file"]
        table = _calibration_path(cache_dir, root, manifest, name, gpu, cc, trt.__version__)
        calibrator = cal.make_calibrator(data.batches[name], table, api)
        engine = build_engine(onnx_path, profiles[name], "int8", calibrator, tuple(data.batches[name][0].shape))
        if calibrator.error is not None:
            raise TensorRTError(f"{name}: feeding calibration batch {calibrator.served + 1} failed: "
                                f"{calibrator.error}") from calibrator.error
        if not calibrator.served or not table.is_file():
            raise TensorRTError(f"{name}: TensorRT took {calibrator.served} calibration batches and wrote "
                                f"{'a' if table.is_file() else 'no'} table at {table}; the engine is not kept")
        key = engine_cache_key(network=name, gpu_name=gpu, compute_capability=cc, tensorrt_version=trt.__version__,
                               precision="int8", profile=profiles[name], weights_sha256=entry["weights_sha256"],
                               onnx_sha256=file_sha256(onnx_path), calibration_sha256=file_sha256(table))
        write_engine(cache_dir / engine_file_name(name, "int8", key), engine)
        tables[name] = table
        log.info("%s: INT8 calibration from %d batches written to %s", name, calibrator.served, table)
    return tables, data
