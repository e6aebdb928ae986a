"""TensorRT back end: what runs everywhere (operator support of the exported graphs, profiles,
engine cache key, the host-memory path against a stand-in engine) and, where TensorRT and a CUDA
GPU exist, engines built from the export against the PyTorch reference."""
from __future__ import annotations

import ctypes
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from host_cuda import HostMemoryApi

from lift_localizer.backends import BACKENDS, cuda_memory
from lift_localizer.backends import tensorrt_backend as trtb

OPS_FILE = Path(trtb.__file__).with_name("trt_supported_ops.json")
NAMES = {"det": ("level", "scores"), "ori": ("patches", "cos_sin"), "desc": ("patches", "descriptors")}
# Operators each network's layers must export to (so that an empty or truncated graph cannot pass).
CORE_OPS = {"det": {"Conv", "ReduceMax"}, "ori": {"Conv", "Relu", "MaxPool", "Gemm"}, "desc": {"Conv", "Tanh", "AveragePool"}}
# Input index of ``axes`` where the table restricts it to an initializer or a constant (TensorRT 10.1 for all of
# them; 8.6 for Slice, Squeeze and Unsqueeze).
AXES_INPUT = {"Slice": 3, "Squeeze": 1, "Unsqueeze": 1, "Pad": 3, "CumSum": 1, "ReduceL1": 1, "ReduceL2": 1,
              "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ReduceMax": 1, "ReduceMean": 1, "ReduceMin": 1,
              "ReduceProd": 1, "ReduceSum": 1, "ReduceSumSquare": 1}


