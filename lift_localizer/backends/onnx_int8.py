"""INT8 DESC for ONNX Runtime on the CPU: static quantisation (``onnxruntime.quantization.
quantize_static``) of the FP32 export, from a calibration table shipped beside the weights.

    directory, manifest = ensure_int8(networks)       # <FP32 export>/int8/desc.int8.onnx
    write_table(fp32_model, batches, network, path)   # the table: activation ranges on real patches

The table (``<weights stem>.int8.json``, e.g. weights/desc.int8.json) holds ONNX Runtime's own
calibration cache (MinMax activation ranges of every tensor of the FP32 graph) recorded on keypoint
patches of the Webcam training scene (``python tools/int8_tables.py``), and the
hash of the weights it was recorded with. Quantising from it needs no images, so the INT8 models
are made on first use like the FP32 export: into ``<export>/int8`` (written to a fresh folder and
renamed into place), checked on every load against the hashes its manifest records, made again
where a cached one changed and refused where a ``model_dir``'s changed.

What is quantised, measured (docs/benchmarks.md, ``python tools/int8_onnx.py``):
only the convolutions whose inputs have many channels, DESC's conv2 and conv3 (45.7 of its 51.0
MMAC per patch). ORI has a table and an INT8 model too (its conv2 and conv3), measured beside
DESC, but ``precision: int8`` runs ORI in FP32: its INT8 model is no faster (0.74–1.08× FP32 over
thread counts and batch sizes) and turns its angles (1.3° at the 95th percentile), which cost
queries on kitti_seq1 at (5 cm, 5°) that INT8 DESC alone does not. DESC's conv1 (one input
channel) stays in float: quantised, the dequantisation of its 58×58×32 output, the Tanh that no
longer fuses into the convolution and the layout transposes cost more than its INT8 convolution
saves. Weights per output channel (``per_channel``), activations asymmetric uint8 with int8
weights (ONNX Runtime's recommendation for x86 with VNNI), QOperator format (QLinearConv in the
graph as written; QDQ, which relies on ONNX Runtime fusing its Q/DQ pairs, runs DESC at the same
speed within noise).
"""
from __future__ import annotations

import inspect
import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..weights import WEIGHTS_DIR, LoadedNetwork, file_sha256
from .export import changed_models, read_json, read_manifest
from .onnx_cache import ensure_export, write_atomically

log = logging.getLogger(__name__)

# The networks with a calibration table (``training/int8_tables.py``), quantised and measured by
# ``evaluation/int8_onnx.py``; and the one ``precision: int8`` runs quantised (see above).
CALIBRATED = ("ori", "desc")
KINDS = ("desc",)
INT8_DIR = "int8"
TABLE_FORMAT = 1
# The convolutions quantised per network (their names in the classic exporter's graphs); see above.
QUANTIZED_NODES = {"ori": ("/conv2/Conv", "/conv3/Conv"), "desc": ("/conv2/Conv", "/conv3/Conv")}
QUANT_FORMATS = ("QOperator", "QDQ")
QUANT_FORMAT = "QOperator"


def table_path(network: LoadedNetwork) -> Path:
    """Where the calibration table of ``network`` lives: beside its weights, ``<stem>.int8.json``."""
    return network.path.with_suffix(".int8.json")


def _quantize_static():
    from onnxruntime.quantization import quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        import onnxruntime

        raise ValueError(f"INT8: onnxruntime {onnxruntime.__version__}'s quantize_static reads no calibration "
                         "cache; install a newer onnxruntime (requirements.lock pins the one this is tested with)")
    return quantize_static


def _quantize(fp32_model: Path, output: Path, kind: str, quant_format: str, cache: Path,
              batches: Iterable[np.ndarray] | None = None) -> None:
    """``quantize_static`` of ``fp32_model`` into ``output``: from ``batches`` (and the ranges
    written to ``cache``) or, without batches, from the ranges already in ``cache``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType

    class Batches(CalibrationDataReader):
        def __init__(self, arrays: Iterable[np.ndarray]) -> None:
            self.arrays = iter(arrays)

        def get_next(self) -> dict | None:
            batch = next(self.arrays, None)
            return None if batch is None else {"patches": np.ascontiguousarray(batch, np.float32)}

    # quantize_static logs its advice (pre-processing, unsupported integer tensors) at WARNING on
    # the root logger for every model: nothing a user of this project can act on.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        _quantize_static()(str(fp32_model), str(output), Batches(batches) if batches is not None else None,
                           quant_format=getattr(QuantFormat, quant_format), nodes_to_quantize=list(QUANTIZED_NODES[kind]),
                           per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                           calibration_cache_path=str(cache))
    finally:
        root.setLevel(level)
    _check_quantized(output, kind)


def _check_quantized(path: Path, kind: str) -> None:
    """ValueError unless every convolution of ``QUANTIZED_NODES`` became an INT8 one: a table whose
    tensor names are not this export's leaves them in float without an error from the quantiser."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # QOperator: QLinearConv; QDQ: a Conv whose weights come out of a DequantizeLinear.
    have = sum(n.op_type == "QLinearConv" or (n.op_type == "Conv" and n.input[1] in dequantized) for n in graph.node)
    if have != len(QUANTIZED_NODES[kind]):
        raise ValueError(f"{kind}: {have} of the {len(QUANTIZED_NODES[kind])} convolutions were quantised: the "
                         "calibration table does not name this export's tensors; record a table again "
                         "(python tools/int8_tables.py)")


