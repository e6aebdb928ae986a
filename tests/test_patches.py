import math

import cv2
import numpy as np
import pytest
import torch

from lift_localizer.nets.desc import DESC
from lift_localizer.nets.ori import ORI, angle
from lift_localizer.features.patches import PatchSampler, crop_patches
from lift_localizer.synthetic import make_texture


def _linear_image(h=120, w=160, a=0.7, b=-0.4, c=50.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return (a * xx + b * yy + c), (a, b, c)


def _expected(center, support, theta, size, abc):
    """The patch computed by hand: pixel (i, j) samples centre + R(θ)·support·((j+.5)/S-.5, (i+.5)/S-.5)."""
    a, b, c = abc
    t = (np.arange(size) + 0.5) / size - 0.5
    v, u = np.meshgrid(t, t, indexing="ij")
    x = center[0] + support * (math.cos(theta) * u - math.sin(theta) * v)
    y = center[1] + support * (math.sin(theta) * u + math.cos(theta) * v)
    return a * x + b * y + c


@pytest.mark.parametrize("theta", [0.0, 0.6, -2.0, math.pi])
def test_crop_at_known_position_scale_angle(theta):
    img, abc = _linear_image()
    center, support, size = (80.3, 61.7), 37.0, 16
    got = crop_patches(torch.tensor(img, dtype=torch.float64)[None, None],
                       torch.tensor([center], dtype=torch.float64), torch.tensor([support], dtype=torch.float64),
                       torch.tensor([theta], dtype=torch.float64), size)[0, 0].numpy()
    np.testing.assert_allclose(got, _expected(center, support, theta, size, abc), atol=1e-9)


def test_positive_angle_turns_patch_x_axis_towards_image_y():
    # a bright dot on the patch's x axis at angle +90° lies straight below the centre (y down)
    img = np.zeros((101, 101), np.float32)
    img[70, 50] = 255
    patch = crop_patches(torch.from_numpy(img)[None, None], torch.tensor([[50.0, 50.0]]), torch.tensor([64.0]),
                         torch.tensor([math.pi / 2]), 64)[0, 0]
    i, j = np.unravel_index(int(patch.argmax()), patch.shape)
    assert abs(i - 31.5) <= 1 and j > 45


def test_rotating_the_image_rotates_the_patch():
    tex = make_texture(256, seed=3).astype(np.float32)
    c, alpha = np.array([128.0, 128.0]), 35.0
    # cv2's positive angle is counter-clockwise on screen; in y-down coordinates that maps the
    # direction θ to θ - α.
    M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), alpha, 1.0)
    rot = cv2.warpAffine(tex, M, (256, 256), flags=cv2.INTER_CUBIC)
    theta = 0.4
    p0 = crop_patches(torch.from_numpy(tex)[None, None], torch.tensor(c[None], dtype=torch.float32),
                      torch.tensor([60.0]), torch.tensor([theta]), 32)
    p1 = crop_patches(torch.from_numpy(rot)[None, None], torch.tensor(c[None], dtype=torch.float32),
                      torch.tensor([60.0]), torch.tensor([theta - math.radians(alpha)]), 32)
    err = (p0 - p1).abs().mean() / tex.std()
    assert err < 0.08
    wrong = crop_patches(torch.from_numpy(rot)[None, None], torch.tensor(c[None], dtype=torch.float32),
                         torch.tensor([60.0]), torch.tensor([theta + math.radians(alpha)]), 32)
    assert (p0 - wrong).abs().mean() / tex.std() > 3 * err


def test_batch_equals_single_crops():
    tex = torch.from_numpy(make_texture(200, seed=1).astype(np.float32))[None, None]
    rng = np.random.default_rng(0)
    centers = torch.tensor(rng.uniform(40, 160, (9, 2)), dtype=torch.float32)
    supports = torch.tensor(rng.uniform(10, 80, 9), dtype=torch.float32)
    angles = torch.tensor(rng.uniform(-3, 3, 9), dtype=torch.float32)
    batch = crop_patches(tex, centers, supports, angles, 64)
    for k in range(9):
        single = crop_patches(tex, centers[k:k + 1], supports[k:k + 1], angles[k:k + 1], 64)
        # Grey levels up to 255 in float32: a batched matmul may round the sampling grid differently
        # from a single one on some CPUs (seen: 6e-4 on one machine, 0 on another), a few ulp of 255.
        torch.testing.assert_close(batch[k:k + 1], single, rtol=1e-5, atol=2e-3)


def test_networks_batch_equals_single():
    torch.manual_seed(0)
    patches = torch.randn(7, 1, 64, 64)
    for net in (DESC().eval(), ORI().eval()):
        with torch.inference_mode():
            batch = net(patches)
            single = torch.cat([net(patches[k:k + 1]) for k in range(7)])
        torch.testing.assert_close(batch, single, rtol=1e-5, atol=1e-5)


