"""Cheaper DET convolutions (nets/det_separable.py): separable forms, the rank picker, the exact
routes (distinct filters, GHH plan, FFT) and their use through Lift."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lift_localizer.backends import make_backend
from lift_localizer.nets import det_separable as ds
from lift_localizer.nets.det import DET, NUM_MAX, NUM_SUM, analytic_init
from lift_localizer.nets.layers import ghh
from lift_localizer.features.lift import Lift, load_networks
from lift_localizer.weights import LoadedNetwork
from lift_localizer.synthetic import demo_views, make_texture

ENGINES = ["torch", "opencv"]


def _det(weight: torch.Tensor, bias: torch.Tensor | None = None) -> DET:
    d = DET()
    with torch.no_grad():
        d.conv.weight.copy_(weight.reshape(16, 1, 25, 25))
        d.conv.bias.copy_(torch.zeros(16) if bias is None else bias)
    return d.eval()


def _smooth_bank(seed: int = 0, n: int = 16) -> torch.Tensor:
    """n distinct smooth random 25×25 filters (a stand-in for trained ones: not low rank)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, 1, 37, 37, generator=g)
    r = torch.arange(13, dtype=torch.float32) - 6
    k = torch.exp(-r**2 / 8)
    return F.conv2d(w, (k[:, None] * k[None])[None, None] / k.sum() ** 2)[:, 0]


def _rank1_bank() -> torch.Tensor:
    """The shipped bank's structure (±f twice in group 0, zeros elsewhere) with a rank-1 filter f."""
    r = torch.arange(25, dtype=torch.float32) - 12
    f = torch.outer(torch.exp(-r**2 / 18), (r**2 / 9 - 1) * torch.exp(-r**2 / 18))
    w = torch.zeros(16, 25, 25)
    for m in range(4):
        w[m] = f if m % 2 == 0 else -f
    return w


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, 1, 61, 77, generator=g)


@pytest.mark.parametrize("engine", ENGINES)
def test_full_rank_reproduces_the_dense_convolution(image, engine):
    w, b = _smooth_bank() * 10, torch.linspace(-1, 1, 16)
    ref = F.conv2d(image, w[:, None], b)
    got = ds.separable_conv(image, w, b, 25, engine)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-4 * float(ref.abs().max()))


@pytest.mark.parametrize("engine", ENGINES)
def test_rank_one_filter_is_recovered_at_rank_one(image, engine):
    w = _rank1_bank()
    sep = ds.separable_factors(w, 1)
    assert sep.distinct == 1 and sep.terms == 1
    assert float(ds.relative_errors(w)[0, 1]) < 1e-6
    ref = F.conv2d(image, w[:, None])
    torch.testing.assert_close(ds.separable_conv(image, w, None, 1, engine), ref, rtol=0,
                               atol=1e-5 * float(ref.detach().abs().max()))


def test_errors_decrease_with_rank():
    w = _smooth_bank()
    per_filter = ds.relative_errors(w)
    assert per_filter.shape == (16, 26)
    assert torch.all(per_filter[:, :-1] >= per_filter[:, 1:] - 1e-12)
    assert torch.allclose(per_filter[:, 0], torch.ones(16, dtype=torch.float64))
    assert torch.all(per_filter[:, 25] < 1e-6)
    bank = ds.bank_relative_errors(w)
    assert torch.all(bank[:-1] >= bank[1:] - 1e-12) and bank[0] == pytest.approx(1.0)
    probes = ds.default_probes(size=128)
    err = ds.rank_errors(w, None, probes, [1, 4, 8, 25])
    assert err[1] > err[4] > err[8] > err[25] and err[25] < 1e-4


def test_picker_returns_the_smallest_rank_within_tolerance():
    w = _smooth_bank(3)
    probes = ds.default_probes(size=128)
    errors = ds.rank_errors(w, None, probes, range(1, 13))
    for tol in (errors[3] * 1.0001, (errors[5] + errors[6]) / 2, errors[10]):
        rank, err = ds.choose_rank(w, None, tol, probes, 12)
        assert err == pytest.approx(errors[rank]) and err <= tol
        assert all(errors[r] > tol for r in range(1, rank))
    assert ds.choose_rank(w, None, 0.0, probes, 2) == (None, None)


def test_duplicates_merged_and_ghh_plan_is_exact(image):
    shipped = analytic_init(DET())
    bank = ds.merge_duplicates(shipped.conv.weight, shipped.conv.bias)
    assert len(bank.unique) == 1 and bank.sign.tolist() == [1, -1, 1, -1] + [0] * 12
    # A bank as training from that init leaves it: copies up to sign, with biases; and one with none.
    w = _smooth_bank(2, 3)
    idx = torch.tensor([0, 1, 0, 1] + [2] * 12)
    sign = torch.tensor([1.0] * 8 + [-1.0] * 4 + [1.0] * 4)
    trained = (w[idx] * sign[:, None, None], torch.tensor([0.1, -0.2, 0.1, -0.2] + [0.3] * 4 + [-0.3] * 4 + [0.3] * 4))
    random_bias = torch.randn(16, generator=torch.Generator().manual_seed(2))
    for weight, bias in ((shipped.conv.weight, shipped.conv.bias), trained, (_smooth_bank(4), random_bias)):
        bank = ds.merge_duplicates(weight, bias)
        ref = F.conv2d(image, weight.reshape(16, 1, 25, 25), bias)
        responses = ds.dense_responses(image, bank)
        # The same convolutions, sums and maxima in another order: float32 rounding of responses up to
        # ~10, which CPUs' kernels round differently (up to 1.5e-5 apart on an AMD EPYC), so the
        # tolerance is relative as well as absolute.
        torch.testing.assert_close(bank.expand(responses), ref, rtol=1e-5, atol=1e-5)
        got = ds.GhhPlan(bank, NUM_SUM, NUM_MAX)(responses)
        # Sums of those responses cancel to near zero in places, where only an absolute bound holds: over
        # 200 random biases with the third bank, 2.6e-5 at most, 1.8e-6 of the largest response.
        torch.testing.assert_close(got, ghh(ref, NUM_SUM, NUM_MAX), rtol=1e-5, atol=1e-5 * float(ref.detach().abs().max()))
    assert len(ds.merge_duplicates(*trained).unique) == 3


