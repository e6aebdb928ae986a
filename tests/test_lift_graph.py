"""LIFT with fixed shapes (features/lift_graph.py), the form CUDA graphs capture: the same features as
the stage-by-stage pipeline, and nothing that waits for the device. The capture itself needs CUDA
(tests/test_gpu_parity.py)."""
import re

import numpy as np
import pytest
import torch

from lift_localizer.features.keypoints import select_static
from lift_localizer.features.lift import Lift, unpack
from lift_localizer.features.atlas import Atlas
from lift_localizer.features.lift_graph import PACKED_COLUMNS, graphable, plan, static_features
from lift_localizer.nets.scale_space import Level
from lift_localizer.synthetic import demo_views, make_texture


@pytest.fixture(scope="module")
def gray():
    return demo_views(make_texture(), image_size=(240, 320))[2].image.astype(np.float32)


def _static(lift, gray):
    with torch.inference_mode():
        return static_features(lift, torch.from_numpy(gray)[None, None], plan(lift, *gray.shape)).numpy()


@pytest.mark.parametrize("conf", [{"backend": "torch", "det_conv": None}, {"backend": "auto"}, {"upright": True}])
def test_static_features_equal_the_staged_pipeline(gray, conf):
    lift = Lift({"max_keypoints": 300, **conf})
    ref = lift(gray)
    packed = _static(lift, gray)
    assert packed.shape == (300, PACKED_COLUMNS)
    got = unpack(packed, gray.shape)
    assert len(got) == len(ref) > 200
    d = np.linalg.norm(ref.keypoints[:, None] - got.keypoints[None], axis=2)
    nn = d.argmin(1)
    # Same keypoints (up to the order of equal scores); the scale refinement samples the neighbour
    # levels by a different resampling (whole map vs at points): float rounding apart, which the
    # sub-pixel step (gradient / curvature) amplifies at flat peaks: up to 4e-4 px measured on
    # synthetic textures, so 1e-3 px (a misplaced keypoint is off by > 0.1 px).
    assert d[np.arange(len(d)), nn].max() < 1e-3
    np.testing.assert_allclose(got.scores[nn], ref.scores, rtol=1e-6)
    np.testing.assert_allclose(got.scales[nn], ref.scales, rtol=1e-4)
    np.testing.assert_allclose(got.orientations[nn], ref.orientations, atol=1e-4)
    np.testing.assert_allclose(got.descriptors[nn], ref.descriptors, atol=1e-3 * np.abs(ref.descriptors).max())


def test_static_features_have_no_data_dependent_step():
    """Dynamo traces the whole computation as one graph with static shapes (fullgraph=True fails on
    .item(), .tolist(), nonzero, unique, boolean indexing and Python branches on tensor values: what
    a CUDA graph cannot capture). The stage-by-stage detection, which gathers maxima with nonzero,
    fails the same check."""
    lift = Lift({"max_keypoints": 100, "backend": "torch", "det_conv": None})
    image = torch.rand(1, 1, 120, 160) * 255
    atlas = plan(lift, 120, 160)
    torch._dynamo.reset()
    out = torch.compile(lambda x: static_features(lift, x, atlas), fullgraph=True, backend="eager",
                        dynamic=False)(image)
    assert out.shape == (100, PACKED_COLUMNS)
    with pytest.raises(Exception, match="data-dependent|nonzero|graph break"):
        torch.compile(lambda x: lift.detect(x, None), fullgraph=True, backend="eager", dynamic=False)(image)
    torch._dynamo.reset()


def test_static_selection_pads_with_minus_infinity():
    """Fewer maxima than the budget: K rows all the same, the ones past the last keypoint at -inf."""
    levels = [Level(2.0 * 2 ** (k / 2), 40, 50, 1.0, 1.0) for k in range(3)]
    v, u = torch.meshgrid(torch.arange(40.0), torch.arange(50.0), indexing="ij")
    bump = torch.exp(-((u - 25.3) ** 2 + (v - 20.6) ** 2) / (2 * 2.0 ** 2))
    maps = [0.5 * bump, bump, 0.5 * bump]
    atlas = Atlas(levels)
    xy, s, sc, lvl = select_static(atlas.pack(maps), atlas, (40, 50), 10, 1e-3, border_ratio=0)
    assert xy.shape == (10, 2) and s.shape == sc.shape == lvl.shape == (10,)
    assert torch.isfinite(sc).sum() == 1 and torch.isfinite(sc[0])
    np.testing.assert_allclose(xy[0].numpy(), [25.3, 20.6], atol=0.3)
    assert torch.isfinite(xy).all() and torch.isfinite(s).all()
    rows = np.concatenate([xy, s[:, None], sc[:, None], np.zeros((10, 129), np.float32)], 1)
    assert len(unpack(rows, (40, 50))) == 1


def test_cuda_graph_option_is_checked():
    with pytest.raises(ValueError, match="cuda_graph"):
        Lift({"cuda_graph": "yes"})
    with pytest.raises(ValueError, match="CUDA device"):
        Lift({"cuda_graph": True})
    lift = Lift({"max_keypoints": 10})
    assert lift.graph is None   # auto on the CPU: stage by stage
    assert "CUDA device" in graphable(lift, 480, 640)