def write_table(fp32_model: str | Path, batches: Iterable[np.ndarray], network: LoadedNetwork,
                output: str | Path, source: str) -> dict:
    """Record the activation ranges of ``fp32_model`` (the export of ``network``) on ``batches``
    ((B, 1, 64, 64) normalised patches, as the back end is fed) and write the table to ``output``."""
    batches = list(batches)
    with tempfile.TemporaryDirectory(prefix="lift-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        _quantize(Path(fp32_model), Path(tmp) / "model.onnx", network.kind, QUANT_FORMAT, cache, batches)
        ranges = json.loads(cache.read_text())
    import onnxruntime

    table = {"table_format": TABLE_FORMAT, "network": network.kind, "weights_sha256": network.sha256,
             "method": "MinMax", "onnxruntime": onnxruntime.__version__, "source": source,
             "patches": int(sum(len(b) for b in batches)), "ranges": ranges}
    Path(output).write_text(json.dumps(table, indent=1) + "\n")
    return table


def read_table(network: LoadedNetwork) -> tuple[Path, dict]:
    """The calibration table of ``network`` and its path; ValueError naming the problem."""
    path = table_path(network)
    # The weights by the name or stem the tool takes (e.g. --desc desc_thin for the thin DESC).
    stem = network.path.with_suffix("")
    stem = stem.name if stem.parent == WEIGHTS_DIR else str(stem)
    make = f"record one with `python tools/int8_tables.py --{network.kind} {stem}`"
    table = read_json(path, f"an INT8 calibration table of {network.kind}", make, "none for these weights")
    if not isinstance(table, dict) or table.get("table_format") != TABLE_FORMAT or not isinstance(table.get("ranges"), dict):
        raise ValueError(f"INT8 {network.kind}: {path} is not a calibration table of format {TABLE_FORMAT}; {make}")
    if table.get("weights_sha256") != network.sha256:
        raise ValueError(f"INT8 {network.kind}: {path} was recorded with other weights "
                         f"({str(table.get('weights_sha256'))[:12]}…, loaded {network.sha256[:12]}…); {make}")
    return path, table


def quantize_from_table(fp32_model: Path, output: Path, network: LoadedNetwork,
                        quant_format: str = QUANT_FORMAT) -> dict:
    """Quantise ``fp32_model`` into ``output`` from ``network``'s table; the manifest entry of ``output``."""
    path, table = read_table(network)
    with tempfile.TemporaryDirectory(prefix="lift-int8-") as tmp:
        cache = Path(tmp) / "ranges.json"
        cache.write_text(json.dumps(table["ranges"]))
        _quantize(fp32_model, output, network.kind, quant_format, cache)
    return {"file": output.name, "file_sha256": file_sha256(output), **_recipe(network, path, fp32_model, quant_format)}


def _recipe(network: LoadedNetwork, table: Path, fp32_model: Path, quant_format: str = QUANT_FORMAT) -> dict:
    """What an INT8 model is made from: a cached one made from anything else is made again."""
    return {"weights_sha256": network.sha256, "table_sha256": file_sha256(table), "fp32_sha256": file_sha256(fp32_model),
            "quant_format": quant_format, "quantized_nodes": list(QUANTIZED_NODES[network.kind])}


def write_int8(output: Path, fp32_dir: Path, fp32_manifest: dict, networks: dict[str, LoadedNetwork]) -> dict:
    """The INT8 models of ``KINDS`` and their manifest, quantised from the export in ``fp32_dir``."""
    from .export import MANIFEST_FORMAT

    models = {kind: quantize_from_table(fp32_dir / fp32_manifest["models"][kind]["file"], output / f"{kind}.int8.onnx",
                                        networks[kind]) for kind in KINDS}
    manifest = {"format": MANIFEST_FORMAT, "precision": "int8", "models": models}
    (output / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _stale(directory: Path, fp32_dir: Path, fp32_manifest: dict, networks: dict[str, LoadedNetwork]) -> list[str]:
    """Why the INT8 models in ``directory`` cannot be run (missing, changed, made from other inputs)."""
    try:
        manifest = read_manifest(directory)
    except ValueError as e:
        return [str(e)]
    problems = changed_models(directory, manifest, KINDS)
    for kind in KINDS:
        path, _ = read_table(networks[kind])
        want = _recipe(networks[kind], path, fp32_dir / fp32_manifest["models"][kind]["file"])
        entry = manifest["models"].get(kind, {})
        differ = [k for k, v in want.items() if entry.get(k) != v]
        if differ and not any(p.startswith(f"{kind}:") for p in problems):
            problems.append(f"{kind}: made from another {', '.join(differ)}")
    return problems


def ensure_int8(networks: dict[str, LoadedNetwork], model_dir: str | Path | None = None) -> tuple[Path, dict]:
    """The folder of the INT8 models of ``KINDS`` beside the FP32 export (``ensure_export``) and its manifest:
    made now where it is missing in the cache, made again (with a warning) where a cached one
    changed or was made from other weights, tables or settings; refused (ValueError) in a ``model_dir``."""
    fp32_dir, fp32_manifest = ensure_export(networks, model_dir)
    directory = fp32_dir / INT8_DIR
    problems = _stale(directory, fp32_dir, fp32_manifest, networks)
    if not problems:
        return directory, read_manifest(directory)
    if model_dir:
        raise ValueError(f"{directory}: {'; '.join(problems)}; run `lift-localizer export --output {model_dir} "
                         "--precision int8`")
    if directory.exists():
        log.warning("%s: %s; quantising again", directory, "; ".join(problems))
    manifest = write_atomically(directory, lambda tmp: write_int8(tmp, fp32_dir, fp32_manifest, networks),
                                replace=directory.exists())
    return directory, manifest
