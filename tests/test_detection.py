import math

import numpy as np
import pytest
import torch

from lift_localizer.nets.det import DET, analytic_init
from lift_localizer.features.keypoints import INVALID, detect
from lift_localizer.features.lift import Lift, load_networks
from lift_localizer.nets.scale_space import Level
from lift_localizer.weights import LoadedNetwork
from conftest import gaussian_blob


@pytest.fixture(scope="module")
def lift_log():
    """LIFT with the analytic |LoG| DET, whose scale is known in closed form: a Gaussian blob of
    standard deviation s peaks at the level of scale s."""
    nets = load_networks()
    nets["det"] = LoadedNetwork("det", analytic_init(DET()), nets["det"].card, nets["det"].path)
    return Lift({"max_keypoints": 200}, networks=nets)


@pytest.mark.parametrize("sigma", [2.5, 4.0, 7.0])
def test_blob_found_at_its_position_and_scale(lift_log, lift_small, sigma):
    center = (161.3, 118.6)
    image = gaussian_blob((240, 320), center, sigma)
    for lift, tolerance in ((lift_log, 0.15), (lift_small, 0.3)):
        f = lift(image)
        assert len(f) >= 1
        best = int(np.argmax(f.scores))
        assert np.linalg.norm(f.keypoints[best] - np.array(center)) < 0.5
        # OpenCV size = 2 sigma for a blob of standard deviation sigma. The shipped DET starts from |LoG| of
        # 1.1 x the scale and is trained (det_stable.py): it fires at about 0.8-0.9 of the blob's sigma.
        assert f.scales[best] == pytest.approx(2 * sigma, rel=tolerance)


def test_blob_coordinates_follow_a_shift(lift_small):
    a = lift_small(gaussian_blob((200, 200), (100.0, 100.0), 4.0))
    b = lift_small(gaussian_blob((200, 200), (107.25, 95.5), 4.0))
    shift = b.keypoints[np.argmax(b.scores)] - a.keypoints[np.argmax(a.scores)]
    np.testing.assert_allclose(shift, [7.25, -4.5], atol=0.3)


def _levels(n, size=(40, 50)):
    # Same grid at every level (ratio 1) keeps the NMS geometry easy to reason about.
    return [Level(2.0 ** (1 + 0.2 * i), size[0], size[1], 1.0, 1.0) for i in range(n)]


def _peak(shape, x, y, s=1.5, a=1.0):
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return a * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))


def test_nms_keeps_one_maximum_per_peak_across_scale():
    levels = _levels(3)
    base = _peak((40, 50), 20, 18)
    maps = [torch.tensor(base * w, dtype=torch.float32) for w in (0.8, 1.0, 0.7)]
    d = detect(maps, levels, (40, 50), border_ratio=0.0)
    assert len(d) == 1
    assert d.level[0] == 1
    np.testing.assert_allclose(d.xy[0], [20, 18], atol=1e-3)
    # sub-scale refinement moves towards the stronger neighbour (level 0)
    assert d.scale[0] < levels[1].scale


def test_nms_separates_nearby_peaks_and_orders_by_score():
    levels = _levels(1)
    m = _peak((40, 50), 10, 10, a=0.5) + _peak((40, 50), 30, 25, a=0.9)
    d = detect([torch.tensor(m, dtype=torch.float32)], levels, (40, 50), border_ratio=0.0)
    assert len(d) == 2
    np.testing.assert_allclose(d.xy, [[30, 25], [10, 10]], atol=1e-3)
    assert d.score[0] > d.score[1]
    top1 = detect([torch.tensor(m, dtype=torch.float32)], levels, (40, 50), max_keypoints=1, border_ratio=0.0)
    np.testing.assert_allclose(top1.xy, [[30, 25]], atol=1e-3)


def test_edge_like_maxima_are_rejected():
    levels = _levels(1)
    yy, xx = np.mgrid[0:40, 0:50]
    ridge = np.exp(-((xx - 25) ** 2) / 2.0) * (1 + 0.001 * np.exp(-((yy - 20) ** 2) / 50.0))
    maps = [torch.tensor(ridge, dtype=torch.float32)]
    assert len(detect(maps, levels, (40, 50), border_ratio=0.0)) == 0
    assert len(detect(maps, levels, (40, 50), edge_threshold=1e9, border_ratio=0.0)) >= 1


def test_subpixel_refinement_recovers_offset():
    levels = _levels(1)
    m = _peak((40, 50), 20.3, 17.8, s=2.0)
    d = detect([torch.tensor(m, dtype=torch.float32)], levels, (40, 50), border_ratio=0.0)
    np.testing.assert_allclose(d.xy[0], [20.3, 17.8], atol=0.08)
    coarse = detect([torch.tensor(m, dtype=torch.float32)], levels, (40, 50), refine=False, border_ratio=0.0)
    np.testing.assert_allclose(coarse.xy[0], [20, 18])


