"""ONNX export of the LIFT networks (and NetVLAD) with a manifest, for ONNX Runtime and TensorRT.

    lift-localizer export --output DIR          # or export_onnx(DIR)

DIR/det.onnx   input "level"   (1, 1, H, W), H and W dynamic → "scores" (1, 1, H-24, W-24)
DIR/ori.onnx   input "patches" (N, 1, 64, 64), N dynamic     → "cos_sin" (N, 2)
DIR/desc.onnx  input "patches" (N, 1, 64, 64), N dynamic     → "descriptors" (N, 128)
DIR/netvlad_<features>.onnx  "descriptors" (N, 128) → "global" (1, 256)   (when that model is shipped)
DIR/manifest.json  format, opset, per model: file, inputs/outputs with shapes, weights_sha256, input
                   normalisation, the LIFT patch size.

Opset 17 with the classic exporter: JetPack's TensorRT 8.5/8.6 reads it (10.x reads up to 20), and
``dynamo=True`` would force opset ≥ 18. Patches are cropped outside the graphs (GridSample is slow
in ONNX Runtime, and the grids are built by a MatMul anyway), so no AffineGrid is ever exported.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from ..weights import LoadedNetwork, file_sha256

OPSET = 17
MANIFEST_FORMAT = 1
PATCH = 64


def _export(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
            dynamic: dict[int, str], output_dynamic: dict[int, str] | None = None) -> None:
    module = module.eval().float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the classic exporter's deprecation notice
        torch.onnx.export(module, (example,), str(path), input_names=[input_name], output_names=[output_name],
                          dynamic_axes={input_name: dynamic, output_name: output_dynamic or dict(dynamic)},
                          opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)


def export_onnx(output: str | Path, networks: dict[str, LoadedNetwork] | None = None,
                netvlad: bool = True) -> dict:
    """Write the ONNX models and manifest.json into ``output``; return the manifest."""
    import onnx

    from ..weights import load_networks

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    networks = networks or load_networks()
    models = {}
    specs = {
        "det": (torch.zeros(1, 1, 96, 128), "level", "scores", {2: "height", 3: "width"},
                {"level": ["1", "1", "H", "W"]}, {"scores": ["1", "1", "H-24", "W-24"]}),
        "ori": (torch.zeros(4, 1, PATCH, PATCH), "patches", "cos_sin", {0: "batch"},
                {"patches": ["N", "1", str(PATCH), str(PATCH)]}, {"cos_sin": ["N", "2"]}),
        "desc": (torch.zeros(4, 1, PATCH, PATCH), "patches", "descriptors", {0: "batch"},
                 {"patches": ["N", "1", str(PATCH), str(PATCH)]}, {"descriptors": ["N", "128"]}),
    }
    for kind, (example, iname, oname, dynamic, inputs, outputs) in specs.items():
        net = networks[kind]
        path = out / f"{kind}.onnx"
        # DET's output is 24 pixels smaller than its input: its own dimension names.
        _export(net.module, example, path, iname, oname, dynamic,
                {2: "height_minus_24", 3: "width_minus_24"} if kind == "det" else None)
        onnx.checker.check_model(str(path))
        models[kind] = {"file": path.name, "inputs": inputs, "outputs": outputs, "weights_sha256": net.sha256,
                        "weights": net.path.name, "trained": net.trained, "architecture": net.card.get("architecture"),
                        "input_normalisation": {"mean": net.mean, "std": net.std}, "file_sha256": file_sha256(path)}
    if netvlad:
        models.update(_export_netvlad(out))
    manifest = {"format": MANIFEST_FORMAT, "opset": OPSET, "torch": torch.__version__, "patch_size": PATCH,
                "models": models}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


class _OneImageNetVLAD(torch.nn.Module):
    """(N, dim) descriptors of one image → (1, D) global descriptor (no padding mask needed)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, descriptors: torch.Tensor) -> torch.Tensor:
        return self.net(descriptors[None])


def _export_netvlad(out: Path) -> dict:
    """The NetVLAD models shipped in lift_localizer/weights, one per local-feature kind."""
    from ..weights import WeightsError, load_network, shipped_netvlad_models

    models = {}
    for name in shipped_netvlad_models():
        try:
            net = load_network("netvlad", name)
        except WeightsError:
            continue
        path = out / f"{name}.onnx"
        dim = net.module.dim
        _export(_OneImageNetVLAD(net.module), torch.randn(50, dim), path, "descriptors", "global", {0: "keypoints"})
        models[name] = {"file": path.name, "inputs": {"descriptors": ["N", str(dim)]},
                        "outputs": {"global": ["1", str(net.module.out_dim)]}, "weights_sha256": net.sha256,
                        "file_sha256": file_sha256(path)}
    return models


def changed_models(directory: str | Path, manifest: dict, kinds: tuple[str, ...]) -> list[str]:
    """The models of ``kinds`` whose file is missing, outside ``directory`` or not the bytes the
    manifest recorded (``file_sha256``), each as a short reason; empty when all are as exported."""
    directory = Path(directory)
    problems = []
    for kind in kinds:
        entry = manifest.get("models", {}).get(kind)
        name = entry.get("file") if isinstance(entry, dict) else None
        want = entry.get("file_sha256") if isinstance(entry, dict) else None
        if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
            problems.append(f"{kind}: no file name in the manifest")
        elif not (directory / name).is_file() or (directory / name).is_symlink():
            problems.append(f"{kind}: {name} is missing")
        elif not isinstance(want, str):
            problems.append(f"{kind}: the manifest records no hash of {name}")
        elif file_sha256(directory / name) != want:
            problems.append(f"{kind}: {name} differs from the file exported (its hash)")
    return problems


def read_json(path: Path, what: str, remedy: str, missing: str) -> object:
    """The JSON in ``path``; ValueError "PATH: not WHAT (why); REMEDY" where it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: not {what} ({missing}); {remedy}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not {what} ({e}); {remedy}") from None


def read_manifest(directory: str | Path) -> dict:
    """The manifest of an export directory; ValueError naming the problem if it is not one."""
    path = Path(directory) / "manifest.json"
    export = f"run `lift-localizer export --output {directory}`"
    manifest = read_json(path, "an export manifest", export, "no manifest.json there")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        version = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path}: manifest format {version}, this version reads {MANIFEST_FORMAT}")
    if not isinstance(manifest.get("models"), dict) or not all(isinstance(v, dict) for v in manifest["models"].values()):
        raise ValueError(f"{path}: not an export manifest (no models); {export}")
    return manifest
