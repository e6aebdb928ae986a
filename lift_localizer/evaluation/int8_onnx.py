"""INT8 ORI and DESC on ONNX Runtime (backends/onnx_int8.py) against FP32: agreement and speed.

    python tools/int8_onnx.py [--images DIR] [--pairs N]

- Networks, on real keypoint patches of ``--images`` (the patches the localizer's LIFT feeds its
  back end, ``calibration_batches``): ORI's angle error, DESC's relative L2 error and how often a
  patch's INT8 descriptor has its own FP32 descriptor as nearest neighbour among all of them.
- Pipeline, on consecutive image pairs: LIFT (back end auto) in FP32 and with ``precision: int8``
  on the same keypoints (DET is FP32 in both); the share of FP32's mutual-nearest-neighbour matches
  (ratio 0.9, as the localizer) that INT8 also makes, and the match counts.
- Speed: each network's FP32 model and its INT8 models in both formats (QOperator, QDQ), the runs
  interleaved, per 1024 patches, over ONNX Runtime's intra-op threads and patch batch sizes.

The default images are a Webcam test scene (chamonix): the tables are recorded on the training
scene (mexico), so the agreement is measured on images the calibration never saw.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "raw" / "webcam" / "chamonix"


def network_agreement(fp32: dict, int8: dict, patches: dict[str, np.ndarray]) -> dict:
    """ORI angle error (degrees) and DESC relative L2 error and self-nearest-neighbour rate."""
    out = {}
    a, b = fp32["ori"](patches["ori"]), int8["ori"](patches["ori"])
    err = np.degrees(np.abs(np.angle(np.exp(1j * (np.arctan2(b[:, 1], b[:, 0]) - np.arctan2(a[:, 1], a[:, 0]))))))
    out["ori"] = {"patches": len(a), "angle_median_deg": float(np.median(err)),
                  "angle_p95_deg": float(np.percentile(err, 95)), "angle_max_deg": float(err.max())}
    a, b = fp32["desc"](patches["desc"]), int8["desc"](patches["desc"])
    rel = np.linalg.norm(b - a, axis=1) / np.maximum(np.linalg.norm(a, axis=1), 1e-12)
    d2 = (b * b).sum(1)[:, None] - 2 * b @ a.T + (a * a).sum(1)[None]
    out["desc"] = {"patches": len(a), "rel_l2_median": float(np.median(rel)), "rel_l2_p95": float(np.percentile(rel, 95)),
                   "rel_l2_max": float(rel.max()), "self_nn": float((d2.argmin(1) == np.arange(len(a))).mean())}
    return out


def matches_kept(images: list[Path], pairs: int, max_keypoints: int) -> dict:
    """FP32's mutual-NN matches that INT8 also makes, over consecutive image pairs."""
    from ..features.lift import Lift
    from ..features.matching import mutual_nearest_neighbours
    from ..images import read_image

    extractors = {p: Lift({"max_keypoints": max_keypoints, "precision": p}) for p in ("fp32", "int8")}
    kept = counts32 = counts8 = 0
    for i in range(min(pairs, len(images) - 1)):
        grays = [read_image(images[i]), read_image(images[i + 1])]
        sets = {}
        for p, ex in extractors.items():
            f = [ex(g) for g in grays]
            if p == "fp32":
                keypoints = [x.keypoints for x in f]
            else:   # the same detections: DET runs in FP32 in both
                assert all(np.array_equal(k, x.keypoints) for k, x in zip(keypoints, f))
            sets[p] = {tuple(m) for m in mutual_nearest_neighbours(f[0].descriptors, f[1].descriptors, 0.9).tolist()}
        kept += len(sets["fp32"] & sets["int8"])
        counts32 += len(sets["fp32"])
        counts8 += len(sets["int8"])
    return {"pairs": min(pairs, len(images) - 1), "fp32_matches": counts32, "int8_matches": counts8,
            "kept": kept, "kept_fraction": kept / max(counts32, 1)}


