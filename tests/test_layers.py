import numpy as np
import pytest
import torch

from lift_localizer.nets.desc import DESC, gaussian_kernel
from lift_localizer.nets.layers import ghh, l2_pool, subtractive_normalization


def test_ghh_max_in_groups_then_alternating_sum():
    x = torch.randn(3, 2 * 16, 5, 7)
    got = ghh(x, 4, 4)
    assert got.shape == (3, 2, 5, 7)
    xn = x.numpy()
    for u in range(2):
        want = sum((1 if s % 2 == 0 else -1) * xn[:, u * 16 + s * 4:u * 16 + s * 4 + 4].max(axis=1)
                   for s in range(4))
        np.testing.assert_allclose(got[:, u].numpy(), want, rtol=1e-6, atol=1e-6)


def test_ghh_on_flat_features():
    x = torch.randn(5, 32)
    assert ghh(x, 4, 4).shape == (5, 2)


def test_l2_pool_is_root_of_sum_not_mean():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    got = l2_pool(x, 2)
    block = np.array([0, 1, 4, 5], np.float64)
    assert got.shape == (1, 1, 2, 2)
    assert np.isclose(got[0, 0, 0, 0].item(), np.sqrt((block**2).sum()))


def _subtractive_numpy(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Direct implementation: channel-mean map, normalised kernel, zero padding, border coefficient."""
    k = kernel / kernel.sum()
    r = k.shape[0] // 2
    b, c, h, w = x.shape
    avg = x.mean(axis=1)
    pad = np.pad(avg, ((0, 0), (r, r), (r, r)))
    ones = np.pad(np.ones((h, w)), r)
    mean = np.zeros((b, h, w))
    coef = np.zeros((h, w))
    for dy in range(k.shape[0]):
        for dx in range(k.shape[1]):
            mean += k[dy, dx] * pad[:, dy:dy + h, dx:dx + w]
            coef += k[dy, dx] * ones[dy:dy + h, dx:dx + w]
    return x - (mean / coef)[:, None]


def test_subtractive_normalization_matches_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 9, 11)).astype(np.float32)
    kernel = gaussian_kernel().numpy() * 7.3  # any scale: the kernel is normalised
    got = subtractive_normalization(torch.from_numpy(x), torch.from_numpy(kernel)).numpy()
    np.testing.assert_allclose(got, _subtractive_numpy(x.astype(np.float64), kernel), atol=1e-5)
    # A constant input becomes exactly zero everywhere, borders included (the border correction).
    const = subtractive_normalization(torch.full((1, 4, 6, 6), 3.0), torch.from_numpy(kernel))
    assert const.abs().max() < 1e-5


def test_desc_shapes():
    out = DESC()(torch.randn(4, 1, 64, 64))
    assert out.shape == (4, 128)


def test_pruning_desc_to_its_own_widths_changes_nothing_and_to_thin_keeps_the_strongest():
    from lift_localizer.nets.desc import pruned
    from lift_localizer.weights import load_network

    full = load_network("desc").module
    x = torch.randn(5, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(pruned(full, "lift-desc-v1")(x), full(x))
        thin = pruned(full, "lift-desc-thin-v1")
        assert thin(x).shape == (5, 128) and thin.conv1.out_channels == 16 and thin.conv2.out_channels == 32
    # The 32 kept outputs of conv2 are those conv3 weighs most.
    weight = full.conv3.weight.detach().abs().sum((0, 2, 3))
    kept = {float(w) for w in thin.conv3.weight.detach().abs().sum((0, 2, 3))}
    assert kept == {float(w) for w in weight.sort(descending=True).values[:32]}


def test_fast_desc_strides_over_the_pooling_windows_and_starts_near_its_teacher():
    """The fast DESC samples each L2-pooling window once: its first two convolutions stride by 2 and
    3. Cut from the full DESC, its second and third convolutions are scaled by the window's side, so
    that its untrained descriptors keep the teacher's magnitude (an L2 pool of w² similar values is w
    times one of them); unscaled, they would be less than half of it."""
    import copy

    from lift_localizer.nets.desc import pruned
    from lift_localizer.weights import load_network

    full = load_network("desc").module
    torch.manual_seed(0)
    x = torch.nn.functional.avg_pool2d(torch.randn(64, 1, 68, 68), 5, 1)
    x = (x - x.mean((2, 3), keepdim=True)) / x.std((2, 3), keepdim=True)
    with torch.no_grad():
        fast = pruned(full, "lift-desc-fast-v1")
        assert fast.conv1.stride == (2, 2) and fast.conv2.stride == (3, 3) and fast(x).shape == (64, 128)
        assert (fast.conv1.out_channels, fast.conv2.out_channels) == (16, 64)
        unscaled = copy.deepcopy(fast)
        unscaled.conv2.weight /= 2
        unscaled.conv3.weight /= 3

        def magnitude(net):
            return float((net(x).norm(dim=1) / full(x).norm(dim=1)).median())

        assert 0.75 < magnitude(fast) < 1.33 and magnitude(unscaled) < 0.5


def test_fast_ori_strides_instead_of_pooling_with_the_same_tensors():
    from lift_localizer.nets.ori import ORI, converted
    from lift_localizer.weights import load_network

    full = load_network("ori").module
    fast = converted(full, "lift-ori-fast-v1")
    assert {k: v.shape for k, v in fast.state_dict().items()} == {k: v.shape for k, v in full.state_dict().items()}
    x = torch.randn(6, 1, 64, 64)
    with torch.no_grad():
        y = fast(x)
        assert y.shape == (6, 2) and torch.allclose(y.norm(dim=1), torch.ones(6))
        assert not torch.allclose(y, full(x))  # another function of the same weights
        assert torch.equal(converted(full, "lift-ori-v1")(x), full(x))
    with pytest.raises(ValueError, match="unknown ORI architecture"):
        ORI("lift-ori-v0")
