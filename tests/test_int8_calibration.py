"""INT8 calibration: the calibration data (checked here against the inputs LIFT itself hands its
back end), the table's cache key, calibrate()'s bookkeeping up to TensorRT, the calibrator's
buffer handling against a stand-in TensorRT module, the CLI without TensorRT; and, where
TensorRT and a CUDA GPU exist, real INT8 engines against the PyTorch reference."""
from __future__ import annotations

import ctypes
import hashlib
import importlib
import math
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from host_cuda import HostMemoryApi

from lift_localizer.backends import int8_calibration as cal
from lift_localizer.features.extractors import reference_lift
from lift_localizer.backends import tensorrt_backend as trtb

CONF = {"max_keypoints": 100, "device": "cpu"}


def REFERENCE():  # noqa: N802 — the calibration's extractor factory, as a constant
    return reference_lift(CONF)
DET_HW = (64, 64)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    """Three small textured views and one file that is not an image."""
    from lift_localizer.synthetic import demo_views, make_texture

    d = tmp_path_factory.mktemp("calibration_images")
    for i, view in enumerate(demo_views(make_texture(512), image_size=(120, 160))[:3]):
        cv2.imwrite(str(d / f"view{i}.png"), np.clip(view.image, 0, 255).astype(np.uint8))
    (d / "broken.png").write_bytes(b"not a png")
    return d


# ---------------------------------------------------------------- the calibration data (runs everywhere)


class _Spy:
    """A back end that records every input LIFT hands it (what the engines would be fed)."""

    def __init__(self, inner):
        self.inner, self.levels, self.ori_in, self.desc_in = inner, [], [], []

    def det(self, level):
        self.levels.append(level[0, 0].numpy().copy())
        return self.inner.det(level)

    def ori(self, patches):
        self.ori_in.append(patches.numpy().copy())
        return self.inner.ori(patches)

    def desc(self, patches):
        self.desc_in.append(patches.numpy().copy())
        return self.inner.desc(patches)


def _is_window(crop, levels):
    """crop (h, w) is an exact window of one of the levels."""
    h, w = crop.shape
    for level in levels:
        if level.shape[0] < h or level.shape[1] < w:
            continue
        for y, x in np.argwhere(level[:level.shape[0] - h + 1, :level.shape[1] - w + 1] == crop[0, 0]):
            if np.array_equal(level[y:y + h, x:x + w], crop):
                return True
    return False


def test_batches_are_exactly_what_lift_feeds_its_back_end(image_dir, networks):
    from lift_localizer.features.extractors import LiftExtractor
    from lift_localizer.images import read_image

    data = cal.calibration_batches(image_dir, patch_batch=32, det_hw=DET_HW, det_crops_per_image=4,
                                   max_patches=96, reference=REFERENCE)
    assert [p.name for p in data.images] == ["view0.png", "view1.png", "view2.png"]
    assert len(data.skipped) == 1 and "broken.png" in data.skipped[0]
    # The same images through the localizer's own extractor, its back end spied on.
    spy_extractor = LiftExtractor({**CONF, "backend": "torch"})
    spy = spy_extractor.lift.backend = _Spy(spy_extractor.lift.backend)
    for path in data.images:
        spy_extractor(read_image(path))
    assert len(spy.levels) > 3 * 10 and len(spy.ori_in) == len(spy.desc_in) == 3

    det = data.batches["det"]
    assert len(det) == 3 * 4  # every image has levels of 64×64 and more
    assert all(b.shape == (1, 1, *DET_HW) and b.dtype == np.float32 and b.flags.c_contiguous for b in det)
    assert all(_is_window(b[0, 0], spy.levels) for b in det)
    # Normalised with the DET card: grey levels 0..255 map into [-mean/std, (255-mean)/std].
    m, s = networks["det"].mean, networks["det"].std
    assert all(-m / s - 1e-5 <= b.min() and b.max() <= (255 - m) / s + 1e-5 for b in det)
    assert np.std(np.concatenate([b.ravel() for b in det])) < 5

    per_image = math.ceil(96 / 4)  # the budget is spread over the 4 files given, the broken one included
    for name, seen in (("ori", spy.ori_in), ("desc", spy.desc_in)):
        batches = data.batches[name]
        kept = sum(min(len(x), per_image) for x in seen)
        assert len(batches) == kept // 32 >= 1
        assert all(b.shape == (32, 1, 64, 64) and b.dtype == np.float32 for b in batches)
        rows = {r.tobytes() for x in seen for r in x}
        assert all(r.tobytes() in rows for b in batches for r in b), f"{name}: a patch LIFT never fed"
        m, s = networks[name].mean, networks[name].std
        assert all(-m / s - 1e-5 <= b.min() and b.max() <= (255 - m) / s + 1e-5 for b in batches)
    assert 0.9 < data.det_coverage <= 1.0
    assert "det 12×(1, 1, 64, 64)" in data.summary()


