"""LIFT as one computation of fixed shapes, and a CUDA graph of it per image size.

On a GPU most of ``Lift``'s time per frame is not arithmetic (docs/benchmarks.md, H100 table): hundreds of small
kernels (DET and NMS per level, crops per octave) each launched from Python, and the waits for the
device that ``nonzero``, ``unique``, boolean indexing and the stage timers need. ``static_features``
computes the same features with shapes fixed by the image size and the keypoint budget and without
one wait, so ``torch.cuda.CUDAGraph`` captures all of it once per image size; each frame is then one
copy in, one replay and one copy out (PyTorch's documented pattern: warm-up on a side stream, capture,
replay on static tensors).

    packed = static_features(lift, image, plan(lift, H, W))   # (K, 133): x y sigma score angle descriptor[128]
    CudaGraphLift(lift)(gray)               # → (K, 133) numpy, replayed from a graph
"""
from __future__ import annotations

import numpy as np
import torch

from .atlas import Atlas, atlas_for
from .keypoints import select_static
from .patches import PatchSampler

# Back ends whose networks run on PyTorch's current CUDA stream, so that a capture records them: torch,
# and TensorRT (its runner enqueues on that stream; NVIDIA documents capturing execute_async_v3 once
# an execution context has run at its shapes, which the warm-up does: DET sees one shape, the packed
# levels, and ORI and DESC one batch of K).
GRAPH_BACKENDS = ("torch", "tensorrt")
# Columns of the packed output: x, y, sigma, score, angle, then the descriptor.
PACKED_COLUMNS = 5 + 128


def static_features(lift, image: torch.Tensor, atlas: Atlas) -> torch.Tensor:
    """(1, 1, H, W) grey in [0, 255] on ``lift``'s device → (K, 133) float32: per keypoint x, y
    (image pixels), sigma (pixels), score, angle (radians) and the 128-D descriptor, best first;
    K = min(max_keypoints, pixels of all levels); rows past the last keypoint score -inf.

    The same keypoints and descriptors as ``lift(gray)`` to float rounding (tests/test_lift_graph.py),
    with no synchronisation with the host. ``lift`` is a ``features.lift.Lift``; ``atlas`` is
    ``plan(lift, H, W)``: the levels and their packing, built once per size outside (configuration,
    not data; its constants are copied from the host, which a capture cannot do).
    """
    c = lift.conf
    xy, sigma, score, _ = select_static(lift.score_canvas(image, atlas), atlas, tuple(image.shape[-2:]),
                                        int(c["max_keypoints"]), lift.score_threshold(), float(c["edge_threshold"]),
                                        bool(c["refine"]))
    sampler = PatchSampler(image, c["patch_size"])
    angles, descriptors = lift.describe(sampler.static, xy, sigma, None)
    columns = [xy, sigma[:, None], score[:, None], angles[:, None].to(xy.dtype), descriptors.float()]
    return torch.cat(columns, 1)


def plan(lift, height: int, width: int) -> Atlas:
    """The fixed-shape plan of ``static_features`` at an image size: its levels, packed."""
    return atlas_for(tuple(lift.levels_for(height, width)), str(lift.device))


def graphable(lift, height: int, width: int) -> str | None:
    """Why ``lift`` cannot run as a CUDA graph at this size, or None when it can."""
    if lift.device.type != "cuda":
        return "CUDA graphs need a CUDA device"
    if getattr(lift.backend, "name", "") not in GRAPH_BACKENDS:
        return f"the {lift.backend.name} back end does not run on PyTorch's CUDA stream"
    if int(lift.conf["max_keypoints"]) == 0:
        return "no keypoints asked for"
    if not lift.levels_for(height, width):
        return "the image is smaller than DET's window at every scale"
    return None


class _Captured:
    """One image size: the static input, the graph and its output, pinned host buffers."""

    def __init__(self, lift, height: int, width: int, warmup: int) -> None:
        device = lift.device
        atlas = plan(lift, height, width)
        self.host_in = torch.empty((height, width), dtype=torch.float32).pin_memory()
        self.image = torch.zeros((1, 1, height, width), dtype=torch.float32, device=device)
        # Something to detect during the warm-up, so that every kernel (and cuDNN's choice) runs once.
        self.image.copy_(torch.rand((1, 1, height, width), device=device) * 255)
        # cuDNN may time its algorithms here: every shape is fixed, and the replays keep the choice.
        benchmark, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(warmup):
                    static_features(lift, self.image, atlas)
            torch.cuda.current_stream(device).wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(self.graph):
                self.out = static_features(lift, self.image, atlas)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        self.host_out = torch.empty(self.out.shape, dtype=self.out.dtype).pin_memory()
        self.done = torch.cuda.Event()

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        self.host_in.numpy()[...] = gray
        self.image[0, 0].copy_(self.host_in, non_blocking=True)
        self.graph.replay()
        self.host_out.copy_(self.out, non_blocking=True)
        self.done.record()
        self.done.synchronize()
        return self.host_out.numpy().copy()


class CudaGraphLift:
    """Runs ``static_features`` as a CUDA graph captured on first use of each image size.

    The graph reads the networks' weights where they are at capture: replace or reload the weights
    and build a new ``CudaGraphLift``. Each size keeps its own memory pool (a few hundred MB at
    640×480 with the paper's 21 levels).
    """

    def __init__(self, lift, warmup: int = 3) -> None:
        self.lift, self.warmup = lift, warmup
        self._sizes: dict[tuple[int, int], _Captured] = {}

    def __call__(self, gray: np.ndarray) -> np.ndarray:
        """(H, W) float32 grey in [0, 255] → (K, 133) packed features (see ``static_features``)."""
        key = tuple(gray.shape)
        if key not in self._sizes:
            why = graphable(self.lift, *key)
            if why:
                raise ValueError(f"cannot run LIFT as a CUDA graph at {key[1]}×{key[0]}: {why}")
            self._sizes[key] = _Captured(self.lift, key[0], key[1], self.warmup)
        return self._sizes[key](gray)
