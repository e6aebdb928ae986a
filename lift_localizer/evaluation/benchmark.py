"""``lift-localizer benchmark``: per-stage latency of the whole localization pipeline, per back end,
against the machine's measured peak.

For each back end available (torch on the CPU, onnx, torch on CUDA in fp32 and fp16 as CUDA graphs,
and fp16 stage by stage), on a 640×480 image with 1000 keypoints: decode (JPEG), DET per level and in total, NMS, ORI and DESC (patch
cropping and network), NetVLAD, retrieval (faiss over a synthetic map), 2D–3D matching, PnP, and the
end-to-end sum of one pass; median and p90 over the repeats (a CUDA graph runs LIFT as one
replay: one row for it). Dense stages get their multiply–accumulate
count (counted by hooks on the real layers at the real shapes) and the fraction of the
peak that a large matrix product reaches in the same run: time ÷ (MACs ÷ peak) is how far a stage is
from its floor. Prints a table; ``--json`` writes everything.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import cv2
import numpy as np
import torch

from ..features.lift import Lift
from ..synthetic import demo_views, make_texture
from .benchmark_options import MAX_KEYPOINTS, add_arguments  # noqa: F401 — re-exported: the parser, torch-free

DENSE = ("det", "ori", "desc")


def peak_gmacs(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None) -> float:
    """Multiply–accumulates per second (×1e9) of a large square matrix product on ``device``."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        a @ b
        sync()
        runs.append(time.perf_counter() - t)
    return n**3 / min(runs) / 1e9


def count_macs(module: torch.nn.Module, example: torch.Tensor) -> int:
    """MACs of the Conv2d and Linear layers of one forward pass at ``example``'s shape."""
    total = 0

    def conv(m, inp, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in module.modules() if isinstance(m, torch.nn.Linear)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    return total


def _stats(values: list[float]) -> dict[str, float]:
    return {"median_ms": 1000 * float(np.median(values)), "p90_ms": 1000 * float(np.percentile(values, 90))}


class _Pipeline:
    """Everything after LIFT, on synthetic but realistically sized data."""

    def __init__(self, rng: np.random.Generator, map_images: int, keypoints: int) -> None:
        from ..geometry.pose import rodrigues
        from ..retrieval.index import build_index
        from ..weights import load_network

        self.netvlad = load_network("netvlad", "netvlad_lift")
        g = rng.normal(size=(map_images, self.netvlad.module.out_dim)).astype(np.float32)
        self.index, _ = build_index(g / np.linalg.norm(g, axis=1, keepdims=True))
        self.map_desc = [rng.normal(size=(keypoints, 128)).astype(np.float32) for _ in range(10)]
        self._on_device: dict[str, list[torch.Tensor]] = {}
        # PnP: 500 matches, 30 % outliers, a 640×480 camera.
        n = 500
        self.K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
        xyz = rng.uniform([-2, -2, 4], [2, 2, 8], (n, 3))
        R, t = rodrigues(rng.normal(size=3) * 0.1), rng.normal(size=3) * 0.1
        cam = xyz @ R.T + t
        xy = cam[:, :2] / cam[:, 2:] * 500 + [319.5, 239.5]
        xy[: int(0.3 * n)] = rng.uniform([0, 0], [640, 480], (int(0.3 * n), 2))
        self.xy, self.xyz = xy + rng.normal(size=xy.shape) * 0.5, xyz

    def run(self, descriptors: np.ndarray, timings: dict[str, float], device: torch.device) -> None:
        """Timings of NetVLAD, retrieval, matching (on ``device``, as the localizer does) and PnP."""
        from ..localization.absolute_pose import default_solver, estimate_pose
        from ..features.matching import mutual_nearest_neighbours
        from ..retrieval.index import search

        t = time.perf_counter()
        with torch.no_grad():
            g = self.netvlad.module(torch.from_numpy(descriptors)[None]).numpy()
        timings["netvlad"] = time.perf_counter() - t
        t = time.perf_counter()
        search(self.index, g, 10)
        timings["retrieval"] = time.perf_counter() - t
        on_device = self._on_device.setdefault(str(device), [torch.as_tensor(d, device=device) for d in self.map_desc])
        t = time.perf_counter()
        query = torch.as_tensor(descriptors, device=device)
        for d in on_device:
            mutual_nearest_neighbours(query, d, 0.9, device)
        timings["matching"] = time.perf_counter() - t
        t = time.perf_counter()
        estimate_pose(self.xy, self.xyz, self.K, (640, 480), 8.0, default_solver(), 0)
        timings["pnp"] = time.perf_counter() - t


def benchmark_backend(name: str, conf: dict, gray: np.ndarray, jpeg: np.ndarray, pipeline: _Pipeline,
                      repeat: int) -> dict:
    lift = Lift(conf)
    device = torch.device(conf.get("device", "cpu"))
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    level_inputs, levels = lift.level_inputs(torch.from_numpy(gray).to(device)[None, None])
    t = time.perf_counter()
    lift(gray)   # warm-up: allocations, kernel selection, engine or graph builds
    sync()
    first_call_ms = 1000 * (time.perf_counter() - t)
    for x in level_inputs:
        lift.backend.det(x)
    runs: list[dict[str, float]] = []
    per_level: list[list[float]] = [[] for _ in levels]
    # Where DET runs a cheaper convolution (det_conv), the DET module as it is runs beside it.
    det_backend = getattr(lift.backend, "det_backend", lift.backend)
    module = getattr(det_backend, "det_module", None)
    dense = module if module is not None and det_backend.det_net is not module else None
    dense_runs: list[float] = []
    for _ in range(repeat):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE)
        timings["decode"] = time.perf_counter() - t
        f = lift(gray)
        timings.update({k: v for k, v in f.timings.items()})
        pipeline.run(f.descriptors, timings, device)
        timings["end_to_end"] = sum(timings[k] for k in ("decode", "total", "netvlad", "retrieval", "matching", "pnp"))
        runs.append(timings)
        for i, x in enumerate(level_inputs):
            sync()
            t = time.perf_counter()
            lift.backend.det(x)
            sync()
            per_level[i].append(time.perf_counter() - t)
        if dense is not None:
            sync()
            t = time.perf_counter()
            with torch.inference_mode():
                for x in level_inputs:
                    dense(x.to(det_backend.dtype))
            sync()
            dense_runs.append(time.perf_counter() - t)
    n_kp = len(f)
    stages = {k: _stats([r[k] for r in runs]) for k in runs[0]}
    cpu = {k: copy.deepcopy(lift.networks[k].module).float().cpu() for k in DENSE}
    macs = {"det": sum(count_macs(cpu["det"], torch.zeros(1, 1, lv.height, lv.width)) for lv in levels),
            "ori": n_kp * count_macs(cpu["ori"], torch.zeros(1, 1, 64, 64)),
            "desc": n_kp * count_macs(cpu["desc"], torch.zeros(1, 1, 64, 64))}
    return {"backend": name, "conf": {k: conf[k] for k in conf if k != "weights"}, "keypoints": n_kp,
            "levels": [{"scale": lv.scale, "height": lv.height, "width": lv.width, **_stats(v)}
                       for lv, v in zip(levels, per_level)],
            "stages": stages, "macs": macs, "det_note": getattr(det_backend, "det_note", None),
            # What a node's warm-up costs at a new image size (its first extraction), against "total".
            "first_call_ms": first_call_ms,
            "det_conv": None if dense is None else {
                "note": det_backend.det_note,
                "levels_ms": 1000 * float(np.median([sum(v) for v in zip(*per_level)])),
                "dense_levels_ms": 1000 * float(np.median(dense_runs))}}