def test_det_crops_weigh_levels_by_their_outputs():
    class Inner:
        def det(self, level):
            return level[0, 0, 12:-12, 12:-12]

    rec = cal._Recorder(Inner(), (64, 64), det_crops=4000, patches_per_image=0, rng=np.random.default_rng(0))
    for value, side in ((1.0, 200), (2.0, 100), (3.0, 50)):  # the 50-pixel level is smaller than a crop
        rec.det(torch.full((1, 1, side, side), value))
    rec.end_image()
    sources = np.array([c[0, 0, 0, 0] for c in rec.crops])
    assert len(sources) == 4000 and set(np.unique(sources)) == {1.0, 2.0}
    big, mid, small = 176 ** 2, 76 ** 2, 26 ** 2
    assert abs((sources == 1.0).mean() - big / (big + mid)) < 0.03
    assert rec.outputs_sampled == big + mid and rec.outputs_total == big + mid + small
    assert rec.levels == []  # nothing of one image is kept for the next


def test_image_selection_spreads_over_the_folder(tmp_path):
    for i in range(10):
        (tmp_path / f"f{i:02d}.png").touch()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "g.JPG").touch()
    (tmp_path / "notes.txt").touch()
    names = [p.name for p in cal.image_paths(tmp_path, 100)]
    assert names == [f"f{i:02d}.png" for i in range(10)] + ["g.JPG"]
    assert [p.name for p in cal.image_paths(tmp_path, 3)] == ["f00.png", "f05.png", "g.JPG"]
    assert cal.image_paths(tmp_path / "f03.png") == [tmp_path / "f03.png"]


def test_too_little_data_and_other_weights_are_refused(image_dir):
    one = [image_dir / "view0.png"]
    with pytest.raises(ValueError, match="fewer than one calibration batch of 1024"):
        cal.calibration_batches(one, patch_batch=1024, det_hw=DET_HW, reference=REFERENCE)
    with pytest.raises(ValueError, match="DET: no scale-space level"):
        cal.calibration_batches(one, patch_batch=32, det_hw=(4000, 4000), reference=REFERENCE)
    with pytest.raises(ValueError, match="export was made from weights"):
        cal.calibration_batches([image_dir / "absent.png"], reference=REFERENCE, expected_weights={"desc": "0" * 64})
    with pytest.raises(ValueError, match="no images"):
        cal.calibration_batches(image_dir / "empty_folder_that_is_not_there", reference=REFERENCE)


# ---------------------------------------------------------------- the table's cache key


KEY = {"network": "det", "gpu_name": "NVIDIA Jetson AGX Orin", "compute_capability": (8, 7),
       "tensorrt_version": "10.3.0", "weights_sha256": "a" * 64, "onnx_sha256": "b" * 64}


def test_calibration_key_names_what_the_table_depends_on():
    key = trtb.calibration_cache_key(**KEY)
    assert len(key) == 64 and key == trtb.calibration_cache_key(**{**KEY, "gpu_name": " NVIDIA Jetson  AGX Orin"})
    for field, value in [("network", "desc"), ("gpu_name", "NVIDIA H100"), ("compute_capability", (9, 0)),
                         ("tensorrt_version", "8.6.2"), ("weights_sha256", "c" * 64), ("onnx_sha256", "d" * 64)]:
        assert trtb.calibration_cache_key(**{**KEY, field: value}) != key, field
    # Not an engine's key, and named apart from the engines in the same folder.
    engine = trtb.engine_cache_key(**KEY, precision="int8", profile=((1, 1, 27, 27),) * 3)
    assert engine != key
    assert trtb.calibration_file_name("det", key) == f"det-int8-{key[:24]}.calib"


