"""INT8 calibration of the TensorRT engines: the data (numpy/torch only, runs anywhere) and the
calibrator TensorRT reads it through (defined only where ``tensorrt`` imports).

    data = calibration_batches("my_images/", patch_batch=1024)   # no TensorRT or GPU needed
    data.batches["det"][0].shape    # (1, 1, 128, 128)  normalised crops of scale-space levels
    data.batches["desc"][0].shape   # (1024, 1, 64, 64) normalised keypoint patches
    calibrator = make_calibrator(data.batches["desc"], cache_file)   # where TensorRT is

What each network is calibrated on: exactly what it is fed at inference. The user's images go
through the localizer's own LIFT extractor (``features.extractors.reference_lift``, handed in: its resize, Lift.detect's levels
normalised with the DET card, Lift.describe's patches normalised with the ORI and DESC cards)
on the PyTorch back end, wrapped so that every input handed to the back end is also kept:
nothing here re-implements the normalisation or the cropping.

- ORI and DESC: patches at the keypoints the pipeline detects (DESC's rotated by ORI's angles),
  a random sample spread evenly over the images, in batches of the engine profile's tuned batch
  size (``opt``, e.g. 1024): the shape TensorRT would calibrate with if no calibration profile
  were given.
- DET: fixed-size crops (``DET_CALIBRATION_HW``, 128×128) of the scale-space levels, not whole
  levels. TensorRT calibrates a dynamic-shape network at ONE input shape, the calibration
  profile's ``opt`` (``IBuilderConfig.set_calibration_profile``: "MIN and MAX values will be
  overwritten by OPT"), while LIFT's levels have 21 shapes per camera. DET is a 25×25
  convolution without padding followed by a pixel-wise GHH, so every output pixel of a crop
  equals the full level's output at that pixel: crops give exactly the activations of
  inference. Levels are chosen in proportion to their number of DET outputs, so the activation
  histograms TensorRT builds weigh the scales as a frame does (the enlarged octave holds most of
  the pixels). Levels smaller than the crop (the coarsest few) cannot be sampled; at 640×480
  (6 of 21 levels) they hold under 1 % of DET's outputs, and ``CalibrationData.det_coverage``
  reports the share that was sampled. The whole largest level (the profile's ``opt``) was not used instead: it
  would calibrate on one scale only, the smoothest.

TensorRT version. This is implicit quantization (``BuilderFlag.INT8`` with an
``IInt8EntropyCalibrator2`` and a calibration profile), TensorRT's documented post-training
route in the versions we target: 8.5/8.6 (JetPack 5.1, 6.0) and 10.x (JetPack 6.1/6.2,
desktops). TensorRT 10.1 deprecated it ("Superseded by explicit quantization": Q/DQ nodes in the
ONNX graph, e.g. from NVIDIA's TensorRT Model Optimizer); it still works through 10.x. We keep
the implicit route because JetPack 6.0's TensorRT 8.6 is a target and because it leaves the
exported graphs (and their operator check, trt_supported_ops.json) unchanged; where a TensorRT
no longer has the calibrator classes, ``make_calibrator`` says so.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import cuda_memory
from .tensorrt_runtime import TensorRTError, available, write_atomic

try:
    import tensorrt as trt
except Exception:  # noqa: BLE001  (not installed, or a wheel without its libnvinfer)
    trt = None

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")
DET_CALIBRATION_HW = (128, 128)
DET_CROPS_PER_IMAGE = 8
MAX_PATCHES = 8192  # per network: 8 batches of 1024
MAX_IMAGES = 100


@dataclass
class CalibrationData:
    """Calibration batches per network ("det", "ori", "desc"), each a list of float32 arrays of one
    shape, and where they came from."""

    batches: dict[str, list[np.ndarray]]
    images: list[Path]
    skipped: list[str] = field(default_factory=list)  # "path: reason"
    det_coverage: float = 0.0  # share of all DET outputs that lie in levels large enough to be sampled

    def summary(self) -> str:
        parts = [f"{name} {len(b)}×{tuple(b[0].shape)}" for name, b in self.batches.items() if b]
        return (f"{len(self.images)} images ({len(self.skipped)} skipped); batches: " + ", ".join(parts)
                + f"; DET crops from levels holding {100 * self.det_coverage:.1f} % of DET's outputs")


def image_paths(images: str | Path | Iterable[str | Path], max_images: int = MAX_IMAGES) -> list[Path]:
    """The image files of a folder (recursively, sorted), a file, or a list; at most ``max_images``,
    spread evenly over the sorted list (a folder of video frames is not sampled at its start only)."""
    if isinstance(images, (str, Path)):
        p = Path(images)
        if p.is_dir():
            paths = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths = [p] if p.is_file() else []
    else:
        paths = [Path(q) for q in images]
    if len(paths) > max_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, max_images).round().astype(int)]
    return paths


class _Recorder:
    """Lift's back end, wrapped: every call goes to the real back end, and a sample of the inputs is kept."""

    def __init__(self, inner: Any, det_hw: tuple[int, int], det_crops: int, patches_per_image: int,
                 rng: np.random.Generator) -> None:
        self.inner, self.det_hw, self.det_crops, self.patches_per_image, self.rng = (
            inner, det_hw, det_crops, patches_per_image, rng)
        self.levels: list[torch.Tensor] = []  # the current image's DET inputs, sampled by end_image()
        self.crops: list[np.ndarray] = []
        self.patches: dict[str, list[np.ndarray]] = {"ori": [], "desc": []}
        self.outputs_sampled = self.outputs_total = 0

    def det(self, level: torch.Tensor) -> torch.Tensor:
        self.levels.append(level)
        return self.inner.det(level)

    def _keep(self, name: str, patches: torch.Tensor) -> None:
        take = min(len(patches), self.patches_per_image)
        if take:
            idx = np.sort(self.rng.choice(len(patches), take, replace=False))
            self.patches[name].append(patches[torch.from_numpy(idx)].float().cpu().numpy())

    def ori(self, patches: torch.Tensor) -> torch.Tensor:
        self._keep("ori", patches)
        return self.inner.ori(patches)

    def desc(self, patches: torch.Tensor) -> torch.Tensor:
        self._keep("desc", patches)
        return self.inner.desc(patches)

    def end_image(self) -> None:
        """Crops of this image's levels, levels drawn in proportion to their DET outputs."""
        from ..nets.det import FILTER_SIZE

        h, w = self.det_hw
        shapes = [tuple(lv.shape[-2:]) for lv in self.levels]
        outputs = np.array([(lh - FILTER_SIZE + 1) * (lw - FILTER_SIZE + 1) for lh, lw in shapes], np.float64)
        fits = np.array([lh >= h and lw >= w for lh, lw in shapes], bool)
        self.outputs_total += int(outputs.sum())
        self.outputs_sampled += int(outputs[fits].sum())
        if fits.any():
            counts = np.zeros(len(shapes), np.int64)
            counts[fits] = self.rng.multinomial(self.det_crops, outputs[fits] / outputs[fits].sum())
            for level, (lh, lw), n in zip(self.levels, shapes, counts):
                for _ in range(n):
                    y, x = int(self.rng.integers(0, lh - h + 1)), int(self.rng.integers(0, lw - w + 1))
                    self.crops.append(np.ascontiguousarray(level[..., y:y + h, x:x + w].float().cpu().numpy()))
        self.levels = []