def test_border_margin_keeps_patches_inside():
    levels = _levels(1)
    m = _peak((40, 50), 5, 20) + _peak((40, 50), 25, 20)
    d = detect([torch.tensor(m, dtype=torch.float32)], levels, (40, 50))
    # scale 2 → margin 12·2/2·√2 ≈ 17 px: the peak at x = 5 is too close to the border
    assert len(d) == 1 and abs(d.xy[0, 0] - 25) < 1e-3
    margin = 6 * math.sqrt(2) * d.scale
    assert np.all(d.xy - margin[:, None] >= -0.5)


def test_invalid_regions_never_detected():
    levels = _levels(1)
    m = np.full((40, 50), INVALID, np.float32)
    assert len(detect([torch.tensor(m)], levels, (40, 50), border_ratio=0.0)) == 0


def test_flat_image_gives_no_keypoints(lift_small):
    f = lift_small(np.full((120, 160), 90.0, np.float32))
    assert len(f) == 0
    assert f.descriptors.shape == (0, 128)


def test_tiny_image_gives_no_keypoints(lift_small):
    f = lift_small(np.random.default_rng(0).uniform(0, 255, (8, 8)).astype(np.float32))
    assert len(f) == 0 and f.keypoints.shape == (0, 2)


def test_dense_selection_equals_the_gathered_one():
    """The GPU path (every pixel of the packed levels tested at once, one top-k) selects exactly what
    the CPU path selects."""
    from lift_localizer.features.keypoints import pad_score_map
    from lift_localizer.features.lift import Lift
    from lift_localizer.nets.scale_space import make_levels, resize_level
    from lift_localizer.synthetic import demo_views, make_texture

    gray = demo_views(make_texture(), image_size=(240, 320))[2].image.astype(np.float32)
    lift = Lift({"backend": "torch"})
    det = lift.networks["det"]
    norm = (torch.from_numpy(gray)[None, None] - det.mean) / det.std
    levels = make_levels(240, 320, lift.scales_for(240, 320), min_size=27)
    maps = [pad_score_map(lift.backend.det(resize_level(norm, lv)), lv) for lv in levels]
    a = detect(maps, levels, (240, 320), 300, dense=False)
    b = detect(maps, levels, (240, 320), 300, dense=True)
    assert len(a) == len(b) > 100
    order_a, order_b = np.lexsort((a.xy[:, 0], -a.score)), np.lexsort((b.xy[:, 0], -b.score))
    np.testing.assert_allclose(b.xy[order_b], a.xy[order_a], atol=1e-4)
    # The atlas samples the neighbouring levels with coordinates normalised by the whole canvas (a few
    # times a level's width): float32 rounding moves the sub-scale refinement by up to ~2e-5.
    np.testing.assert_allclose(b.scale[order_b], a.scale[order_a], rtol=5e-5)
    np.testing.assert_array_equal(b.level[order_b], a.level[order_a])


@pytest.mark.parametrize("dense", [False, True])
def test_a_flat_plateau_with_rounding_noise_is_not_a_keypoint(dense):
    """A detector that responds to brightness scores a flat area a constant; its float rounding noise
    has maxima that pass the edge test but curve by almost nothing. A real peak on it is kept."""
    levels = [Level(2.0 * 2 ** (k / 2), 60, 80, 1.0, 1.0) for k in range(3)]
    g = torch.Generator().manual_seed(0)
    # smooth noise (rounding through resizing and a 25x25 filter is smooth): its maxima are round
    smooth = [torch.nn.functional.avg_pool2d(torch.rand(1, 1, 66, 86, generator=g), 7, 1)[0, 0] for _ in levels]
    flat = [0.05 + 1e-8 * n for n in smooth]
    assert len(detect(flat, levels, (60, 80), 100, score_threshold=1e-3, dense=dense, border_ratio=0)) == 0
    v, u = torch.meshgrid(torch.arange(60.0), torch.arange(80.0), indexing="ij")
    bump = 0.02 * torch.exp(-((u - 40.3) ** 2 + (v - 30.6) ** 2) / (2 * 2.0 ** 2))
    peaked = [flat[0], flat[1] + bump, flat[2]]
    found = detect(peaked, levels, (60, 80), 100, score_threshold=1e-3, dense=dense, border_ratio=0)
    assert len(found) == 1 and np.allclose(found.xy[0], [40.3, 30.6], atol=0.3)


def test_max3x3_is_max_pooling_with_minus_infinity_outside():
    from lift_localizer.features.keypoints import max3x3

    torch.manual_seed(0)
    for shape in ((1, 1), (2, 5), (31, 17)):
        score = torch.randn(*shape)
        score[0, 0] = INVALID
        expected = torch.nn.functional.max_pool2d(score[None, None], 3, 1, 1)[0, 0]
        assert torch.equal(max3x3(score), expected)