def _all_nodes(graph):
    """Nodes of a graph and of every subgraph (If/Loop/Scan bodies)."""
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _all_nodes(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _all_nodes(g)


# ---------------------------------------------------------------- operator support (runs everywhere)


def test_supported_ops_file_records_its_source():
    table = json.loads(OPS_FILE.read_text())
    assert table["opset"] == 17
    assert {s["tensorrt"] for s in table["sources"]} == {"8.6", "10.1"}
    for s in table["sources"]:
        assert len(s["commit"]) == 40 and s["commit"] in s["url"] and s["url"].endswith("docs/operators.md")
    assert "GridSample" in table["supported"]  # since TensorRT 8.5
    assert not set(table["supported"]) & set(table["not_supported_in_both"])
    assert set(table["restrictions"]) <= set(table["supported"])
    assert "AffineGrid" not in table["supported"] and "AffineGrid" in table["not_supported_in_both"]
    assert {"Conv", "MaxPool", "Tanh", "Sqrt", "ReduceMax", "Gemm"} <= set(table["supported"])


def test_exported_graphs_use_only_operators_tensorrt_parses(exported):
    import onnx

    table = json.loads(OPS_FILE.read_text())
    supported = set(table["supported"])
    for kind, (iname, oname) in NAMES.items():
        model = onnx.load(str(exported / f"{kind}.onnx"))
        assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
        nodes = list(_all_nodes(model.graph))
        assert all(n.domain in ("", "ai.onnx") for n in nodes), f"{kind}: custom-domain nodes need plugins"
        used = {n.op_type for n in nodes}
        assert CORE_OPS[kind] <= used, f"{kind}.onnx lacks its layers' operators: {sorted(CORE_OPS[kind] - used)}"
        unsupported = sorted(used - supported)
        assert not unsupported, f"{kind}.onnx uses operators TensorRT 8.6/10 cannot parse: {unsupported}"
        # The table's "`axes` must be an initializer" (or constant tensor): an axes input comes from one.
        constants = {i.name for i in model.graph.initializer} | {o for n in nodes if n.op_type == "Constant" for o in n.output}
        for n in nodes:
            if n.op_type in AXES_INPUT and len(n.input) > AXES_INPUT[n.op_type] and n.input[AXES_INPUT[n.op_type]]:
                assert "axes" in table["restrictions"][n.op_type]
                assert n.input[AXES_INPUT[n.op_type]] in constants, f"{kind}: {n.op_type} {n.name} has computed axes"
        # Restrictions of the table that these graphs could meet: MaxPool without its Indices output.
        assert all(len(n.output) == 1 for n in nodes if n.op_type == "MaxPool")
        # The engine runner expects one float32 input and one float32 output, named as exported.
        assert [i.name for i in model.graph.input] == [iname] and [o.name for o in model.graph.output] == [oname]
        for t in (*model.graph.input, *model.graph.output):
            assert t.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


# ---------------------------------------------------------------- pure Python parts


KEY_ARGS = dict(network="det", gpu_name="NVIDIA Jetson AGX Orin", compute_capability=(8, 7), tensorrt_version="10.3.0",
                precision="fp16", profile=((1, 1, 59, 78), (1, 1, 940, 1253), (1, 1, 940, 1253)),
                weights_sha256="a" * 64, onnx_sha256="b" * 64, calibration_sha256="")


def test_cache_key_is_stable_and_hex():
    key = trtb.engine_cache_key(**KEY_ARGS)
    assert key == trtb.engine_cache_key(**KEY_ARGS) and len(key) == 64 and int(key, 16) >= 0
    # Lists and tuples, extra spaces in the GPU name: the same engine.
    same = {**KEY_ARGS, "profile": [list(s) for s in KEY_ARGS["profile"]], "gpu_name": " NVIDIA  Jetson AGX Orin ",
            "compute_capability": [8, 7]}
    assert trtb.engine_cache_key(**same) == key
    name = trtb.engine_file_name("det", "fp16", key)
    assert name.startswith("det-fp16-") and name.endswith(".engine") and key[:24] in name


@pytest.mark.parametrize("field, value", [
    ("network", "desc"), ("gpu_name", "NVIDIA H100 80GB HBM3"), ("compute_capability", (9, 0)),
    ("tensorrt_version", "8.6.2"), ("tensorrt_version", "10.3.1"), ("precision", "fp32"),
    ("profile", ((1, 1, 59, 78), (1, 1, 940, 1253), (1, 1, 941, 1253))), ("weights_sha256", "c" * 64),
    ("onnx_sha256", "d" * 64)])
def test_cache_key_changes_with_everything_an_engine_depends_on(field, value):
    assert trtb.engine_cache_key(**{**KEY_ARGS, field: value}) != trtb.engine_cache_key(**KEY_ARGS)


def test_cache_key_uses_the_calibration_only_for_int8():
    fp16 = {**KEY_ARGS, "calibration_sha256": "e" * 64}
    assert trtb.engine_cache_key(**fp16) == trtb.engine_cache_key(**KEY_ARGS)
    int8 = {**KEY_ARGS, "precision": "int8"}
    assert trtb.engine_cache_key(**{**int8, "calibration_sha256": "e" * 64}) != trtb.engine_cache_key(**int8)
    with pytest.raises(ValueError, match="precision"):
        trtb.engine_cache_key(**{**KEY_ARGS, "precision": "bf16"})


def test_det_profile_covers_every_level_of_the_camera():
    levels = trtb.levels_hw_for_image(480, 640)
    assert len(levels) == 13 and (332, 443) in levels and (59, 78) in levels
    lo, opt, hi = trtb.det_profile(levels)
    assert lo == (1, 1, 59, 78) and opt == hi == (1, 1, 332, 443)
    assert all(lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3] for h, w in levels)
    # The paper's scale space (its enlarged octave) needs the larger profile.
    from lift_localizer.nets.scale_space import PAPER_LEVELS

    paper = trtb.levels_hw_for_image(480, 640, PAPER_LEVELS)
    assert len(paper) == 21 and trtb.det_profile(paper)[2] == (1, 1, 940, 1253)
    # The profile spans each side separately: a tall and a wide level give the smallest of each.
    assert trtb.det_profile([(40, 300), (200, 30)]) == ((1, 1, 40, 30), (1, 1, 200, 300), (1, 1, 200, 300))
    with pytest.raises(ValueError, match="too small"):
        trtb.det_profile([(24, 100)])
    with pytest.raises(ValueError, match="empty"):
        trtb.det_profile([])


def test_batch_profile():
    assert trtb.batch_profile(1024) == ((1, 1, 64, 64), (1024, 1, 64, 64), (1024, 1, 64, 64))
    for bad in (0, 16, 100):
        with pytest.raises(ValueError, match="multiple of 32"):
            trtb.batch_profile(bad)


def test_manifest_is_checked(exported, tmp_path):
    assert set(trtb.load_manifest(exported)["models"]) >= {"det", "ori", "desc"}
    with pytest.raises(trtb.TensorRTError, match="no manifest"):
        trtb.load_manifest(tmp_path)
    manifest = json.loads((exported / "manifest.json").read_text())
    manifest["models"]["desc"]["file"] = "gone.onnx"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(trtb.TensorRTError, match="gone.onnx is missing"):
        trtb.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(trtb.TensorRTError, match="format 99"):
        trtb.load_manifest(tmp_path)


