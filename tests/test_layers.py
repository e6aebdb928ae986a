import numpy as np
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