def calibration_batches(images: str | Path | Iterable[str | Path], *, patch_batch: int = 1024,
                        max_images: int = MAX_IMAGES, det_hw: tuple[int, int] = DET_CALIBRATION_HW,
                        det_crops_per_image: int = DET_CROPS_PER_IMAGE, max_patches: int = MAX_PATCHES,
                        reference: Callable[[], Any], seed: int = 0, progress: bool = False,
                        expected_weights: Mapping[str, str] | None = None) -> CalibrationData:
    """Calibration batches of DET, ORI and DESC from the user's images (see the module's docstring).

    ``reference``: makes the LIFT extractor whose back-end inputs are recorded
    (``features.extractors.reference_lift``: the localizer's options on PyTorch in float32); a
    factory, so that nothing is loaded before the images are found. ``patch_batch``: the
    ORI/DESC batch size (the engine profile's ``opt``); patches that do not fill a last batch are
    left out. ``expected_weights``: network → weights hash of the export being calibrated,
    checked before any image is read. Unreadable images are skipped and listed. ValueError when
    the weights differ or the images give no DET crop or less than one patch batch."""
    from ..images import ImageError, read_image

    paths = image_paths(images, max_images)
    if not paths:
        raise ValueError(f"{images}: no images to calibrate on (looked for {', '.join(IMAGE_SUFFIXES)})")
    extractor = reference()
    for name, digest in (expected_weights or {}).items():
        loaded = extractor.lift.networks[name].sha256
        if loaded != digest:
            raise ValueError(f"{name}: the export was made from weights {digest[:12]}…, LIFT loads "
                             f"{loaded[:12]}… here; calibrate with the exported weights "
                             "(reference_lift({'weights': ...})) or export again")
    recorder = _Recorder(extractor.lift.backend, tuple(det_hw), det_crops_per_image,
                         math.ceil(max_patches / len(paths)), np.random.default_rng(seed))
    extractor.lift.backend = recorder
    used, skipped = [], []
    if progress:
        from tqdm import tqdm

        paths = tqdm(paths, desc="calibration data", unit="image", disable=None)
    for path in paths:
        try:
            extractor(read_image(path))
        except (ImageError, ValueError) as e:
            skipped.append(f"{path}: {e}")
            recorder.levels = []
            continue
        recorder.end_image()
        used.append(Path(path))
    batches: dict[str, list[np.ndarray]] = {"det": recorder.crops}
    for name in ("ori", "desc"):
        parts = recorder.patches[name]
        kept = np.concatenate(parts) if parts else np.zeros((0, 1, 64, 64), np.float32)
        batches[name] = [np.ascontiguousarray(kept[i:i + patch_batch])
                         for i in range(0, len(kept) - patch_batch + 1, patch_batch)]
        if not batches[name]:
            raise ValueError(f"{name.upper()}: the images gave {len(kept)} keypoint patches, fewer than one "
                             f"calibration batch of {patch_batch}; give more (or more textured) images")
    if not batches["det"]:
        raise ValueError(f"DET: no scale-space level of these images is {det_hw[0]}×{det_hw[1]} or larger "
                         f"(images too small: {len(used)} used, {len(skipped)} skipped)")
    coverage = recorder.outputs_sampled / max(recorder.outputs_total, 1)
    return CalibrationData(batches, used, skipped, coverage)


