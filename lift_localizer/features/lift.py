"""The LIFT pipeline for inference: DET over the whole scale space, then ORI and DESC at keypoints.

    extractor = Lift({"max_keypoints": 1000})
    features = extractor(gray)          # gray: (H, W) float32 in [0, 255]
"""
from __future__ import annotations

import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

from ..backends import make_backend
from ..weights import LIFT_WEIGHTS, LoadedNetwork, load_networks, untrained_summary
from ..nets import ori as ori_module
from .atlas import DET_MARGIN, INVALID, Atlas
from ..nets.det import FILTER_SIZE
from .keypoints import Detections, detect, pad_score_map
from .lift_graph import GRAPH_BACKENDS, CudaGraphLift, graphable, plan
from .patches import PatchSampler
from .types import Features  # noqa: F401 — its home before features/types.py; old imports still work
# PRESETS and apply_preset with Lift, for the extractors that set LIFT up by preset.
from ..nets.presets import DEFAULT_LEVELS, PRESETS, apply_preset  # noqa: F401
from ..nets.scale_space import SUPPORT_PER_SCALE, Level, make_levels, resize_level, scales_for

default_conf = {
    "max_keypoints": 1000,
    # Explicit scales (sigma in pixels) for the DET levels; None: the paper's, from the fields below.
    "scales": None,
    **DEFAULT_LEVELS,
    # None: the DET card's threshold (scores have the scale of the detector's weights).
    "score_threshold": None,
    "edge_threshold": 10.0,
    "refine": True,
    "patch_size": 64,
    # auto: on the CPU torch for DET and ONNX Runtime for ORI/DESC (faster, measured); on a GPU TensorRT
    # where it exists, else torch. Or name one: torch, onnx, tensorrt.
    "backend": "auto",
    "device": "cpu",
    # onnx / tensorrt: a `lift-localizer export` folder; None: exported on first use into a cache.
    "model_dir": None,
    # None: the back end's default (fp32; tensorrt fp16). "fp16" for torch on CUDA halves memory traffic.
    "precision": None,
    # ORI/DESC patches per network call. None: 256 on the CPU (1000 patches, auto: ORI 79 / 73 ms, DESC
    # 272 / 278 ms at 256 / 1024: no faster), 1024 on CUDA (a call costs the same launches whatever its
    # size; 1024 is also the TensorRT engines' largest batch).
    "batch_size": None,
    # Skip ORI and describe every keypoint upright: for cameras that do not roll (ground robots, fixed
    # cameras), where it matches better (docs/benchmarks.md); a map records it and its queries follow.
    "upright": False,
    # DET's convolution where DET runs on torch (nets/det_separable.py). "auto": "exact" on the CPU
    # (the same scores to float rounding, through the distinct filters and torch.fft or the dense
    # convolution, whichever is measured cheaper), "measure" on CUDA (the fastest exact route, timed on
    # the first image: the module, the distinct filters densely or by FFT); None: the module as it is;
    # "separable": SVD terms of the smallest rank whose score map is within det_tolerance × its range,
    # where that is cheaper than exact (else exact); "fft"; "exact"; "measure".
    "det_conv": "auto",
    "det_tolerance": 0.003,
    # Run LIFT on CUDA as one CUDA graph per image size (features/lift_graph.py: no per-kernel launches
    # from Python, no waits for the device; the same features to float rounding). "auto": on CUDA with
    # the torch or tensorrt back end, falling back to stage by stage (with a warning) where the capture
    # fails; True: required (an error elsewhere); False: stage by stage, with stage timings.
    "cuda_graph": "auto",
    # Weights: names in lift_localizer/weights or path stems, per network.
    "weights": dict(LIFT_WEIGHTS),
}


def unpack(packed: np.ndarray, image_size: tuple[int, int]) -> Features:
    """``lift_graph.static_features``' (K, 133) rows → Features (the rows that hold a keypoint)."""
    rows = packed[np.isfinite(packed[:, 3])]
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Features(f32(rows[:, :2]), f32(2 * rows[:, 2]), f32(rows[:, 4]), f32(rows[:, 3]), f32(rows[:, 5:]),
                    image_size)


