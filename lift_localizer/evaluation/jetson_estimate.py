"""Jetson Orin estimate of LIFT's network stages from their operation counts (an estimate, not a Jetson measurement).

    python tools/jetson_estimate.py [--size 640x480] [--keypoints 1000] [--preset default]

Per stage a roofline: time = max(MACs / (efficiency x FP16 tensor peak), bytes / memory bandwidth),
bytes being every layer's input and output read or written once in FP16 (TensorRT fuses little of
DET's GHH or DESC's pooling into the convolutions, so this is closer to the truth than weights only).
Peaks are NVIDIA's published GPU figures, the dense FP16 tensor rate being a quarter of the sparse INT8
TOPS (sparsity doubles, INT8 doubles again over FP16); efficiencies are assumptions, printed with the
result: the 25x25 single-channel DET convolution maps poorly onto tensor cores, DESC's 32-128 channel
layers well.

The steps between the networks, as the CUDA graph runs them (``lift_graph.static_features``): DET's
input packing, the NMS, the patch crops. They are elementwise and gathers, so per step: its
kernels × a per-kernel cost (``KERNEL_US``, assumed: launch from a graph plus a small kernel's
minimum) + twice the bytes its operations write (each read about once more) / bandwidth, counted
in FP32 as PyTorch runs them (``op_count.CountOps``). Matching and PnP are not estimated.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..features.lift import Lift
from ..nets.presets import apply_preset
from ..nets.scale_space import SUPPORT_PER_SCALE, make_levels
from .benchmark import count_macs


@dataclass(frozen=True)
class Device:
    name: str
    tensor_fp16_tmacs: float   # dense FP16 tensor-core multiply-accumulates per second, 1e12
    bandwidth_gbs: float
    source: str


DEVICES = (
    # GPU: 16 SMs, 64 tensor cores, 170 sparse INT8 TOPS -> 42.5 dense FP16 TFLOPS; LPDDR5 204.8 GB/s.
    Device("Jetson AGX Orin 64GB", 42.5 / 2, 204.8, "NVIDIA Jetson AGX Orin Series Technical Brief v1.2"),
    # 8 SMs, 32 tensor cores, 67 sparse INT8 TOPS (JetPack 6.1 "Super" clocks); LPDDR5 102 GB/s.
    Device("Jetson Orin Nano 8GB (Super)", 67 / 4 / 2, 102.0, "NVIDIA Jetson Orin Nano Super Developer Kit datasheet"),
)
# Fraction of the tensor peak each network's convolutions reach (assumed, see the module docstring).
EFFICIENCY = {"det": 0.15, "ori": 0.4, "desc": 0.4}
# A pessimistic bound: the fractions of the FP16 peak PyTorch reaches on an H100 (docs/benchmarks.md, 21 levels:
# DET 44.8 GMAC in 9.0 ms, ORI 7.4 GMAC in 2.7 ms, DESC 51 GMAC in 5.8 ms, against 372 TMAC/s measured),
# where kernel launches and framework overhead, not the tensor cores, set the time.
PYTORCH_H100 = {"det": 0.013, "ori": 0.0074, "desc": 0.024}
BYTES = 2  # FP16
# Assumed cost of one small kernel replayed from a CUDA graph on an Orin (launch and minimum duration).
KERNEL_US = 5.0


def count_traffic(module: torch.nn.Module, example: torch.Tensor) -> int:
    """Elements each leaf layer reads and writes on ``example`` (its inputs plus its outputs)."""
    total = [0]

    def hook(m, inp, out):
        total[0] += sum(t.numel() for t in inp if isinstance(t, torch.Tensor)) + out.numel()

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            out = module(example)
    finally:
        for h in handles:
            h.remove()
    return total[0] + out.numel()  # the output of the whole network (e.g. DET's GHH) is written too


def network_work(height: int, width: int, keypoints: int, preset: str = "default") -> dict[str, dict[str, float]]:
    """MACs and bytes of DET over the scale space and of ORI and DESC on ``keypoints`` 64x64 patches."""
    lift = Lift(apply_preset({"max_keypoints": keypoints}, preset))
    nets = {k: copy.deepcopy(lift.networks[k].module).float().cpu() for k in ("det", "ori", "desc")}
    levels = make_levels(height, width, lift.scales_for(height, width), min_size=27)
    work = {"det": {"macs": 0.0, "bytes": 0.0, "levels": len(levels)}}
    for lv in levels:
        x = torch.zeros(1, 1, lv.height, lv.width)
        work["det"]["macs"] += count_macs(nets["det"], x)
        work["det"]["bytes"] += BYTES * count_traffic(nets["det"], x)
    patch = torch.zeros(1, 1, 64, 64)
    for k in ("ori", "desc"):
        work[k] = {"macs": float(keypoints * count_macs(nets[k], patch)),
                   "bytes": float(BYTES * keypoints * count_traffic(nets[k], patch))}
    return work


def glue_work(height: int, width: int, keypoints: int, preset: str = "default") -> dict[str, dict[str, float]]:
    """Kernels and bytes written by the fixed-shape steps between the networks: DET's input packing
    (``pack``), the NMS (``nms``) and the ORI and DESC patch crops with their normalisation (``crops``)."""
    from ..features.keypoints import select_static
    from ..features.lift_graph import plan
    from ..features.patches import PatchSampler
    from .op_count import CountOps

    lift = Lift(apply_preset({"max_keypoints": keypoints, "backend": "torch", "det_conv": None}, preset))
    atlas = plan(lift, height, width)
    image = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(0)) * 255
    c = lift.conf
    counts = {}
    with torch.inference_mode():
        with CountOps() as pack:
            lift.packed_levels(image, atlas)
        canvas = lift.score_canvas(image, atlas)
        with CountOps() as nms:
            xy, sigma, _, _ = select_static(canvas, atlas, (height, width), keypoints, lift.score_threshold(),
                                            float(c["edge_threshold"]), bool(c["refine"]))
        sampler_ops = CountOps()
        with sampler_ops:
            sampler = PatchSampler(image, c["patch_size"])
            support = sigma * SUPPORT_PER_SCALE
            for angles in (None, torch.zeros_like(sigma)):
                (sampler.static(xy, support, angles) - 0.5) / 0.25   # the crop and its normalisation
        for name, n in (("pack", pack), ("nms", nms), ("crops", sampler_ops)):
            counts[name] = {"kernels": float(n.kernels), "bytes": float(n.bytes_written)}
    return counts


def estimate_glue(work: dict[str, dict[str, float]], device: Device, kernel_us: float = KERNEL_US) -> dict:
    """Per step: launch-bound and memory-bound parts (ms), summed."""
    out = {}
    for k, w in work.items():
        launch, memory = w["kernels"] * kernel_us / 1e3, 1e3 * 2 * w["bytes"] / (device.bandwidth_gbs * 1e9)
        out[k] = {"launch_ms": launch, "memory_ms": memory, "ms": launch + memory}
    out["steps"] = {"ms": sum(v["ms"] for v in out.values())}
    return out


def estimate(work: dict[str, dict[str, float]], device: Device, efficiency: dict[str, float] = EFFICIENCY) -> dict:
    """Per stage: compute-bound and memory-bound times (ms), the larger one, and which bound it."""
    out = {}
    for k, w in work.items():
        compute = 1e3 * w["macs"] / (efficiency[k] * device.tensor_fp16_tmacs * 1e12)
        memory = 1e3 * w["bytes"] / (device.bandwidth_gbs * 1e9)
        out[k] = {"compute_ms": compute, "memory_ms": memory, "ms": max(compute, memory),
                  "bound": "compute" if compute >= memory else "memory"}
    out["networks"] = {"ms": sum(v["ms"] for v in out.values())}
    return out
