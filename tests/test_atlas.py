"""The packed scale space (features/atlas.py): layout, neighbour sampling, one DET pass, and what it
saves: the fixed-shape NMS costs the same few operations whatever the number of levels."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lift_localizer.evaluation.op_count import CountOps, count_stages
from lift_localizer.features.atlas import INVALID, Atlas
from lift_localizer.features.keypoints import detect, select_static
from lift_localizer.features.lift import Lift
from lift_localizer.features.lift_graph import plan
from lift_localizer.nets.scale_space import PAPER_LEVELS, make_levels, paper_scales
from lift_localizer.synthetic import demo_views, make_texture


def _levels(h=480, w=640, **conf):
    conf = {**PAPER_LEVELS, **conf}
    return make_levels(h, w, paper_scales(h, w, conf["min_scale_log2"], conf["max_scale_log2"],
                                          conf["levels_per_octave"], conf["extra_octave_below"]), 27)


def test_layout_packs_every_level_once_within_gutters():
    levels = _levels()
    atlas = Atlas(levels)
    assert len(levels) == 21
    area = sum(lv.height * lv.width for lv in levels)
    assert atlas.height * atlas.width < 1.5 * area
    maps = [torch.full((lv.height, lv.width), float(i)) for i, lv in enumerate(levels)]
    canvas = atlas.pack(maps)
    level = atlas.level
    for i, (lv, (x0, y0)) in enumerate(zip(levels, atlas.corners)):
        block = canvas[y0:y0 + lv.height, x0:x0 + lv.width]
        assert (block == i).all() and (level[y0:y0 + lv.height, x0:x0 + lv.width] == i).all()
        # Around every level its own edge, then the fill or another level's edge: 3×3 windows and
        # bilinear reads at a level's edge see only that level.
        ring = canvas[y0 - 1:y0 + lv.height + 1, x0 - 1:x0 + lv.width + 1]
        assert (ring == i).all()
        outer = canvas[y0 - 2:y0 + lv.height + 2, x0 - 2:x0 + lv.width + 2].clone()
        outer[1:-1, 1:-1] = -1.0
        assert not (outer == i).any()
        corners = torch.tensor([y0 * atlas.width + x0 + lv.width - 1, (y0 + lv.height - 1) * atlas.width + x0])
        level_of, u, v, log_scale, step, ratio_x, ratio_y = atlas.at(corners)
        assert level_of.tolist() == [i, i] and u.tolist() == [lv.width - 1, 0] and v.tolist() == [0, lv.height - 1]
        assert torch.allclose(log_scale, torch.tensor(math.log2(lv.scale))) and ratio_x[0] == np.float32(lv.ratio_x)
        assert (step == 0).all() == (i in (0, len(levels) - 1))
    assert (level >= 0).sum() == area


def test_neighbour_values_are_what_interpolate_gives():
    levels = _levels(240, 320)
    atlas = Atlas(levels)
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(lv.height, lv.width, generator=g) for lv in levels]
    canvas = atlas.pack(maps)
    for which, offset in (("below", -1), ("above", 1)):
        sampled = atlas.from_neighbour(canvas, which)
        for i, (lv, (x0, y0)) in enumerate(zip(levels, atlas.corners)):
            j = i + offset
            if not 0 <= j < len(levels):
                continue
            want = F.interpolate(maps[j][None, None], size=(lv.height, lv.width), mode="bilinear",
                                 align_corners=False)[0, 0]
            got = sampled[y0:y0 + lv.height, x0:x0 + lv.width]
            # float32 coordinates normalised by the canvas: ~1e-4 px, times gradients of up to 1 per pixel
            torch.testing.assert_close(got, want, rtol=0, atol=2e-4)


@pytest.mark.parametrize("det_max_hw", [None, (340, 450)])
def test_one_det_pass_over_the_packed_levels_scores_every_level(det_max_hw):
    """Lift.score_canvas (one convolution) gives score_maps' scores (one per level), packed; so does
    a back end whose DET takes smaller inputs than the canvas (a TensorRT profile), level by level."""
    gray = demo_views(make_texture(), image_size=(240, 320))[2].image.astype(np.float32)
    lift = Lift({"backend": "torch", "det_conv": None})
    image = torch.from_numpy(gray)[None, None]
    atlas = plan(lift, 240, 320)
    if det_max_hw is not None:
        assert atlas.height > det_max_hw[0] or atlas.width > det_max_hw[1]
        lift.backend.det_max_hw = det_max_hw
        calls = []
        det = lift.backend.det
        lift.backend.det = lambda x: calls.append(x.shape) or det(x)
    with torch.inference_mode():
        maps, _ = lift.score_maps(image, None)
        canvas = lift.score_canvas(image, atlas)
    want = atlas.pack(maps)
    assert torch.equal(canvas <= INVALID / 2, want <= INVALID / 2)
    scored = want > INVALID / 2
    assert scored.sum() > 0.5 * (atlas.level >= 0).sum()
    torch.testing.assert_close(canvas[scored], want[scored], rtol=1e-5, atol=1e-5 * float(want[scored].abs().max()))
    if det_max_hw is not None:
        assert len(calls) == 2 * len(atlas.levels)   # score_maps' and the canvas's, each level by level
        assert all(h <= det_max_hw[0] and w <= det_max_hw[1] for *_, h, w in calls)


@pytest.mark.parametrize("extra_octave_below", [320, 1600])   # 13 and 21 levels at 640×480
def test_fixed_shape_nms_costs_a_constant_number_of_operations(extra_octave_below):
    """PyTorch operations (kernels, on a GPU) of one selection: the per-level detection's grow with
    the levels, the atlas's do not."""
    levels = _levels(min_scale_log2=1.5 if extra_octave_below == 320 else 1.0, extra_octave_below=extra_octave_below)
    g = torch.Generator().manual_seed(0)
    maps = [torch.rand(lv.height, lv.width, generator=g) for lv in levels]
    atlas = Atlas(levels)
    canvas = atlas.pack(maps)
    with CountOps() as staged:
        detect(maps, levels, (480, 640), 1000, dense=False)
    with CountOps() as static:
        select_static(canvas, atlas, (480, 640), 1000)
    assert static.total < 200
    assert staged.total > 60 * len(levels)