def test_pyramid_octaves_keep_coordinates():
    # A linear image survives blurring and subsampling unchanged away from the border, so any
    # coordinate error of an octave shows up directly.
    img, abc = _linear_image(400, 400)
    sampler = PatchSampler(torch.tensor(img, dtype=torch.float64)[None, None], size=16)
    assert len(sampler.octaves) >= 3
    centers = torch.tensor([[200.2, 190.7], [210.0, 205.5]], dtype=torch.float64)
    supports = torch.tensor([20.0, 120.0], dtype=torch.float64)  # octave 0 and octave 2
    angles = torch.tensor([0.3, -1.1], dtype=torch.float64)
    got = sampler(centers, supports, angles)
    for k in range(2):
        want = _expected(centers[k].tolist(), float(supports[k]), float(angles[k]), 16, abc)
        np.testing.assert_allclose(got[k, 0].numpy(), want, atol=1e-6)


def test_spatial_transformer_passes_gradient_check():
    img = torch.rand(1, 1, 12, 12, dtype=torch.float64)
    c = torch.tensor([[5.3, 6.1]], dtype=torch.float64, requires_grad=True)
    s = torch.tensor([4.2], dtype=torch.float64, requires_grad=True)
    a = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    im = img.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, c, s, a: crop_patches(i, c, s, a, 5), (im, c, s, a))


def test_orientation_angle():
    cs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    np.testing.assert_allclose(angle(cs).numpy(), [0, math.pi / 2, math.pi], atol=1e-6)


def _inside_image(n: int, side: int, max_support: float, dtype=torch.float64):
    """Centres, supports (every octave of a size-16 sampler) and angles of patches that lie inside a
    side × side image whatever their angle, as select_static's border test keeps them."""
    g = torch.Generator().manual_seed(0)
    supports = 8 * 2 ** torch.linspace(0, math.log2(max_support / 8), n, dtype=dtype)
    margin = supports * math.sqrt(2) / 2
    centers = margin[:, None] - 0.5 + torch.rand(n, 2, generator=g, dtype=dtype) * (side - 2 * margin[:, None])
    return centers, supports, 6 * torch.rand(n, generator=g, dtype=dtype) - 3


def test_static_sampler_cuts_the_same_patches_without_waiting():
    """PatchSampler.static (for CUDA graphs: one grid_sample from the packed octaves) gives what
    __call__ gives, patch for patch, across octaves, upright as well as rotated, for patches inside
    the image: to 1e-9 in float64, float rounding in float32."""
    texture = make_texture(size=400)
    centers, supports, angles = _inside_image(40, 400, 275)
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 1e-3 * 255)):
        sampler = PatchSampler(torch.from_numpy(texture.astype(np.float64)).to(dtype)[None, None], size=16)
        assert len(torch.unique(sampler.octave_of(supports))) == len(sampler.octaves) >= 4
        c, s, a = (t.to(dtype) for t in (centers, supports, angles))
        for a in (None, a):
            torch.testing.assert_close(sampler.static(c, s, a), sampler(c, s, a), rtol=0, atol=atol)


def test_static_crops_cost_one_crop_whatever_the_octaves():
    """PatchSampler.static samples every patch from one canvas of the packed octaves: about the
    kernels and the memory traffic of one crop, not one crop per octave (a GPU's kernel launches; the
    bytes that bound elementwise work on a Jetson)."""
    from lift_localizer.evaluation.op_count import CountOps

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 480, 640, generator=g) * 255
    centers, supports, angles = (t.float() for t in _inside_image(300, 480, 320))
    sampler = PatchSampler(image)
    assert len(sampler.octaves) == 3 and len(torch.unique(sampler.octave_of(supports))) == 3
    with torch.inference_mode():
        with CountOps() as one:
            crop_patches(image, centers, supports, angles)
        with CountOps() as static:
            sampler.static(centers, supports, angles)
    assert static.kernels <= one.kernels + 12, (static.kernels, one.kernels)   # the canvas's copies, the table
    crop_bytes = 300 * 64 * 64 * 4
    # Its grid (two numbers a sample), the crop, and the canvas (once per frame): not 3 grids and crops.
    assert static.bytes_written < 5 * crop_bytes, static.bytes_written / crop_bytes


def test_constants_cached_during_inference_serve_training():
    """The crops' cached constants (unit grid, blur kernel, octave layout) are first built wherever a
    crop runs first, often under torch.inference_mode (extraction); training must still back-propagate
    through crops that reuse them (an inference tensor cannot be saved for backward)."""
    import lift_localizer.features.patches as patches

    for cache in (patches._UNIT_GRIDS, patches._BINOMIAL, patches._LAYOUTS):
        cache.clear()
    image = torch.rand(1, 1, 200, 200, generator=torch.Generator().manual_seed(0))
    supports = torch.tensor([40.0, 150.0])
    with torch.inference_mode():
        sampler = PatchSampler(image)
        sampler(torch.tensor([[100.0, 100.0]] * 2), supports)
        sampler.static(torch.tensor([[100.0, 100.0]] * 2), supports)
    for crop in ("__call__", "static"):
        centers = torch.tensor([[100.0, 100.0]] * 2, requires_grad=True)
        getattr(PatchSampler(image), crop)(centers, supports).sum().backward()
        assert centers.grad is not None and torch.isfinite(centers.grad).all()