# ---------------------------------------------------------------- calibrate() up to TensorRT


class _FakeTrtModule:
    __version__ = "10.3.0"


class _FakeCalibrator:
    def __init__(self, batches, cache_file, api=None):
        self.batches, self.cache_file, self.api = batches, Path(cache_file), api
        self.served, self.error = 0, None


def _fake_tensorrt(monkeypatch, build):
    monkeypatch.setattr(trtb, "available", lambda: (True, "a stand-in TensorRT"))
    monkeypatch.setattr(trtb, "_trt", lambda: (_FakeTrtModule, None))
    monkeypatch.setattr(trtb, "_device_info", lambda api: ("Fake GPU", (8, 7)))
    monkeypatch.setattr(cal, "make_calibrator", _FakeCalibrator)
    monkeypatch.setattr(trtb, "build_engine", build)


def _onnx_hashes(root):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.onnx"))}


def test_calibrate_writes_tables_and_engines_the_back_end_then_finds(monkeypatch, exported, image_dir, tmp_path):
    builds = {}

    def build(onnx_path, profile, precision, calibrator, calibration_shape):
        # What TensorRT does: take every batch, then write the table.
        builds[onnx_path.stem] = (profile, precision, calibration_shape, len(calibrator.batches))
        calibrator.served = len(calibrator.batches)
        calibrator.cache_file.write_bytes(b"TRT-100300-EntropyCalibration2 " + onnx_path.name.encode())
        return b"engine of " + onnx_path.name.encode()

    _fake_tensorrt(monkeypatch, build)
    before = _onnx_hashes(exported)
    cache = tmp_path / "cache"
    tables, data = trtb.calibrate(exported, image_dir, cache, max_batch=32, det_hw=DET_HW, max_patches=96,
                                  reference=REFERENCE)
    assert set(tables) == {"det", "ori", "desc"} and all(p.parent == cache and p.is_file() for p in tables.values())
    assert all(p.name.startswith(f"{n}-int8-") and p.suffix == ".calib" for n, p in tables.items())
    assert builds["det"][:3] == (trtb.det_profile(trtb.DEFAULT_LEVELS_HW), "int8", (1, 1, *DET_HW))
    for name in ("ori", "desc"):
        assert builds[name][:3] == (trtb.batch_profile(32), "int8", (32, 1, 64, 64))
        assert builds[name][3] == len(data.batches[name]) >= 1
    # INT8 changes nothing in the exported graphs: same files, so the same operator check holds.
    assert _onnx_hashes(exported) == before

    # The back end, asked for INT8 with the same profiles, looks up exactly these tables and engines.
    backend = object.__new__(trtb.TensorRTBackend)
    backend.root, backend.manifest = exported, trtb.load_manifest(exported)
    backend.precision, backend.api = "int8", None
    backend.cache_dir = backend.calibration_dir = cache
    backend.profiles = {"det": trtb.det_profile(trtb.DEFAULT_LEVELS_HW), "ori": trtb.batch_profile(32),
                        "desc": trtb.batch_profile(32)}
    for name in ("det", "ori", "desc"):
        assert backend.calibration_path(name) == tables[name]
        path = backend.engine_path(name)
        assert path.is_file() and path.read_bytes() == f"engine of {name}.onnx".encode()
    # A new calibration is a new table, hence a new engine key.
    old = backend.engine_path("desc")
    tables["desc"].write_bytes(b"another table")
    assert backend.engine_path("desc") != old
    # No table: a clear error that says how to make one.
    backend.calibration_dir = tmp_path / "elsewhere"
    with pytest.raises(trtb.TensorRTError, match="--precision int8 --calibration-images"):
        backend.engine_path("det")