def time_baselines(gray: np.ndarray, max_keypoints: int, repeat: int) -> dict[str, dict]:
    """OpenCV SIFT and ORB extraction on ``gray`` as the localizer runs them (the registry's extractors,
    at the image's own size like the LIFT rows): {name: {"median_ms", "p90_ms", "keypoints"}}."""
    from ..features.extractors import make_extractor

    out = {}
    for name in ("sift", "orb"):
        extractor = make_extractor(name, {"max_keypoints": max_keypoints, "resize_max": None})
        extractor(gray)   # OpenCV's one-off set-up, as the LIFT rows leave out their first run
        times, n = [], 0
        for _ in range(repeat):
            t = time.perf_counter()
            n = len(extractor(gray))
            times.append(1000 * (time.perf_counter() - t))
        out[name] = {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "keypoints": n}
    return out


def run(args: argparse.Namespace) -> int:
    from ..backends import BACKENDS
    from ..nets.presets import apply_preset

    w, h = (int(v) for v in args.size.lower().split("x"))
    view = demo_views(make_texture(), image_size=(h, w))[0].image
    gray = view.astype(np.float32)
    jpeg = cv2.imencode(".jpg", view.astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
    pipeline = _Pipeline(np.random.default_rng(0), args.map_images, args.max_keypoints)
    candidates = {"torch": {"backend": "torch"}}
    if "onnx" in BACKENDS:
        candidates["onnx"] = {"backend": "onnx"}
        candidates["auto"] = {"backend": "auto"}
        # DESC quantised (backends/onnx_int8.py), DET and ORI as in fp32.
        candidates["onnx-int8"] = {"backend": "onnx", "precision": "int8"}
        candidates["auto-int8"] = {"backend": "auto", "precision": "int8"}
    if torch.cuda.is_available():
        # LIFT as one CUDA graph (the default on CUDA), and stage by stage for the per-stage rows.
        candidates["torch-cuda"] = {"backend": "torch", "device": "cuda"}
        candidates["torch-cuda-fp16"] = {"backend": "torch", "device": "cuda", "precision": "fp16"}
        candidates["torch-cuda-fp16-staged"] = {"backend": "torch", "device": "cuda", "precision": "fp16",
                                                "cuda_graph": False}
    if "tensorrt" in BACKENDS:
        candidates["tensorrt-fp16"] = {"backend": "tensorrt", "device": "cuda", "precision": "fp16"}
    chosen = args.backends or list(candidates)
    unknown = [b for b in chosen if b not in candidates]
    if unknown:
        print(f"error: back end(s) {', '.join(unknown)} not available here (available: {', '.join(candidates)})")
        return 2
    peaks = {"cpu_fp32": peak_gmacs(torch.device("cpu"))}
    if any("cuda" in b or "tensorrt" in b for b in chosen):
        peaks["cuda_fp32"] = peak_gmacs(torch.device("cuda"))
        peaks["cuda_fp16"] = peak_gmacs(torch.device("cuda"), torch.float16)
    results = []
    weights = getattr(args, "weights", None)   # the command's --det/--ori/--desc (commands.network_weights)
    for name in chosen:
        conf = apply_preset({"max_keypoints": args.max_keypoints, **candidates[name]}, args.preset)
        if weights:
            conf["weights"] = weights
        results.append(benchmark_backend(name, conf, gray, jpeg, pipeline, args.repeat))
    baselines = time_baselines(gray, args.max_keypoints, args.repeat) if args.compare_sift else {}
    device_name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    print(f"lift-localizer benchmark: {w}×{h}, preset {args.preset}, {args.max_keypoints} keypoints, median of "
          f"{args.repeat}; CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"
          + (f", GPU {device_name}" if device_name else ""))
    print("peak (large matrix product): " + ", ".join(f"{k} {v:.0f} GMAC/s" for k, v in peaks.items()))
    for r in results:
        peak = peaks["cuda_fp16" if r["conf"].get("precision") == "fp16" or "tensorrt" in r["backend"] else
                     "cuda_fp32" if r["conf"].get("device", "cpu").startswith("cuda") else "cpu_fp32"]
        print(f"\n[{r['backend']}] {r['keypoints']} keypoints, {len(r['levels'])} levels"
              + "".join(f", {kind.upper()} {stem}" for kind, stem in (weights or {}).items()))
        print(f"  {'stage':14s} {'median ms':>10s} {'p90 ms':>9s} {'GMAC':>8s} {'% of peak':>10s} {'× floor':>8s}")
        rows = [("decode", "decode"), ("det", "det"), ("nms", "nms"), ("ori patches", "ori_patches"), ("ori", "ori"),
                ("desc patches", "desc_patches"), ("desc", "desc"), ("lift total", "total"), ("netvlad", "netvlad"),
                ("retrieval", "retrieval"), ("matching", "matching"), ("pnp", "pnp"), ("end to end", "end_to_end")]
        for label, key in rows:
            s = r["stages"].get(key)
            if s is None:
                continue
            extra = ""
            if key in DENSE:
                gmac = r["macs"][key] / 1e9
                achieved = gmac / (s["median_ms"] / 1000)
                extra = f" {gmac:8.2f} {100 * achieved / peak:9.1f}% {peak / achieved:8.1f}"
                r["stages"][key].update(gmac=gmac, fraction_of_peak=achieved / peak, times_floor=peak / achieved)
            print(f"  {label:14s} {s['median_ms']:10.1f} {s['p90_ms']:9.1f}{extra}")
        print(f"  first call     {r['first_call_ms']:10.1f}  (the first extraction at this size: a node's warm-up)")
        per = "  ".join(f"{lv['width']}×{lv['height']} {lv['median_ms']:.1f}" for lv in r["levels"])
        print(f"  DET per level (ms): {per}")
        if r.get("det_conv"):
            d = r["det_conv"]
            print(f"  DET over all levels: {d['levels_ms']:.1f} ms with {d['note']}; the dense DET module "
                  f"{d['dense_levels_ms']:.1f} ms ({d['dense_levels_ms'] / d['levels_ms']:.1f}×)")
        elif r.get("det_note"):
            print(f"  DET: {r['det_note']}")
    if baselines:
        print(f"\n[baselines, the same image and budget] " + ", ".join(
            f"{name.upper()} {b['median_ms']:.1f} ms ({b['keypoints']} keypoints)" for name, b in baselines.items()))
        for r in results:
            lift_ms = r["stages"]["total"]["median_ms"]
            r["ratio_to"] = {name: lift_ms / b["median_ms"] for name, b in baselines.items()}
            print(f"  LIFT extraction on {r['backend']}: {lift_ms:.1f} ms = "
                  + ", ".join(f"{x:.1f}× {name.upper()}" for name, x in r["ratio_to"].items()))
    if args.json:
        args.json.write_text(json.dumps({"size": [w, h], "preset": args.preset, "peaks_gmacs": peaks,
                                         "device": device_name, "results": results, "baselines": baselines},
                                        indent=1))
    return 0