def test_op_count_command_compares_staged_and_fixed_shape(capsys):
    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    from op_count import main

    gray = demo_views(make_texture(), image_size=(240, 320))[2].image.astype(np.float32)
    counts = count_stages(Lift({"backend": "torch", "det_conv": None, "max_keypoints": 200}), gray)
    assert counts["fixed-shape"]["det"] < counts["staged"]["det"]
    assert counts["fixed-shape"]["total"] == sum(v for k, v in counts["fixed-shape"].items() if k != "total")
    assert main(["--size", "160x120", "--max-keypoints", "50"]) == 0
    assert "fixed-shape" in capsys.readouterr().out
    with CountOps() as c:
        x = torch.ones(10, 4)     # writes 160 bytes
        (x[:, 1:] + 1).t()        # a view, an addition writing 120 bytes, a view
    assert (c.total, c.kernels, c.bytes_written) == (4, 2, 280)


def test_selection_refines_only_the_best_maxima_and_keeps_the_atlas_small():
    """select_static tests every pixel for a scale-space maximum, then runs the edge test and the
    refinement on the best CANDIDATES_PER_KEYPOINT × K maxima only: the same keypoints as refining
    every maximum, unless too many candidates fail (shown with as few candidates as keypoints)."""
    from lift_localizer.features.keypoints import CANDIDATES_PER_KEYPOINT

    gray = demo_views(make_texture(), image_size=(240, 320))[2].image.astype(np.float32)
    lift = Lift({"backend": "torch", "det_conv": None})
    atlas = plan(lift, 240, 320)
    with torch.inference_mode():
        canvas = lift.score_canvas(torch.from_numpy(gray)[None, None], atlas)
        every = select_static(canvas, atlas, (240, 320), 300, candidates=atlas.height * atlas.width)
        default = select_static(canvas, atlas, (240, 320), 300)
        few = select_static(canvas, atlas, (240, 320), 300, candidates=300)
    found = torch.isfinite(every[2])
    assert found.sum() == 300 and CANDIDATES_PER_KEYPOINT * 300 < atlas.height * atlas.width
    for a, b in zip(every, default):
        assert torch.equal(a, b)
    assert torch.isfinite(few[2]).sum() < 300   # the maxima that failed the tests were not replaced
    # Per-pixel constants: only what passes over the whole canvas need (about 28 bytes a pixel).
    tensors = [t for t in [*vars(atlas).values(), *atlas._grids.values()] if isinstance(t, torch.Tensor)]
    assert sum(t.numel() * t.element_size() for t in tensors) < 30 * atlas.height * atlas.width