def test_calibrate_reports_what_went_wrong_inside_tensorrt(monkeypatch, exported, image_dir, tmp_path):
    def build_failing_batch(onnx_path, profile, precision, calibrator, calibration_shape):
        calibrator.served, calibrator.error = 1, MemoryError("cudaMalloc failed")
        return b"engine"

    _fake_tensorrt(monkeypatch, build_failing_batch)
    one = [image_dir / "view0.png"]
    kwargs = {"max_batch": 32, "det_hw": DET_HW, "max_patches": 64, "reference": REFERENCE}
    with pytest.raises(trtb.TensorRTError, match="batch 2 failed: cudaMalloc failed"):
        trtb.calibrate(exported, one, tmp_path, **kwargs)
    monkeypatch.setattr(trtb, "build_engine", lambda *a: b"engine")  # no batch taken, no table written
    with pytest.raises(trtb.TensorRTError, match="took 0 calibration batches and wrote no table"):
        trtb.calibrate(exported, one, tmp_path, **kwargs)
    assert not list(tmp_path.glob("*.engine"))


def test_calibrate_without_tensorrt_says_why(monkeypatch, exported, image_dir):
    monkeypatch.setattr(trtb, "available", lambda: (False, "TensorRT is not installed (no Python module 'tensorrt')"))
    with pytest.raises(trtb.TensorRTError, match="inside TensorRT's engine build.*not installed"):
        trtb.calibrate(exported, image_dir, reference=REFERENCE)
    if cal.trt is None:
        with pytest.raises(trtb.TensorRTError, match="TensorRT"):
            cal.make_calibrator([np.zeros((1, 1, 64, 64), np.float32)], "x.calib")


def test_int8_adds_no_operator_to_the_exported_graphs(exported):
    """Implicit quantization: no Q/DQ nodes; the graphs TensorRT parses for INT8 are those the
    operator check (test_tensorrt_backend) covers."""
    import onnx

    for name in ("det", "ori", "desc"):
        ops = {n.op_type for n in onnx.load(str(exported / f"{name}.onnx")).graph.node}
        assert not ops & {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}, name


# ---------------------------------------------------------------- the calibrator, against a stand-in TensorRT


@pytest.fixture
def stand_in_calibration(monkeypatch):
    """int8_calibration imported with a minimal ``tensorrt`` module (just the calibrator base class)."""
    fake = types.ModuleType("tensorrt")
    fake.__version__ = "10.3.0"

    class IInt8EntropyCalibrator2:
        def __init__(self):
            self.base_initialised = True

    fake.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    try:
        yield importlib.reload(cal)
    finally:
        monkeypatch.undo()
        importlib.reload(cal)


def test_calibrator_hands_tensorrt_device_pointers_and_keeps_its_table(stand_in_calibration, tmp_path):
    mod = stand_in_calibration
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((32, 1, 64, 64)).astype(np.float32) for _ in range(3)]
    table = tmp_path / "tables" / "desc-int8-x.calib"
    table.parent.mkdir()
    table.write_bytes(b"an older table")
    c = mod.make_calibrator(batches, table, HostMemoryApi())
    assert isinstance(c, mod.trt.IInt8EntropyCalibrator2) and c.base_initialised
    assert c.get_batch_size() == 1
    assert c.read_calibration_cache() is None  # calibrating: the older table must not replace the new data
    for batch in batches:
        (ptr,) = c.get_batch(["patches"])
        got = np.ctypeslib.as_array((ctypes.c_float * batch.size).from_address(ptr)).reshape(batch.shape)
        np.testing.assert_array_equal(got, batch)
    assert c.get_batch(["patches"]) is None and c.served == 3 and c.error is None
    c.write_calibration_cache(memoryview(b"TRT-100300-EntropyCalibration2\nlevel: 3c010a14\n"))
    assert table.read_bytes().startswith(b"TRT-100300")
    replay = mod.make_calibrator(None, table)
    assert replay.read_calibration_cache() == table.read_bytes() and replay.get_batch(["patches"]) is None
    # An exception inside get_batch would be swallowed by TensorRT: it is kept for calibrate() to raise.
    bad = mod.make_calibrator([np.zeros((2, 1, 64, 64), np.float32)], table, HostMemoryApi())
    assert bad.get_batch(["a", "b"]) is None and "one input" in str(bad.error)