def _on_session(path: Path):
    """A model as a function of (N, 1, 64, 64) patches, run in batches of 256 as the back end does."""
    session = _session(path, threads=0)
    return lambda x: np.concatenate([session.run(None, {"patches": x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")   # as the back end
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_models(models: dict[str, Path], patches: np.ndarray, threads: int, batch: int, rounds: int) -> dict[str, float]:
    """Fastest of ``rounds`` interleaved runs over ``patches`` per model, ms per 1024 patches."""
    sessions = {name: _session(path, threads) for name, path in models.items()}
    best = {name: float("inf") for name in models}
    for _ in range(rounds):
        for name, s in sessions.items():
            t = time.perf_counter()
            for i in range(0, len(patches), batch):
                s.run(None, {"patches": patches[i:i + batch]})
            best[name] = min(best[name], (time.perf_counter() - t) * 1000 * 1024 / len(patches))
    return best


def run(args: argparse.Namespace) -> int:
    from ..backends.int8_calibration import calibration_batches, image_paths
    from ..backends.onnx_cache import ensure_export
    from ..backends.onnx_int8 import CALIBRATED, KINDS, QUANT_FORMAT, QUANT_FORMATS, quantize_from_table
    from ..features.extractors import reference_lift
    from ..weights import load_networks

    images = image_paths(args.images, args.max_images)
    if len(images) < 2:
        print(f"error: {args.images}: fewer than 2 images", file=sys.stderr)
        return 2
    networks = load_networks()
    data = calibration_batches(images, patch_batch=256, max_patches=args.patches, reference=reference_lift, seed=1)
    patches = {k: np.concatenate(data.batches[k]) for k in CALIBRATED}
    directory, manifest = ensure_export(networks)
    with tempfile.TemporaryDirectory(prefix="lift-int8-") as tmp:
        models = {}
        for kind in CALIBRATED:
            models[kind] = {"fp32": directory / manifest["models"][kind]["file"]}
            for fmt in QUANT_FORMATS:
                models[kind][fmt] = Path(tmp) / f"{kind}.{fmt}.onnx"
                quantize_from_table(models[kind]["fp32"], models[kind][fmt], networks[kind], fmt)
        agree = network_agreement(*({k: _on_session(models[k][p]) for k in CALIBRATED} for p in ("fp32", QUANT_FORMAT)),
                                  patches)
        print(f"{args.images.name}, {len(data.images)} images; INT8 ({QUANT_FORMAT}) against FP32 on real keypoint patches:")
        o, d = agree["ori"], agree["desc"]
        print(f"  ORI  {o['patches']} patches: angle error median {o['angle_median_deg']:.2f}°, p95 "
              f"{o['angle_p95_deg']:.2f}°, max {o['angle_max_deg']:.1f}°")
        print(f"  DESC {d['patches']} patches: relative L2 error median {d['rel_l2_median']:.4f}, p95 "
              f"{d['rel_l2_p95']:.4f}, max {d['rel_l2_max']:.4f}; own FP32 descriptor nearest {100 * d['self_nn']:.2f} %")
        m = matches_kept(images, args.pairs, args.max_keypoints)
        print(f"  LIFT (auto, precision int8: {', '.join(k.upper() for k in KINDS)} in INT8), {m['pairs']} image pairs, "
              f"{args.max_keypoints} keypoints: FP32 {m['fp32_matches']} mutual-NN matches, INT8 {m['int8_matches']}; "
              f"{m['kept']} of FP32's kept ({100 * m['kept_fraction']:.1f} %)")
        print(f"speed, ms per 1024 patches (fastest of {args.rounds} interleaved runs), FP32 / INT8 = ×:")
        for kind in CALIBRATED:
            for threads in args.threads:
                for batch in args.batches:
                    t = time_models(models[kind], patches[kind][:1024], threads, batch, args.rounds)
                    print(f"  {kind:4s} threads {threads} batch {batch:4d}: fp32 {t['fp32']:6.1f}  " + "  ".join(
                            f"{fmt} {t[fmt]:6.1f} (×{t['fp32'] / t[fmt]:.2f})" for fmt in QUANT_FORMATS))
    print(f"(precision int8 runs {', '.join(k.upper() for k in KINDS)} in {QUANT_FORMAT})")
    return 0
