"""ONNX export and the ONNX Runtime back end against the PyTorch reference."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
onnx = pytest.importorskip("onnx", reason="onnx is not installed")

from lift_localizer.backends import make_backend  # noqa: E402
from lift_localizer.backends.export import OPSET, export_onnx, read_manifest  # noqa: E402
from lift_localizer.features.lift import Lift, load_networks  # noqa: E402
from lift_localizer.synthetic import demo_views, make_texture  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    networks = load_networks()
    return out, export_onnx(out, networks), networks


def test_manifest_names_files_shapes_and_weight_hashes(exported):
    out, manifest, networks = exported
    assert read_manifest(out) == json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["opset"] == OPSET == 17
    for kind in ("det", "ori", "desc"):
        m = manifest["models"][kind]
        assert (out / m["file"]).exists() and m["weights_sha256"] == networks[kind].sha256
        model = onnx.load(str(out / m["file"]))
        assert model.opset_import[0].version == OPSET
        assert "AffineGrid" not in {n.op_type for n in model.graph.node}
    dims = onnx.load(str(out / "det.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 1, "height", "width"]
    assert "netvlad_lift" in manifest["models"]


def test_onnx_runtime_matches_torch_per_network(exported):
    out, _, networks = exported
    ref = make_backend("torch", networks)
    ort = make_backend("onnx", networks, model_dir=str(out))
    g = torch.Generator().manual_seed(0)
    for h, w in ((61, 83), (130, 97)):   # shapes other than the export's example: H and W are dynamic
        level = torch.randn(1, 1, h, w, generator=g)
        torch.testing.assert_close(ort.det(level), ref.det(level), rtol=1e-4, atol=1e-4)
    for n in (1, 7, 300):
        patches = torch.randn(n, 1, 64, 64, generator=g)
        torch.testing.assert_close(ort.ori(patches), ref.ori(patches), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ort.desc(patches), ref.desc(patches), rtol=1e-4, atol=1e-5)
    assert ort.desc(torch.zeros(0, 1, 64, 64)).shape == (0, 128)
    # Its threads do not spin after a run: that took the cores from the PyTorch stages after it.
    for session in ort.sessions.values():
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_netvlad_export_matches_torch(exported):
    import onnxruntime as ort

    from lift_localizer.weights import load_network

    out, manifest, _ = exported
    net = load_network("netvlad", "netvlad_lift")
    x = np.random.default_rng(0).normal(size=(321, 128)).astype(np.float32)
    session = ort.InferenceSession(str(out / manifest["models"]["netvlad_lift"]["file"]))
    (got,) = session.run(None, {"descriptors": x})
    np.testing.assert_allclose(got, net.module(torch.from_numpy(x)[None]).detach().numpy(), atol=1e-5)


def test_lift_with_onnx_back_end_gives_the_same_features(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path))   # exported on first use, into the cache
    gray = demo_views(make_texture(), image_size=(240, 320))[0].image.astype(np.float32)
    a = Lift({"max_keypoints": 200})(gray)
    b = Lift({"max_keypoints": 200, "backend": "onnx"})(gray)
    assert list(tmp_path.glob("onnx/*/manifest.json"))
    c = Lift({"max_keypoints": 200, "backend": "onnx", "model_dir": str(exported[0])})(gray)
    np.testing.assert_array_equal(c.descriptors, b.descriptors)
    np.testing.assert_allclose(b.keypoints, a.keypoints, atol=1e-2)
    np.testing.assert_allclose(b.descriptors, a.descriptors, atol=1e-4)


def test_export_of_other_weights_is_refused(exported, tmp_path):
    from lift_localizer.backends.onnx_cache import ensure_export

    out, manifest, networks = exported
    bad = json.loads((out / "manifest.json").read_text())
    bad["models"]["desc"]["weights_sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="other weights"):
        ensure_export(networks, tmp_path)
    with pytest.raises(ValueError, match="not an export manifest"):
        read_manifest(tmp_path / "nothing")


def test_changed_export_is_exported_again_in_the_cache_and_refused_elsewhere(exported, tmp_path, monkeypatch,
                                                                               caplog):
    import shutil

    from lift_localizer.backends.export import changed_models
    from lift_localizer.backends.onnx_cache import cache_dir, ensure_export

    out, _, networks = exported
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    for directory in (cache_dir(networks), tmp_path / "mine"):
        shutil.copytree(out, directory)
        data = (directory / "desc.onnx").read_bytes()
        (directory / "desc.onnx").write_bytes(data[:-8] + bytes(8))
    with caplog.at_level("WARNING"):
        directory, manifest = ensure_export(networks)
    assert "desc.onnx differs from the file exported" in caplog.text
    assert directory == cache_dir(networks) and changed_models(directory, manifest, ("det", "ori", "desc")) == []
    with pytest.raises(ValueError, match="desc.onnx differs from the file exported"):
        ensure_export(networks, tmp_path / "mine")
