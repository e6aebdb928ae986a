import numpy as np
import torch

from lift_localizer.nets.scale_space import Level, make_levels, paper_scales, resize_level


def test_paper_levels_for_640x480():
    s = paper_scales(480, 640)
    assert len(s) == 21
    assert np.isclose(s[0], 1.0) and np.isclose(s[-1], 16.0)
    assert np.allclose(np.diff(np.log2(s)), 0.2)  # 5 levels per octave


def test_no_extra_octave_for_large_images():
    s = paper_scales(1700, 2500)
    assert len(s) == 16 and np.isclose(s[0], 2.0)


def test_levels_follow_lift_resize_rule():
    levels = make_levels(480, 640, paper_scales(480, 640), min_size=27)
    first = levels[0]
    assert np.isclose(first.ratio_x, round(640 * 23.5 / 12) / 640)
    assert (first.height, first.width) == (round(480 * 23.5 / 12), round(640 * 23.5 / 12))
    assert all(a.scale < b.scale for a, b in zip(levels, levels[1:]))


def test_levels_too_small_are_left_out():
    levels = make_levels(40, 50, paper_scales(40, 50), min_size=27)
    assert levels and min(min(lv.height, lv.width) for lv in levels) >= 27
    assert make_levels(10, 10, paper_scales(10, 10), min_size=27) == []


def test_level_coordinates_map_pixel_centres():
    # A level that halves the image: level pixel 0 covers image pixels 0 and 1, centre 0.5.
    lv = Level(2.0, 10, 20, 0.5, 0.5)
    x, y = lv.to_image(np.array([0.0, 3.0]), np.array([0.0, 1.0]))
    assert np.allclose(x, [0.5, 6.5]) and np.allclose(y, [0.5, 2.5])


def test_resize_level_keeps_a_ramp_in_image_coordinates():
    h, w = 60, 80
    ramp = torch.arange(w, dtype=torch.float32).repeat(h, 1)[None, None]  # value = x
    lv = make_levels(h, w, [3.0], min_size=5)[0]
    small = resize_level(ramp, lv)[0, 0].numpy()
    x, _ = lv.to_image(np.arange(lv.width, dtype=np.float64), np.zeros(lv.width))
    inner = slice(2, lv.width - 2)
    np.testing.assert_allclose(small[lv.height // 2, inner], x[inner], atol=0.05)