# ---------------------------------------------------------------- the command line


@pytest.fixture
def fake_export(monkeypatch):
    from lift_localizer.backends import export

    calls = []

    def export_onnx(output, netvlad=True):
        calls.append(output)
        return {"opset": 17, "models": {}}

    monkeypatch.setattr(export, "export_onnx", export_onnx)
    return calls


def test_cli_int8_without_tensorrt_names_the_reason(monkeypatch, fake_export, image_dir, tmp_path, capsys):
    from lift_localizer.cli import main

    monkeypatch.setattr(trtb, "available", lambda: (False, "TensorRT is not installed (no Python module 'tensorrt')"))
    rc = main(["export", "--output", str(tmp_path / "models"), "--backend", "tensorrt", "--precision", "int8",
               "--calibration-images", str(image_dir), "--no-netvlad"])
    err = capsys.readouterr().err
    assert rc == 2 and fake_export  # the ONNX models are written first
    assert "INT8 calibration and TensorRT engines need TensorRT" in err and "no Python module 'tensorrt'" in err


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt", "--precision", "fp16"], "use it with --backend tensorrt --precision int8"),
    (["--backend", "onnx", "--precision", "int8"], "use it with --backend tensorrt --precision int8"),
])
def test_cli_refuses_calibration_images_without_int8(fake_export, image_dir, tmp_path, capsys, args, message):
    from lift_localizer.cli import main

    rc = main(["export", "--output", str(tmp_path), *args, "--calibration-images", str(image_dir)])
    assert rc == 2 and message in capsys.readouterr().err and not fake_export


def test_cli_checks_the_images_before_exporting(fake_export, tmp_path, capsys):
    from lift_localizer.cli import main

    base = ["export", "--output", str(tmp_path / "m"), "--backend", "tensorrt", "--precision", "int8"]
    assert main([*base, "--calibration-images", str(tmp_path / "nowhere")]) == 2
    assert "no such folder or file" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([*base, "--calibration-images", str(tmp_path / "empty")]) == 2
    assert "no images to calibrate on" in capsys.readouterr().err and not fake_export


# ---------------------------------------------------------------- TensorRT and a CUDA GPU


def test_int8_engines_from_a_real_calibration(trt_ready, exported, networks, image_dir, tmp_path):
    """calibrate() with TensorRT: tables and engines in the cache, loaded (not rebuilt) by the back
    end, and INT8 outputs near the PyTorch reference (bounds loose: INT8 has ~1 % steps)."""
    from lift_localizer.backends.torch_backend import TorchBackend

    tables, data = trtb.calibrate(exported, image_dir, tmp_path, max_batch=32, det_hw=DET_HW, max_patches=96,
                                  reference=REFERENCE)
    assert all(p.is_file() and p.stat().st_size > 0 for p in tables.values())
    engines = sorted(tmp_path.glob("*-int8-*.engine"))
    mtimes = [p.stat().st_mtime_ns for p in engines]
    assert len(engines) == 3
    backend = trtb.TensorRTBackend(exported, precision="int8", cache_dir=tmp_path, max_batch=32,
                                   expected_weights={k: n.sha256 for k, n in networks.items()})
    assert [p.stat().st_mtime_ns for p in sorted(tmp_path.glob("*-int8-*.engine"))] == mtimes
    ref = TorchBackend(networks)
    patches = torch.from_numpy(np.concatenate(data.batches["desc"]))
    cosine = torch.nn.functional.cosine_similarity(backend.desc(patches), ref.desc(patches), dim=1)
    assert cosine.mean() > 0.98 and cosine.min() > 0.9
    level = torch.from_numpy(data.batches["det"][0])
    want, got = ref.det(level), backend.det(level)
    assert torch.corrcoef(torch.stack([want.flatten(), got.flatten()]))[0, 1] > 0.95
