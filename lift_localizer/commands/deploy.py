"""``lift-localizer export``: the networks as ONNX (and TensorRT engines where TensorRT exists)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, log


def add(sub) -> None:
    p = sub.add_parser(
        "export", help="ONNX models of DET, ORI, DESC and NetVLAD with a manifest (and TensorRT engines)",
        description="Write det.onnx (dynamic H×W), ori.onnx and desc.onnx (dynamic patch batch), the NetVLAD "
                    "models and manifest.json (opset, inputs, outputs, weight hashes) into DIR, for "
                    "`--backend onnx` (model_dir) and TensorRT. With --backend tensorrt, also build the "
                    "engines now (they are otherwise built on first use) into the engine cache.")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR")
    p.add_argument("--backend", choices=("onnx", "tensorrt"), default="onnx")
    p.add_argument("--precision", choices=("fp16", "fp32", "int8"), default="fp16", help="TensorRT only")
    p.add_argument("--no-netvlad", action="store_true", help="export the LIFT networks only")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..backends.export import export_onnx

    try:
        manifest = export_onnx(args.output, netvlad=not args.no_netvlad)
    except (OSError, ValueError, RuntimeError) as e:
        return fail(f"export failed: {e}")
    for name, m in manifest["models"].items():
        log(f"{name}: {args.output / m['file']} (weights {m['weights_sha256'][:12]}…)")
    log(f"manifest: {args.output / 'manifest.json'} (opset {manifest['opset']})")
    if args.backend == "tensorrt":
        from ..backends import BACKENDS

        if "tensorrt" not in BACKENDS:
            return fail("TensorRT engines need TensorRT and a CUDA GPU (JetPack on a Jetson); the ONNX models are written")
        from ..backends.tensorrt_backend import build_engines

        for path in build_engines(args.output, precision=args.precision):
            log(f"engine: {path}")
    return 0