class Lift:
    """LIFT feature extractor: ``Lift(conf)(gray) → Features``; see ``default_conf``."""

    def __init__(self, conf: dict | None = None, networks: dict[str, LoadedNetwork] | None = None) -> None:
        unknown = set(conf or {}) - set(default_conf)
        if unknown:
            raise ValueError(f"unknown LIFT options {sorted(unknown)}; known: {sorted(default_conf)}")
        self.conf = {**default_conf, **(conf or {})}
        if int(self.conf["max_keypoints"]) < 0:
            raise ValueError("max_keypoints must be >= 0")
        self.networks = networks if networks is not None else load_networks(self.conf["weights"])
        if self.conf["batch_size"] is None:
            self.conf["batch_size"] = 1024 if str(self.conf["device"]).startswith("cuda") else 256
        self.backend = make_backend(self.conf["backend"], self.networks, self.conf["device"],
                                    self.conf["batch_size"], self.conf["model_dir"], self.conf["precision"],
                                    self.conf["det_conv"], self.conf["det_tolerance"])
        self.device = torch.device(self.conf["device"])
        self._det_tuned = False
        self.graph: CudaGraphLift | None = None
        graph = self.conf["cuda_graph"]
        if graph not in ("auto", True, False):
            raise ValueError(f"cuda_graph {graph!r}: auto, true or false")
        can = self.device.type == "cuda" and self.backend.name in GRAPH_BACKENDS
        if graph is True and not can:
            raise ValueError(f"cuda_graph needs a CUDA device and a back end among {', '.join(GRAPH_BACKENDS)}")
        if graph is True or (graph == "auto" and can):
            self.graph = CudaGraphLift(self)

    def tune_det(self, image: torch.Tensor) -> None:
        """Once, on the first image: let a back end that measures DET's routes (``det_conv: measure``,
        the default on CUDA) time them on this image's levels. Later calls do nothing."""
        backend = getattr(self.backend, "det_backend", self.backend)
        if not getattr(backend, "measuring", False):
            self._det_tuned = True   # nothing to measure: later frames skip the call
        if self._det_tuned:
            return
        h, w = image.shape[-2:]
        if not self.levels_for(h, w):
            return
        self._det_tuned = True
        if self.graph is not None and graphable(self, h, w) is None:
            # The graph runs DET once over the packed levels: time the routes on what it will run.
            inputs = [self.packed_levels(image, plan(self, h, w))]
        else:
            inputs, _ = self.level_inputs(image)
        backend.tune_det(inputs)

    def level_inputs(self, image: torch.Tensor) -> tuple[list[torch.Tensor], list[Level]]:
        """(1, 1, H, W) grey in [0, 255] → DET's normalised input at each level, and the levels."""
        normalised = self._det_input(image)
        levels = self.levels_for(*image.shape[-2:])
        return [resize_level(normalised, lv) for lv in levels], levels

    def _det_input(self, image: torch.Tensor) -> torch.Tensor:
        det = self.networks["det"]
        return (image - det.mean) / det.std

    def _now(self) -> float:
        # CUDA runs asynchronously: wait for it so that stage timings mean what they say.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextmanager
    def _timed(self, timings: dict[str, float] | None, key: str):
        """Records a stage's time in ``timings``; with None, neither times nor waits for the device
        (inside a CUDA graph capture, waiting is an error)."""
        if timings is None:
            yield
            return
        t = self._now()
        yield
        timings[key] = self._now() - t

    @property
    def untrained_warning(self) -> str | None:
        return untrained_summary(self.networks)

    def scales_for(self, height: int, width: int) -> np.ndarray:
        return scales_for(height, width, self.conf)

    def levels_for(self, height: int, width: int) -> list[Level]:
        return make_levels(height, width, self.scales_for(height, width), min_size=FILTER_SIZE + 2)

    def score_threshold(self) -> float | None:
        # The detector's scores have the scale of its weights, so the default threshold is its card's.
        c = self.conf
        return c["score_threshold"] if c["score_threshold"] is not None else self.networks["det"].card.get("score_threshold")

    def score_maps(self, image: torch.Tensor, timings: dict[str, float] | None) -> tuple[list[torch.Tensor], list[Level]]:
        """(1, 1, H, W) grey in [0, 255] on the device → per level a score map, and the levels."""
        with self._timed(timings, "det"):
            inputs, levels = self.level_inputs(image)
            maps = [pad_score_map(self.backend.det(x), lv) for x, lv in zip(inputs, levels)]
        return maps, levels

    def score_canvas(self, image: torch.Tensor, atlas: Atlas) -> torch.Tensor:
        """(1, 1, H, W) grey in [0, 255] → the (Ha, Wa) canvas of every level's scores from ONE pass of
        DET over the packed levels (``atlas``: ``lift_graph.plan``), INVALID where a level's own
        window does not fit: what ``score_maps`` gives, packed, with one convolution instead of one
        per level (for the fixed-shape path, where launches count, not the ~30 % more pixels).

        A back end whose DET takes inputs up to ``det_max_hw`` only (a TensorRT engine's profile)
        scores a larger canvas level by level, then packs the maps: still fixed shapes, so the CUDA
        graph keeps DET instead of the whole frame falling back to the staged pipeline."""
        limit = getattr(self.backend, "det_max_hw", None)
        if limit is not None and (atlas.height > limit[0] or atlas.width > limit[1]):
            maps, _ = self.score_maps(image, None)   # the atlas's levels are levels_for(H, W)
            scores = atlas.pack(maps, fill=INVALID, replicate_edges=False)
        else:
            m = DET_MARGIN
            scores = F.pad(self.backend.det(self.packed_levels(image, atlas)), (m, m, m, m), value=INVALID)
        return torch.where(atlas.scored, scores, torch.full_like(scores, INVALID))

    def packed_levels(self, image: torch.Tensor, atlas: Atlas) -> torch.Tensor:
        """(1, 1, H, W) grey in [0, 255] → (1, 1, Ha, Wa): DET's normalised input at every level, packed."""
        normalised = self._det_input(image)
        # Every pixel whose window reaches a gutter is masked out of the scores: the gutters' content is never read.
        packed = atlas.pack([resize_level(normalised, lv)[0, 0] for lv in atlas.levels], fill=0.0, replicate_edges=False)
        return packed[None, None]

    def detect(self, image: torch.Tensor, timings: dict[str, float] | None) -> Detections:
        """(1, 1, H, W) grey in [0, 255] on the device → detections."""
        maps, levels = self.score_maps(image, timings)
        c = self.conf
        with self._timed(timings, "nms"):
            found = detect(maps, levels, tuple(image.shape[-2:]), int(c["max_keypoints"]), self.score_threshold(),
                           float(c["edge_threshold"]), bool(c["refine"]))
        return found

    def describe(self, crop, xy: torch.Tensor, sigma: torch.Tensor,
                 timings: dict[str, float] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Orientations (N,) and descriptors (N, 128) at keypoints (N, 2) of scale sigma (N,);
        ``crop(xy, support, angles=None)`` cuts the patches (a ``PatchSampler`` or its ``static``)."""
        support = sigma * SUPPORT_PER_SCALE
        ori_net, desc_net = self.networks["ori"], self.networks["desc"]
        if self.conf["upright"]:
            angles = torch.zeros(len(xy), dtype=xy.dtype, device=xy.device)
        else:
            with self._timed(timings, "ori_patches"):
                # In place: the crop is a new tensor, and a second 16 MB copy per 1000 patches cost 1.5 ms.
                upright = crop(xy, support).sub_(ori_net.mean).div_(ori_net.std)
            with self._timed(timings, "ori"):
                angles = ori_module.angle(self.backend.ori(upright))
        with self._timed(timings, "desc_patches"):
            rotated = crop(xy, support, angles).sub_(desc_net.mean).div_(desc_net.std)
        with self._timed(timings, "desc"):
            descriptors = self.backend.desc(rotated)
        return angles, descriptors

    def __call__(self, gray: np.ndarray) -> Features:
        """(H, W) float32 grey levels in [0, 255] → Features."""
        if gray.ndim != 2 or gray.size == 0:
            raise ValueError(f"expected a non-empty (H, W) grey image, got shape {gray.shape}")
        timings: dict[str, float] = {}
        h, w = gray.shape
        if not self._det_tuned:
            self.tune_det(torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32)).to(self.device)[None, None])
        start = self._now()
        if self.graph is not None and graphable(self, h, w) is None:
            try:
                packed = self.graph(np.ascontiguousarray(gray, dtype=np.float32))
            except RuntimeError as e:
                if self.conf["cuda_graph"] is True:
                    raise
                # A PyTorch or driver that cannot capture some kernel: the staged pipeline computes the same.
                warnings.warn(f"LIFT runs stage by stage: capturing it as a CUDA graph failed ({e})")
                self.graph = None
            else:
                features = unpack(packed, (h, w))
                timings["total"] = time.perf_counter() - start
                features.timings = timings
                return features
        image = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32)).to(self.device)[None, None]
        found = self.detect(image, timings)
        if len(found):
            sampler = PatchSampler(image, self.conf["patch_size"])
            xy = torch.from_numpy(found.xy).to(self.device)
            sigma = torch.from_numpy(found.scale).to(self.device)
            angles, descriptors = self.describe(sampler, xy, sigma, timings)
            angles, descriptors = angles.cpu().numpy(), descriptors.float().cpu().numpy()
        else:
            angles, descriptors = np.zeros(0, np.float32), np.zeros((0, 128), np.float32)
        timings["total"] = self._now() - start
        return Features(found.xy, (2 * found.scale).astype(np.float32), angles.astype(np.float32),
                        found.score, descriptors.astype(np.float32), (h, w), timings)
