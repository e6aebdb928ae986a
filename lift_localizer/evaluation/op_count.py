"""PyTorch operations per frame, stage by stage, of the staged LIFT pipeline and of its fixed-shape
form (features/lift_graph.py): on a GPU each operation is a kernel launch, and launches, not
arithmetic, set the time of LIFT's small kernels (docs/benchmarks.md, H100 table). Counted on the CPU with a
dispatch hook, so it needs no GPU; views (slice, select, unsqueeze) count too, and are shown
apart: on a GPU they launch nothing.

    python tools/op_count.py [--preset default|fast|paper] [--size 640x480] [--batch-size N]
"""
from __future__ import annotations

import collections

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ..features.keypoints import detect, select_static
from ..features.lift import Lift
from ..features.lift_graph import plan
from ..features.patches import PatchSampler


class CountOps(TorchDispatchMode):
    """``with CountOps() as c: ...`` → ``c.total`` PyTorch (ATen) operations, ``c.ops`` by name;
    ``c.kernels``: those that compute (not views such as slice, select, transpose, whose result
    aliases their input: on a GPU they launch nothing); ``c.bytes_written``: their outputs' bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()
        self.views = 0
        # Bytes the computing operations write: with what they read, the memory traffic that bounds
        # elementwise passes on a GPU (an embedded one above all).
        self.bytes_written = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns):
            self.views += 1
        else:
            self.bytes_written += sum(t.numel() * t.element_size() for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out

    @property
    def total(self) -> int:
        return sum(self.ops.values())

    @property
    def kernels(self) -> int:
        return self.total - self.views


def count_stages(lift: Lift, gray: np.ndarray, what: str = "total") -> dict[str, dict[str, int]]:
    """Operations of DET, NMS and the patches with ORI and DESC, staged and fixed-shape: ``what`` is
    ``total``, ``kernels`` (those that compute, not views) or ``bytes_written`` (by those)."""
    image = torch.from_numpy(np.ascontiguousarray(gray, np.float32))[None, None]
    atlas = plan(lift, *gray.shape)
    c = lift.conf
    args = (int(c["max_keypoints"]), lift.score_threshold(), float(c["edge_threshold"]), bool(c["refine"]))
    out: dict[str, dict[str, int]] = {"staged": {}, "fixed-shape": {}}
    with torch.inference_mode():
        with CountOps() as n:
            maps, levels = lift.score_maps(image, None)
        out["staged"]["det"] = getattr(n, what)
        with CountOps() as n:
            found = detect(maps, levels, gray.shape, *args, dense=True)
        out["staged"]["nms"] = getattr(n, what)
        xy, sigma = torch.from_numpy(found.xy), torch.from_numpy(found.scale)
        with CountOps() as n:
            lift.describe(PatchSampler(image, c["patch_size"]), xy, sigma, None)
        out["staged"]["patches, ori, desc"] = getattr(n, what)
        with CountOps() as n:
            canvas = lift.score_canvas(image, atlas)
        out["fixed-shape"]["det"] = getattr(n, what)
        with CountOps() as n:
            xy, sigma, _, _ = select_static(canvas, atlas, gray.shape, *args)
        out["fixed-shape"]["nms"] = getattr(n, what)
        with CountOps() as n:
            lift.describe(PatchSampler(image, c["patch_size"]).static, xy, sigma, None)
        out["fixed-shape"]["patches, ori, desc"] = getattr(n, what)
    for counts in out.values():
        counts["total"] = sum(counts.values())
    return out