@pytest.mark.parametrize("shape", [(61, 77), (40, 131)])
def test_fft_matches_the_dense_convolution(shape):
    x = torch.randn(2, 1, *shape, generator=torch.Generator().manual_seed(5))
    w, b = _smooth_bank(6), torch.randn(16)
    ref = F.conv2d(x, w[:, None], b)
    torch.testing.assert_close(ds.fft_conv(x, w, b), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))
    assert ds.next_fast_size(61) == 63 and ds.next_fast_size(64) == 64


@pytest.mark.parametrize("mode", ["exact", "fft", "dense"])
def test_exact_modes_match_det(image, mode):
    det = _det(_smooth_bank(7), torch.randn(16))
    fast = ds.FastDET(det, mode)
    assert fast.exact and "exact" in fast.describe()
    with torch.no_grad():
        ref = det(image)
    torch.testing.assert_close(fast(image), ref, rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_separable_is_chosen_only_within_tolerance_and_cheaper(image):
    det = _det(_rank1_bank())
    fast = ds.FastDET(det, "separable", tolerance=1e-3, probes=ds.default_probes(size=128))
    assert not fast.exact and fast.rank == 1 and fast.separable.terms == 1, fast.describe()
    with torch.no_grad():
        ref = det(image)
        torch.testing.assert_close(fast(image), ref, rtol=0, atol=1e-5 * float(ref.detach().abs().max()))
    # Trained-like banks of 16 distinct filters: no rank within 0.3 % is cheaper than exact here.
    rough = ds.FastDET(_det(_smooth_bank(8)), "separable", tolerance=3e-3, probes=ds.default_probes(size=128))
    assert rough.exact and "exact" in rough.describe()
    forced = ds.FastDET(_det(_smooth_bank(8)), rank=3)
    assert forced.separable.terms == 48 and forced(image).shape == (1, 1, 37, 53)
    with pytest.raises(ValueError):
        ds.FastDET(det, "sparse")
    with torch.no_grad():
        det.conv.weight.mul_(2)
    with pytest.raises(RuntimeError, match="changed"):
        fast(image)


def _top_keypoints(lift: Lift, gray: np.ndarray):
    """Keypoints, strongest first, and their scores."""
    found = lift.detect(torch.from_numpy(gray)[None, None], {})
    order = np.argsort(-found.score, kind="stable")
    return found.xy[order], found.score[order]


def _found(reference: tuple[np.ndarray, np.ndarray], xy: np.ndarray) -> np.ndarray:
    """Whether each reference keypoint has one of ``xy`` within half a pixel; keypoints whose score
    is within 1 % of the reference's detection threshold count as found: float rounding (FFT against
    direct convolution, one CPU's vector units against another's) moves them across it."""
    xy0, score0 = reference
    near_threshold = score0 <= score0.min() + 0.01 * (score0.max() - score0.min())
    return (np.linalg.norm(xy0[:, None] - xy[None], axis=2).min(1) <= 0.5) | near_threshold


def test_lift_option_gives_the_keypoints_of_exact():
    gray = demo_views(make_texture(512), image_size=(160, 200))[0].image.astype(np.float32)
    networks = load_networks()
    dense = Lift({"backend": "torch", "det_conv": None, "max_keypoints": 300}, networks=networks)
    assert dense.backend.det_net is networks["det"].module
    reference = _top_keypoints(dense, gray)
    assert len(reference[0]) > 50
    for conf in ({"det_conv": "separable"}, {}, {"det_conv": "fft"}):
        lift = Lift({"backend": "torch", "max_keypoints": 300, **conf}, networks=networks)
        assert isinstance(lift.backend.det_net, ds.FastDET), conf
        xy, _ = _top_keypoints(lift, gray)
        assert _found(reference, xy).mean() >= 0.98, conf
    # At the filters' own rank the separable route is exact: the analytic |LoG| is rank 2.
    log_nets = {**networks, "det": LoadedNetwork("det", analytic_init(DET()), networks["det"].card, networks["det"].path)}
    reference = _top_keypoints(Lift({"backend": "torch", "det_conv": None, "max_keypoints": 300}, networks=log_nets),
                               gray)
    lift = Lift({"backend": "torch", "max_keypoints": 300}, networks=log_nets)
    lift.backend.det_net = ds.FastDET(log_nets["det"].module, rank=2)
    xy, _ = _top_keypoints(lift, gray)
    assert _found(reference, xy).mean() >= 0.98


def test_det_conv_needs_torch_det():
    networks = load_networks()
    backend = make_backend("torch", networks, det_conv="auto")
    assert isinstance(backend.det_net, ds.FastDET) and "exact" in backend.det_note
    assert make_backend("torch", networks).det_net is networks["det"].module
    with pytest.raises(ValueError, match="torch"):
        make_backend("onnx", networks, det_conv="separable")