def test_padding_rows_do_not_break_the_descriptor_networks(gray):
    """A blank image has no keypoints: every row is padding, which ORI and DESC run on all the same;
    its positions and scales must be finite so that the crops and networks stay finite."""
    lift = Lift({"max_keypoints": 50})
    packed = _static(lift, np.full_like(gray, 128.0))
    assert packed.shape == (50, PACKED_COLUMNS)
    assert not np.isfinite(packed[:, 3]).any()
    assert np.isfinite(packed[:, [0, 1, 2, 4]]).all() and np.isfinite(packed[:, 5:]).all()
    assert len(unpack(packed, gray.shape)) == 0


def test_measured_det_route_keeps_the_fastest_exact_one(gray):
    """det_conv "measure" (the default on CUDA) times the module and the exact routes on the first
    image and keeps the fastest; every route gives the module's keypoints."""
    ref = Lift({"max_keypoints": 200, "backend": "torch", "det_conv": None})(gray)
    lift = Lift({"max_keypoints": 200, "backend": "torch", "det_conv": "measure"})
    assert lift.backend.det_note.startswith("the DET module until")
    got = lift(gray)
    note = lift.backend.det_note
    assert note.startswith("measured over") and "module" in note and "fft over" in note and "dense over" in note
    timed, chosen = note[note.index(": ") + 2:].split(" → ")
    times = {name: float(ms) for name, ms in re.findall(r"(\w[^,]*?) ([\d.]+) ms", timed)}
    assert len(times) == 3 and min(times, key=times.get) == chosen
    assert lift.backend.tune_det([]) == note   # once only
    np.testing.assert_allclose(got.keypoints, ref.keypoints, atol=1e-3)
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4)


def test_graphable_names_what_stands_in_the_way():
    """On CUDA, torch and TensorRT (which enqueues on PyTorch's stream) can be captured; ONNX Runtime
    cannot; nor can an image smaller than DET's window or an empty keypoint budget."""
    from types import SimpleNamespace

    real = Lift({"max_keypoints": 10})

    def fake(backend, max_keypoints=10):
        return SimpleNamespace(device=torch.device("cuda"), backend=SimpleNamespace(name=backend),
                               conf={"max_keypoints": max_keypoints}, levels_for=real.levels_for)

    assert graphable(fake("torch"), 480, 640) is None
    assert graphable(fake("tensorrt"), 480, 640) is None
    assert "onnx" in graphable(fake("onnx"), 480, 640)
    assert "no keypoints" in graphable(fake("torch", 0), 480, 640)
    assert "smaller than DET's window" in graphable(fake("torch"), 5, 5)


def test_static_features_run_on_the_meta_device():
    """On PyTorch's data-free "meta" device the whole fixed-shape pipeline runs from shapes alone
    (nothing reads a value on the host) and its elementwise operations refuse tensors left on another
    device (the host constants a GPU capture could not copy)."""
    lift = Lift({"backend": "torch", "device": "meta", "max_keypoints": 100, "det_conv": None, "cuda_graph": False})
    with torch.inference_mode():
        out = static_features(lift, torch.empty(1, 1, 120, 160, device="meta"), plan(lift, 120, 160))
    assert out.device.type == "meta" and out.shape == (100, PACKED_COLUMNS)
    with pytest.raises(RuntimeError, match="device"):
        torch.empty(3, device="meta") + torch.ones(3)


def test_lift_takes_its_graph_path_and_falls_back_when_capture_fails(gray, monkeypatch):
    """Lift.__call__ with a graph: the packed rows become Features; a capture error (RuntimeError, as
    PyTorch raises it) switches to the staged pipeline with a warning. A stand-in computes the rows
    eagerly on the CPU, where no CUDA graph exists."""
    lift = Lift({"max_keypoints": 200})
    ref = lift(gray)

    class Eager:
        calls = 0

        def __call__(self, g):
            Eager.calls += 1
            return _static(lift, g)

    class Failing:
        def __call__(self, g):
            raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr("lift_localizer.features.lift.graphable", lambda *a: None)
    lift.graph = Eager()
    got = lift(gray)
    assert Eager.calls == 1 and set(got.timings) == {"total"} and got.image_size == gray.shape
    assert len(got) == len(ref)
    d = np.linalg.norm(ref.keypoints[:, None] - got.keypoints[None], axis=2)
    assert d.min(1).max() < 1e-4
    lift.graph = Failing()
    with pytest.warns(UserWarning, match="stage by stage"):
        again = lift(gray)
    assert lift.graph is None and "det" in again.timings
    np.testing.assert_array_equal(again.keypoints, ref.keypoints)


def test_with_a_graph_the_det_route_is_measured_on_the_packed_levels(gray, monkeypatch):
    """The graph runs DET once over the packed canvas, not level by level: the route measurement on
    the first image times that (a route fastest on 13 small inputs need not be on one large one)."""
    lift = Lift({"max_keypoints": 200, "backend": "torch", "det_conv": "measure"})
    monkeypatch.setattr("lift_localizer.features.lift.graphable", lambda *a: None)
    lift.graph = lambda g: _static(lift, g)
    shapes = []
    tune = lift.backend.tune_det
    lift.backend.tune_det = lambda inputs: shapes.append([tuple(x.shape) for x in inputs]) or tune(inputs)
    assert len(lift(gray)) > 0
    atlas = plan(lift, *gray.shape)
    assert shapes == [[(1, 1, atlas.height, atlas.width)]]
    assert lift.backend.det_note.startswith("measured over 1 DET input:")