def make_calibrator(batches: Sequence[np.ndarray] | None, cache_file: str | Path,
                    api: cuda_memory.CudaApi | None = None):
    """A TensorRT ``IInt8EntropyCalibrator2`` over ``batches`` that writes its table to
    ``cache_file``; with ``batches`` None, one that only replays ``cache_file``."""
    if trt is None:
        raise TensorRTError(f"INT8 calibration runs inside TensorRT's engine build: {available()[1]}")
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise TensorRTError(f"TensorRT {trt.__version__} has no IInt8EntropyCalibrator2 (implicit INT8, deprecated "
                            "in 10.1, is gone): use fp16, or quantize the ONNX models explicitly (Q/DQ)")
    return EntropyCalibrator(batches, cache_file, api)


if trt is not None and hasattr(trt, "IInt8EntropyCalibrator2"):

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """TensorRT's entropy calibrator 2 (the documented default) over in-memory batches.

        Explicit-batch networks: each batch array carries its own batch dimension and must have
        the calibration profile's ``opt`` shape; ``get_batch_size`` returns 1 (the value for
        explicit batch; the method is deprecated since TensorRT 10.0). TensorRT calls these
        methods from C++, which prints and swallows Python exceptions (a failing ``get_batch``
        would just end calibration early): ``get_batch`` keeps the exception in ``error`` for the
        caller to raise after the build."""

        def __init__(self, batches: Sequence[np.ndarray] | None, cache_file: str | Path,
                     api: cuda_memory.CudaApi | None = None) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # required by the pybind11 trampoline
            self.batches = list(batches or [])
            self.cache_file = Path(cache_file)
            self.served = 0
            self.error: BaseException | None = None
            self.api = api
            if self.api is None and self.batches and cuda_memory.available()[0]:
                self.api = cuda_memory.open_api()
            self.device = cuda_memory.DeviceBuffer(self.api) if self.api else None
            self.stream = cuda_memory.Stream(self.api) if self.api else None
            self.tensor: torch.Tensor | None = None  # without cuda-python/pycuda: the batch in torch's CUDA memory

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.served >= len(self.batches) or self.error is not None:
                return None  # no more data: TensorRT computes the scales
            try:
                if len(names) != 1:
                    raise TensorRTError(f"the calibrator feeds one input, TensorRT asks for {list(names)}")
                batch = np.ascontiguousarray(self.batches[self.served], dtype=np.float32)
                if self.api is None:
                    self.tensor = torch.from_numpy(batch).cuda()
                    torch.cuda.synchronize()  # TensorRT reads it on its own stream
                    ptr = self.tensor.data_ptr()
                else:
                    ptr = self.device.ensure(batch.nbytes)
                    self.stream.upload(ptr, batch)
                    self.stream.synchronize()
            except BaseException as e:  # noqa: BLE001  (TensorRT would swallow it)
                self.error = e
                return None
            self.served += 1
            return [int(ptr)]

        def read_calibration_cache(self) -> bytes | None:
            # Calibrating: never read, so that new images are not replaced by an older table.
            if self.batches or not self.cache_file.is_file():
                return None
            return self.cache_file.read_bytes()

        def write_calibration_cache(self, cache) -> None:
            try:
                write_atomic(self.cache_file, bytes(memoryview(cache)))
            except BaseException as e:  # noqa: BLE001  (TensorRT would swallow it)
                self.error = e