def test_availability_is_reported_with_a_reason():
    ok, why = trtb.available()
    assert isinstance(ok, bool) and why
    assert ("tensorrt" in BACKENDS) == ok and "torch" in BACKENDS
    ok, why = cuda_memory.available()
    assert isinstance(ok, bool) and why
    with pytest.raises(ValueError, match="unknown CUDA API"):
        cuda_memory.open_api("opencl")


class _TorchStandIn:
    """TorchBackend without a GPU: records how it was made."""
    name = "torch"

    def __init__(self, networks, **kwargs):
        self.kwargs = kwargs


@pytest.fixture()
def refusing_tensorrt(monkeypatch, tmp_path):
    """A machine that looks like a CUDA one with TensorRT, whose parser refuses the model; the torch
    back end is a stand-in, so nothing here needs a GPU."""
    import lift_localizer.backends as backends
    from lift_localizer.backends import onnx_backend, torch_backend

    def refuse(self, *args, **kwargs):
        raise trtb.TensorRTError("det.onnx: TensorRT's ONNX parser refused the model: In node 3 (Conv): bad")

    monkeypatch.setattr(backends, "BACKENDS", (*BACKENDS, "tensorrt"))
    real = backends.unavailable
    monkeypatch.setattr(backends, "unavailable", lambda name: None if name == "tensorrt" else real(name))
    monkeypatch.setattr(trtb, "available", lambda: (True, "TensorRT 10.3, stand-in"))
    monkeypatch.setattr(trtb.TensorRTBackend, "__init__", refuse)
    monkeypatch.setattr(onnx_backend, "ensure_export", lambda networks, model_dir=None: (tmp_path, {}))
    monkeypatch.setattr(torch_backend, "TorchBackend", _TorchStandIn)


def test_auto_on_cuda_falls_back_to_torch_when_tensorrt_fails(refusing_tensorrt, networks):
    from lift_localizer.backends import make_backend
    from lift_localizer.features.lift import Lift

    with pytest.warns(RuntimeWarning, match="TensorRT could not be used .*ONNX parser refused.*torch back end"):
        backend = make_backend("auto", networks, device="cuda")
    assert isinstance(backend, _TorchStandIn) and backend.kwargs["device"] == "cuda"
    assert backend.kwargs["det_conv"] is None and backend.kwargs["precision"] == "fp32"
    # Through Lift, as the localizer and the node make it: the extractor exists, on torch.
    with pytest.warns(RuntimeWarning, match="ONNX parser refused"):
        lift = Lift({"device": "cuda", "cuda_graph": False, "max_keypoints": 10}, networks=networks)
    assert isinstance(lift.backend, _TorchStandIn) and lift.backend.kwargs["det_conv"] == "measure"


def test_explicit_tensorrt_still_raises_its_error(refusing_tensorrt, networks):
    from lift_localizer.backends import make_backend

    with pytest.raises(trtb.TensorRTError, match="ONNX parser refused"):
        make_backend("tensorrt", networks, device="cuda")


# ---------------------------------------------------------------- the host path, against a stand-in engine


class _FakeTrt:
    class TensorIOMode:
        INPUT, OUTPUT = "input", "output"

    float32 = "float32"


class _HostMemory:
    """How the stand-in engine reads and writes its tensors' addresses: here, host memory."""

    def read(self, ptr, shape):
        return np.ctypeslib.as_array((ctypes.c_float * int(np.prod(shape))).from_address(ptr)).reshape(shape).copy()

    def write(self, ptr, array):
        ctypes.memmove(ptr, np.ascontiguousarray(array, np.float32).ctypes.data, array.nbytes)


class _DeviceMemory:
    """Device addresses, read and written synchronously through cuda_memory."""

    def __init__(self, api):
        self.stream = cuda_memory.Stream(api)

    def read(self, ptr, shape):
        torch.cuda.synchronize()  # the runner enqueued on torch's stream; this engine runs at once
        out = np.empty(shape, np.float32)
        self.stream.download(out, ptr)
        self.stream.synchronize()
        return out

    def write(self, ptr, array):
        self.stream.upload(ptr, np.ascontiguousarray(array, np.float32))
        self.stream.synchronize()


