"""INT8 DESC on ONNX Runtime: made from the shipped tables, cached and checked like the FP32
export, close to FP32, and reached from the command line's --precision."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
pytest.importorskip("onnx", reason="onnx is not installed")

from lift_localizer.backends import make_backend  # noqa: E402
from lift_localizer.backends.export import changed_models  # noqa: E402
from lift_localizer.backends.onnx_cache import cache_dir  # noqa: E402
from lift_localizer.backends.onnx_int8 import CALIBRATED, INT8_DIR, KINDS, ensure_int8, read_table, table_path  # noqa: E402
from lift_localizer.features.patches import PatchSampler  # noqa: E402
from lift_localizer.synthetic import demo_views, make_texture  # noqa: E402
from lift_localizer.weights import load_networks  # noqa: E402


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The INT8 models made once into a cache of this module's own."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_LOCALIZER_CACHE", str(root))
        networks = load_networks()
        directory, manifest = ensure_int8(networks)
    return root, networks, directory, manifest


@pytest.fixture()
def cache(made, tmp_path, monkeypatch):
    """A copy of the made cache, for a test to change."""
    root, networks, _, _ = made
    shutil.copytree(root, tmp_path / "cache")
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    return networks, cache_dir(networks) / INT8_DIR


def synthetic_patches(n: int = 512) -> torch.Tensor:
    """(n, 1, 64, 64) DESC-normalised patches of rendered views at random places, scales and angles."""
    g = torch.Generator().manual_seed(0)
    out = []
    for view in demo_views(make_texture(), image_size=(240, 320))[:4]:
        sampler = PatchSampler(torch.from_numpy(view.image.astype(np.float32))[None, None], 64)
        xy = torch.rand(n // 4, 2, generator=g) * torch.tensor([200.0, 120.0]) + torch.tensor([60.0, 60.0])
        support = 20 + 40 * torch.rand(n // 4, generator=g)
        angle = 2 * np.pi * torch.rand(n // 4, generator=g)
        out.append(sampler(xy, support, angle))
    desc = load_networks()["desc"]
    return (torch.cat(out) - desc.mean) / desc.std


def test_int8_models_are_made_beside_the_fp32_export(made):
    root, networks, directory, manifest = made
    assert directory == root / cache_dir(networks).relative_to(cache_dir(networks).parents[1]) / INT8_DIR
    assert (directory.parent / "manifest.json").is_file()
    assert changed_models(directory, manifest, KINDS) == []
    for kind in KINDS:
        entry = manifest["models"][kind]
        assert entry["weights_sha256"] == networks[kind].sha256 and entry["quant_format"] == "QOperator"
        assert entry["table_sha256"] and entry["fp32_sha256"]
    # No temporary folder is left behind.
    assert sorted(p.name for p in directory.parent.iterdir() if p.name.startswith(".")) == []


def test_a_made_cache_is_reused(cache, monkeypatch):
    networks, directory = cache
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    monkeypatch.setattr("lift_localizer.backends.onnx_int8.write_int8", lambda *a: pytest.fail("quantised again"))
    assert ensure_int8(networks)[0] == directory
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before


def test_a_changed_cached_int8_model_is_made_again(cache, caplog):
    networks, directory = cache
    data = (directory / "desc.int8.onnx").read_bytes()
    (directory / "desc.int8.onnx").write_bytes(data[:-8] + bytes(8))
    with caplog.at_level("WARNING"):
        _, manifest = ensure_int8(networks)
    assert "desc.int8.onnx differs from the file exported" in caplog.text and "quantising again" in caplog.text
    assert changed_models(directory, manifest, KINDS) == []
    assert (directory / "desc.int8.onnx").read_bytes() == data


def test_int8_made_with_other_settings_is_made_again(cache, caplog):
    networks, directory = cache
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["models"]["desc"]["quant_format"] = "QDQ"
    (directory / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING"):
        _, manifest = ensure_int8(networks)
    assert "desc: made from another quant_format" in caplog.text
    assert manifest["models"]["desc"]["quant_format"] == "QOperator"


def test_a_changed_model_dir_is_refused(made, tmp_path):
    _, networks, directory, _ = made
    mine = tmp_path / "mine"
    shutil.copytree(directory.parent, mine)
    assert ensure_int8(networks, mine)[0] == mine / INT8_DIR
    data = (mine / INT8_DIR / "desc.int8.onnx").read_bytes()
    (mine / INT8_DIR / "desc.int8.onnx").write_bytes(data[:-8] + bytes(8))
    with pytest.raises(ValueError, match="desc.int8.onnx differs from the file exported.*--precision int8"):
        ensure_int8(networks, mine)
    shutil.rmtree(mine / INT8_DIR)
    with pytest.raises(ValueError, match="not an export manifest.*--precision int8"):
        make_backend("onnx", networks, model_dir=str(mine), precision="int8")


def test_tables_are_for_the_shipped_weights_and_refused_for_others(tmp_path):
    networks = load_networks()
    for kind in CALIBRATED:
        path, table = read_table(networks[kind])
        assert path == table_path(networks[kind]) and table["patches"] >= 1024 and "mexico" in table["source"]
    # Weights elsewhere without a table, and a table recorded with other weights.
    for suffix in (".safetensors", ".json"):
        shutil.copy(networks["desc"].path.with_suffix(suffix), tmp_path / f"desc{suffix}")
    other = load_networks({"desc": str(tmp_path / "desc")})
    with pytest.raises(ValueError, match=r"not an INT8 calibration table of desc \(none for these weights\)") as e:
        read_table(other["desc"])
    # The command that records one names these weights (a path stem here, a name for shipped ones).
    assert f"python tools/int8_tables.py --desc {tmp_path / 'desc'}`" in str(e.value)
    thin = load_networks({"desc": "desc_thin"})["desc"]
    with pytest.raises(ValueError, match="int8_tables.py --desc desc_thin`"):
        read_table(thin)
    table = json.loads(table_path(networks["desc"]).read_text())
    table["weights_sha256"] = "0" * 64
    table_path(other["desc"]).write_text(json.dumps(table))
    with pytest.raises(ValueError, match="recorded with other weights"):
        read_table(other["desc"])


# Measured on these synthetic patches: relative L2 error median 0.0022, largest 0.013; every
# INT8 descriptor has its own FP32 descriptor as nearest neighbour (docs/benchmarks.md for real patches).
REL_L2_MEDIAN, REL_L2_MAX = 0.01, 0.05


def test_int8_desc_agrees_with_fp32(made):
    root, networks, _, _ = made
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIFT_LOCALIZER_CACHE", str(root))
        fp32 = make_backend("onnx", networks)
        int8 = make_backend("auto", networks, precision="int8")
    assert int8.patch_backend.precision == "int8" and int8.det_backend.name == "torch"
    # ORI stays FP32 (onnx_int8.KINDS): the same angles as the FP32 back end.
    np.testing.assert_array_equal(int8.ori(synthetic_patches(64)).numpy(), fp32.ori(synthetic_patches(64)).numpy())
    patches = synthetic_patches()
    a, b = fp32.desc(patches).numpy(), int8.desc(patches).numpy()
    rel = np.linalg.norm(b - a, axis=1) / np.linalg.norm(a, axis=1)
    assert np.median(rel) < REL_L2_MEDIAN and rel.max() < REL_L2_MAX
    d2 = ((b[:, None] - a[None]) ** 2).sum(-1)
    assert (d2.argmin(1) == np.arange(len(a))).all()
    assert not np.array_equal(a, b)   # it is not the FP32 model under another name


def test_int8_is_refused_where_it_cannot_run(monkeypatch):
    networks = load_networks()
    with pytest.raises(ValueError, match="runs on the CPU"):
        make_backend("onnx", networks, device="cuda", precision="int8")
    with pytest.raises(ValueError, match="fp32 or int8"):
        make_backend("onnx", networks, precision="fp16")
    import lift_localizer.backends as backends

    monkeypatch.setattr(backends, "BACKENDS", ("auto", "torch"))
    monkeypatch.setattr(backends, "unavailable", lambda name: "onnx: the onnxruntime Python package is not installed")
    with pytest.raises(backends.BackendUnavailable, match="precision int8 on the CPU.*onnxruntime"):
        make_backend("auto", networks, precision="int8")


@pytest.mark.parametrize("command", [["evaluate", "--map", "m", "--bag", "b"], ["localize", "--map", "m", "--bag", "b",
                                                                              "-o", "p.txt"]])
def test_precision_reaches_the_extractor_from_the_command_line(made, command, monkeypatch):
    from lift_localizer.cli import build_parser
    from lift_localizer.commands import localizer_conf
    from lift_localizer.features.extractors import LiftExtractor
    from lift_localizer.localization.localizer import default_conf

    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(made[0]))
    conf = localizer_conf(build_parser().parse_args([*command, "--precision", "int8"]))
    assert conf["precision"] == "int8"
    extractor_conf = LiftExtractor.query_conf({"max_keypoints": 100}, {}, {**default_conf, **conf})
    extractor = LiftExtractor(extractor_conf)
    assert extractor.lift.backend.patch_backend.precision == "int8"
    assert localizer_conf(build_parser().parse_args(command))["precision"] is None


def test_extract_and_build_map_take_precision(monkeypatch, tmp_path):
    from lift_localizer.cli import build_parser, main

    seen = []
    monkeypatch.setattr("lift_localizer.features.lift.Lift.__init__",
                        lambda self, conf=None, networks=None: seen.append(conf) or (_ for _ in ()).throw(ValueError("stop")))
    assert main(["extract", str(tmp_path / "x.png"), "-o", str(tmp_path / "f.h5"), "--precision", "int8"]) == 2
    assert seen[-1]["precision"] == "int8"
    from lift_localizer.commands.build_map import run_build_map
    from lift_localizer.mapping import build, pairs

    made = {}

    def extractor(name, conf):
        made[name] = conf
        if len(made) == 2:
            raise ValueError("stop")

    monkeypatch.setattr("lift_localizer.commands.build_map.load_frames", lambda args, with_poses: ([1, 2], None))
    monkeypatch.setattr(build, "usable_frames", lambda frames, log: frames)
    monkeypatch.setattr(pairs, "make_extractor", extractor)   # ExtractorSet builds the map's extractors
    args = build_parser().parse_args(["build-map", "--bag", str(tmp_path), "-o", str(tmp_path / "m"),
                                      "--precision", "int8", "--features", "lift", "sift"])
    assert run_build_map(args) == 2
    assert made["lift"]["precision"] == "int8" and "precision" not in made["sift"]


def test_export_writes_the_int8_models_a_model_dir_runs(tmp_path, capsys):
    from lift_localizer.cli import main

    assert main(["export", "--output", str(tmp_path / "dir"), "--precision", "int8", "--no-netvlad"]) == 0
    assert "desc int8:" in capsys.readouterr().err
    networks = load_networks()
    directory, manifest = ensure_int8(networks, tmp_path / "dir")
    assert directory == tmp_path / "dir" / INT8_DIR and sorted(manifest["models"]) == sorted(KINDS)
    backend = make_backend("onnx", networks, model_dir=str(tmp_path / "dir"), precision="int8")
    assert backend.sessions["desc"]._model_path == str(directory / "desc.int8.onnx")
