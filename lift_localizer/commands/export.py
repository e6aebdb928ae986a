"""``lift-localizer export``: the networks as ONNX (and TensorRT engines where TensorRT exists)."""
from __future__ import annotations

import argparse
from pathlib import Path

from . import fail, log, positive_int


def add(sub) -> None:
    from ..backends.names import ENGINE_PRECISIONS, EXPORT_BACKENDS

    p = sub.add_parser(
        "export", help="ONNX models of DET, ORI, DESC and NetVLAD with a manifest (and TensorRT engines)",
        description="Write det.onnx (dynamic H×W), ori.onnx and desc.onnx (dynamic patch batch), the NetVLAD "
                    "models and manifest.json (opset, inputs, outputs, weight hashes) into DIR, for "
                    "`--backend onnx` (model_dir) and TensorRT. With --backend tensorrt, also build the "
                    "engines now (they are otherwise built on first use) into the engine cache "
                    "($XDG_CACHE_HOME or ~/.cache, then lift_localizer/tensorrt), where the tensorrt back "
                    "end looks. INT8 engines need a calibration on images like the camera's: "
                    "--calibration-images IMAGES runs it (once per export, GPU and TensorRT version; its "
                    "tables are kept beside the engines and reused by later INT8 builds).")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DIR",
                   help="folder for the models and manifest.json (created; files of the same names are replaced)")
    p.add_argument("--backend", choices=EXPORT_BACKENDS, default="onnx",
                   help="onnx: the ONNX models only; tensorrt: also build the TensorRT engines now "
                        "(needs TensorRT and a CUDA GPU)")
    p.add_argument("--precision", choices=ENGINE_PRECISIONS, default="fp16",
                   help="precision of the TensorRT engines; int8 with --backend onnx: also DESC quantised "
                        "for ONNX Runtime on the CPU, into DIR/int8 (from the calibration tables shipped with the weights)")
    p.add_argument("--calibration-images", type=Path, default=None, metavar="IMAGES",
                   help="INT8 only: a folder (searched recursively) or file of images to calibrate on")
    p.add_argument("--max-images", type=positive_int, default=100, metavar="N",
                   help="calibrate on at most N of them, spread over the folder (default %(default)s)")
    p.add_argument("--no-netvlad", action="store_true", help="export the LIFT networks only")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..backends.export import export_onnx

    int8 = args.backend == "tensorrt" and args.precision == "int8"
    if args.calibration_images is not None:
        if not int8:
            return fail("--calibration-images calibrates INT8 engines: use it with --backend tensorrt --precision int8")
        from ..backends.int8_calibration import IMAGE_SUFFIXES, image_paths

        if not args.calibration_images.exists():
            return fail(f"{args.calibration_images}: no such folder or file")
        if not image_paths(args.calibration_images, args.max_images):
            return fail(f"{args.calibration_images}: no images to calibrate on ({' '.join(IMAGE_SUFFIXES)})")
    try:
        manifest = export_onnx(args.output, netvlad=not args.no_netvlad)
    except (OSError, ValueError, RuntimeError) as e:
        return fail(f"export failed: {e}")
    for name, m in manifest["models"].items():
        log(f"{name}: {args.output / m['file']} (weights {m['weights_sha256'][:12]}…)")
    log(f"manifest: {args.output / 'manifest.json'} (opset {manifest['opset']})")
    if args.backend == "onnx" and args.precision == "int8":
        return _export_int8(args.output, manifest)
    if args.backend != "tensorrt":
        return 0
    from ..backends import tensorrt_backend as trtb

    ok, why = trtb.available()
    if not ok:
        what = "INT8 calibration and TensorRT engines need" if int8 else "TensorRT engines need"
        return fail(f"{what} TensorRT and a CUDA GPU (JetPack on a Jetson): {why}. The ONNX models are written; "
                    "run this command again where TensorRT is")
    try:
        if args.calibration_images is not None:
            from ..features.extractors import reference_lift

            tables, data = trtb.calibrate(args.output, args.calibration_images, max_images=args.max_images,
                                          reference=reference_lift, progress=True)
            log(f"calibration data: {data.summary()}")
            for path in data.skipped:
                log(f"  skipped {path}")
            for name, path in tables.items():
                log(f"{name}: INT8 calibration table {path}")
        for path in trtb.build_engines(args.output, precision=args.precision):
            log(f"engine: {path}")
    except (trtb.TensorRTError, ValueError, OSError) as e:
        return fail(str(e))
    return 0


def _export_int8(output: Path, manifest: dict) -> int:
    from ..backends import unavailable
    from ..backends.onnx_cache import write_atomically
    from ..backends.onnx_int8 import INT8_DIR, write_int8
    from ..weights import load_networks

    if (why := unavailable("onnx")) is not None:
        return fail(f"INT8 for ONNX Runtime: {why}")
    networks = load_networks()
    try:
        int8 = write_atomically(output / INT8_DIR, lambda tmp: write_int8(tmp, output, manifest, networks),
                                replace=(output / INT8_DIR).exists())
    except (OSError, ValueError) as e:
        return fail(f"INT8 export failed: {e}")
    for name, m in int8["models"].items():
        log(f"{name} int8: {output / INT8_DIR / m['file']} ({m['quant_format']}, {', '.join(m['quantized_nodes'])})")
    return 0