class _FakeEngine:
    """The name-based engine API TensorRT offers, running a torch module (on the CPU) at once on
    the tensors at the addresses it is given."""

    def __init__(self, module, names, profile, memory=None):
        self.module, self.names, self.profile = module, names, profile
        self.memory = memory or _HostMemory()
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return _FakeTrt.TensorIOMode.INPUT if name == self.names[0] else _FakeTrt.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return _FakeTrt.float32

    def create_execution_context(self):
        return _FakeContext(self)


class _FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses, self.batches = engine, {}, {}, []

    def set_input_shape(self, name, shape):
        lo, _, hi = self.engine.profile
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)):
            return False
        self.shapes[name] = tuple(shape)
        with torch.no_grad():
            self.shapes[self.engine.names[1]] = tuple(self.engine.module(torch.zeros(shape)).shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        iname, oname = self.engine.names
        self.batches.append(self.shapes[iname][0])
        memory = self.engine.memory
        with torch.no_grad():
            x = torch.from_numpy(memory.read(self.addresses[iname], self.shapes[iname]))
            memory.write(self.addresses[oname], self.engine.module(x).numpy())
        return True


def test_host_path_chunks_copies_and_reuses_buffers(monkeypatch, networks):
    monkeypatch.setattr(trtb, "_trt", lambda: (_FakeTrt, None))
    api = HostMemoryApi()
    g = torch.Generator().manual_seed(0)
    profile = trtb.batch_profile(32)
    desc = trtb._EngineRunner(_FakeEngine(networks["desc"].module, NAMES["desc"], profile), "desc", profile, api)
    patches = torch.randn(70, 1, 64, 64, generator=g)
    out = desc.run(patches, 32)
    assert desc.context.batches == [32, 32, 32]   # one shape for every call: the last padded with zeros
    assert out.shape == (70, 128)
    with torch.no_grad():
        torch.testing.assert_close(out, networks["desc"].module(patches), rtol=1e-5, atol=1e-5)
    allocated = api.allocations
    desc.run(patches[:40], 32)  # smaller: the buffers of the first call are reused
    assert api.allocations == allocated

    det_profile = trtb.det_profile([(60, 80), (100, 130)])
    det = trtb._EngineRunner(_FakeEngine(networks["det"].module, NAMES["det"], det_profile), "det", det_profile, api)
    level = torch.randn(1, 1, 77, 101, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(det.run(level, 1), networks["det"].module(level), rtol=1e-5, atol=1e-5)
    with pytest.raises(trtb.TensorRTError, match="outside the engine's profile"):
        det.run(torch.zeros(1, 1, 140, 100), 1)


@pytest.mark.parametrize("n,chunk,want", [(10, 1024, (1, 10)), (1024, 1024, (1, 1024)), (2000, 1024, (2, 1024)),
                                          (1500, 1024, (2, 768)), (1025, 1024, (2, 544)), (70, 32, (3, 32))])
def test_more_rows_than_a_batch_run_in_equal_aligned_batches(n, chunk, want):
    count, size = trtb.equal_chunks(n, chunk)
    assert (count, size) == want and count * size >= n and size <= chunk
    assert count == 1 or size % 32 == 0


def test_det_max_hw_is_the_profile_maximum():
    """What Lift.score_canvas compares the packed levels with (tests/test_atlas.py: level by level beyond it)."""
    backend = object.__new__(trtb.TensorRTBackend)   # its constructor needs TensorRT; the property does not
    backend.profiles = {"det": trtb.det_profile([(60, 80), (100, 130), (90, 140)])}
    assert backend.det_max_hw == (100, 140)
    backend.profiles = {"det": trtb.det_profile(trtb.DEFAULT_LEVELS_HW)}
    assert backend.det_max_hw == (2560, 2560)


# ---------------------------------------------------------------- a real GPU: cuda_memory


@pytest.fixture(scope="module")
def cuda_api():
    ok, why = cuda_memory.available()
    if not ok:
        pytest.skip(f"needs cuda-python or pycuda and a CUDA device: {why}")
    return cuda_memory.open_api()


def test_cuda_memory_round_trip_and_grow_only_buffers(cuda_api):
    name, (major, _) = cuda_api.device_info()
    assert name and major >= 5
    stream = cuda_memory.Stream(cuda_api)
    dev, host_in, host_out = (cuda_memory.DeviceBuffer(cuda_api), cuda_memory.PinnedBuffer(cuda_api),
                              cuda_memory.PinnedBuffer(cuda_api))
    data = np.random.default_rng(0).standard_normal((300, 128)).astype(np.float32)
    src = host_in.view(data.shape)
    src[...] = data
    ptr = dev.ensure(data.nbytes)
    stream.upload(ptr, src)
    back = host_out.view(data.shape)
    stream.download(back, ptr)
    stream.synchronize()
    np.testing.assert_array_equal(back, data)
    assert dev.ensure(data.nbytes // 2) == ptr and dev.nbytes >= data.nbytes  # smaller: same memory
    assert dev.ensure(dev.nbytes + 1) != 0 and dev.nbytes > data.nbytes
    if torch.cuda.is_available():
        # A torch CUDA tensor's data_ptr() is a device pointer like any other (what TensorRT is given).
        t = torch.empty(data.shape, device="cuda")
        torch.cuda.synchronize()
        stream.upload(t.data_ptr(), src)
        stream.synchronize()
        np.testing.assert_array_equal(t.cpu().numpy(), data)


# ---------------------------------------------------------------- a real GPU and TensorRT: engines against torch


def _inputs(networks, max_patches=150):
    """Levels and patches of a real textured image, normalised as the pipeline does."""
    from lift_localizer.nets.scale_space import make_levels, resize_level
    from lift_localizer.synthetic import demo_views, make_texture

    gray = torch.from_numpy(demo_views(make_texture())[2].image.astype(np.float32))[None, None]
    det, desc = networks["det"], networks["desc"]
    h, w = gray.shape[-2:]
    # Four of the camera's scales (one per octave) against a profile for all 21 of its levels.
    levels = [resize_level((gray - det.mean) / det.std, lv) for lv in make_levels(h, w, [2.0, 4.0, 8.0, 16.0], 27)]
    level_hw = trtb.levels_hw_for_image(h, w)
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, h - 64, max_patches), rng.integers(0, w - 64, max_patches)
    crops = torch.stack([gray[0, :, y:y + 64, x:x + 64] for y, x in zip(ys, xs)])
    return level_hw, levels, (crops - desc.mean) / desc.std


@pytest.mark.parametrize("precision, det_rtol, max_batch", [("fp16", 1e-2, 1024), ("fp32", 1e-4, 64)])
def test_engines_match_torch(trt_ready, exported, networks, tmp_path, precision, det_rtol, max_batch):
    from lift_localizer.backends.torch_backend import TorchBackend

    level_hw, levels, patches = _inputs(networks)
    ref = TorchBackend(networks)
    backend = trtb.TensorRTBackend(exported, precision=precision, cache_dir=tmp_path, levels_hw=level_hw,
                                   max_batch=max_batch, expected_weights={k: n.sha256 for k, n in networks.items()})
    for level in levels:
        want = ref.det(level)
        got = backend.det(level)
        assert got.shape == want.shape == (level.shape[2] - 24, level.shape[3] - 24)
        rel = (got - want).abs().max() / want.abs().max()
        assert rel <= det_rtol, f"DET {precision}: relative error {rel:.2e} > {det_rtol}"
    # 150 patches: one call in FP16, three (64 + 64 + 22) in FP32.
    d_want, d_got = ref.desc(patches), backend.desc(patches)
    cosine = torch.nn.functional.cosine_similarity(d_got, d_want, dim=1)
    assert cosine.min() >= (0.999 if precision == "fp16" else 0.99999), f"DESC {precision}: cosine {cosine.min():.6f}"
    o_want, o_got = ref.ori(patches), backend.ori(patches)
    angle = torch.atan2(o_got[:, 1], o_got[:, 0]) - torch.atan2(o_want[:, 1], o_want[:, 0])
    angle = torch.remainder(angle + torch.pi, 2 * torch.pi) - torch.pi
    assert angle.abs().max() <= (2e-2 if precision == "fp16" else 1e-4)
    assert backend.desc(patches[:0]).shape == (0, 128)
    if torch.cuda.is_available():
        # CUDA tensors are used in place and give CUDA tensors; same numbers as the host path.
        got_cuda = backend.desc(patches.cuda())
        assert got_cuda.is_cuda
        torch.testing.assert_close(got_cuda.cpu(), d_got, rtol=1e-5, atol=1e-5)
    # The engines are cached: a second back end loads them rather than building new ones.
    engines = sorted(tmp_path.glob("*.engine"))
    assert len(engines) == 3
    mtimes = [p.stat().st_mtime_ns for p in engines]
    again = trtb.TensorRTBackend(exported, precision=precision, cache_dir=tmp_path, levels_hw=level_hw,
                                 max_batch=max_batch)
    assert sorted(tmp_path.glob("*.engine")) == engines and [p.stat().st_mtime_ns for p in engines] == mtimes
    assert [again.engine_path(n) for n in trtb.NETWORKS] == [backend.engine_path(n) for n in trtb.NETWORKS]


def test_refuses_an_export_of_other_weights(trt_ready, exported, tmp_path):
    with pytest.raises(trtb.TensorRTError, match="other weights|export again"):
        trtb.TensorRTBackend(exported, cache_dir=tmp_path, expected_weights={"desc": "0" * 64})


def test_pipeline_gives_the_same_keypoints(trt_ready, exported, networks, tmp_path, monkeypatch):
    from lift_localizer.features.lift import Lift
    from lift_localizer.synthetic import demo_views, make_texture

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    gray = demo_views(make_texture())[2].image.astype(np.float32)
    cpu = Lift({"max_keypoints": 500}, networks)(gray)
    trt = Lift({"max_keypoints": 500, "backend": "tensorrt", "model_dir": str(exported), "precision": "fp32"},
               networks)(gray)
    d = np.linalg.norm(cpu.keypoints[:, None] - trt.keypoints[None], axis=2)
    nn = d.argmin(1)
    same = d[np.arange(len(d)), nn] < 0.01
    assert same.mean() > 0.98  # ties at the 500th score may differ
    cosine = (trt.descriptors[nn[same]] * cpu.descriptors[same]).sum(1) / (
        np.linalg.norm(trt.descriptors[nn[same]], axis=1) * np.linalg.norm(cpu.descriptors[same], axis=1))
    assert cosine.min() > 0.9999


def test_runner_on_a_gpu_in_place_and_through_buffers(cuda_api, monkeypatch, networks):
    """The runner's two GPU paths with a stand-in engine: CUDA tensors handed over by address
    (chunk offsets, output on the device) and CPU tensors through pinned and device buffers."""
    monkeypatch.setattr(trtb, "_trt", lambda: (_FakeTrt, None))
    profile = trtb.batch_profile(32)
    engine = _FakeEngine(networks["desc"].module, NAMES["desc"], profile, _DeviceMemory(cuda_api))
    runner = trtb._EngineRunner(engine, "desc", profile, cuda_api)
    patches = torch.randn(70, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = networks["desc"].module(patches)
    via_buffers = runner.run(patches, 32)
    assert not via_buffers.is_cuda
    torch.testing.assert_close(via_buffers, want, rtol=1e-5, atol=1e-5)
    if torch.cuda.is_available():
        in_place = runner.run(patches.cuda(), 32)
        assert in_place.is_cuda and runner.context.batches == [32, 32, 6, 32, 32, 6]
        torch.testing.assert_close(in_place.cpu(), want, rtol=1e-5, atol=1e-5)


def test_cached_engine_is_read_only_with_the_hash_it_was_written_with(tmp_path, caplog):
    path = tmp_path / "det-fp16-0123.engine"
    assert trtb.read_engine(path) is None
    trtb.write_engine(path, b"engine bytes")
    assert trtb.read_engine(path) == b"engine bytes"
    path.write_bytes(b"engine bytez")
    with caplog.at_level("WARNING"):
        assert trtb.read_engine(path) is None
    assert "differs from the one built" in caplog.text
    path.write_bytes(b"engine bytes")
    trtb.engine_hash_path(path).unlink()   # as cached before hashes were recorded
    with caplog.at_level("WARNING"):
        assert trtb.read_engine(path) is None
    assert "without its recorded hash" in caplog.text


def test_changed_cached_engine_is_built_again_not_deserialised(tmp_path, monkeypatch):
    """TensorRT is not needed: a stand-in runtime records what it is asked to deserialise."""
    loaded = []

    class Runtime:
        def deserialize_cuda_engine(self, data):
            loaded.append(bytes(data))
            return object()

    backend = trtb.TensorRTBackend.__new__(trtb.TensorRTBackend)
    backend._runtime, backend.precision, backend.root = Runtime(), "fp16", tmp_path
    backend.manifest, backend.profiles = {"models": {"det": {"file": "det.onnx"}}}, {"det": None}
    path = tmp_path / "det.engine"
    monkeypatch.setattr(backend, "engine_path", lambda name: path)
    monkeypatch.setattr(trtb, "build_engine", lambda *args: b"built again")
    trtb.write_engine(path, b"cached")
    backend._engine("det")
    path.write_bytes(b"changed")
    backend._engine("det")
    assert loaded == [b"cached", b"built again"] and trtb.read_engine(path) == b"built again"
