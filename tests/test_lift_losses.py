import math

import pytest
import torch

from lift_localizer.nets.desc import DESC
from lift_localizer.features.patches import crop_patches
from lift_localizer.training.losses import (
    DESC_MARGIN,
    crop_at,
    desc_loss,
    det_class_loss,
    pair_distance_loss,
    ratio_loss,
    softargmax,
    softmax_pool,
)


def t(x):
    return torch.tensor(x, dtype=torch.float64)


# ----- desc_loss / pair_distance_loss


def test_desc_loss_by_hand_one_triplet():
    d1, d2, d3 = t([[0.0, 0.0]]), t([[1.0, 0.0]]), t([[0.0, 1.0]])
    # positive 1, negative max(0, 4 - 1) = 3
    assert desc_loss(d1, d2, d3, margin=4.0, hard_negatives=False).item() == pytest.approx(4.0)
    # one anchor: the only candidate is d3[0], mining changes nothing
    assert desc_loss(d1, d2, d3, margin=4.0).item() == pytest.approx(4.0)
    # a far negative costs nothing
    assert desc_loss(d1, d2, t([[3.0, 0.0]]), margin=4.0).item() == pytest.approx(1.0)
    assert desc_loss(d1, d2, d3).item() == pytest.approx(1.0 + DESC_MARGIN - 1.0)


def test_hard_negative_is_the_other_points_view_not_the_own_positive():
    d1 = t([[0.0, 0.0], [1.0, 0.0]])
    d2 = t([[0.0, 0.5], [1.0, 0.5]])  # positives 0.25 each
    d3 = t([[0.0, 3.0], [1.0, 3.0]])  # own negatives at squared distance 9: past the margin 4
    assert desc_loss(d1, d2, d3, margin=4.0, hard_negatives=False).item() == pytest.approx(0.25)
    # mined: for anchor 0 the candidates are d3[0] (9), d3[1] (10), d2[1] (1.25); d2[0] (0.25) is
    # its own positive and excluded. Same for anchor 1. Each: 0.25 + (4 - 1.25) = 3.0
    assert desc_loss(d1, d2, d3, margin=4.0).item() == pytest.approx(3.0)


def test_hard_negative_can_be_another_rows_d3():
    d1 = t([[0.0, 0.0], [10.0, 0.0]])
    d2 = t([[0.0, 1.0], [10.0, 1.0]])
    d3 = t([[10.0, 10.0], [0.5, 0.0]])  # d3[1] lies next to anchor 0
    # unmined: anchor 0 vs d3[0]: 200 → 0; anchor 1 vs d3[1]: 90.25 → 0. Loss = mean(1, 1)
    assert desc_loss(d1, d2, d3, margin=4.0, hard_negatives=False).item() == pytest.approx(1.0)
    # mined: anchor 0's closest is d3[1] (0.25) → 3.75; anchor 1's: d2[0] (101), d3[0] (100),
    # d3[1] (90.25) → 0. Loss = (1 + 3.75 + 1) / 2
    assert desc_loss(d1, d2, d3, margin=4.0).item() == pytest.approx(2.875)


def test_hard_negative_leaves_out_rows_that_view_the_anchors_own_point():
    # Rows 0 and 1 view one point (id 7) from other images, as a scene's batch can: unmined, each
    # anchor's nearest candidate would be the other row's view of its own point.
    d1 = t([[0.0, 0.0], [0.2, 0.0], [5.0, 0.0]])
    d2 = t([[0.0, 0.5], [0.2, 0.5], [5.0, 0.5]])
    d3 = t([[0.0, 1.5], [0.0, 1.6], [3.0, 0.0]])
    ids, ids3 = torch.tensor([7, 7, 8]), torch.tensor([9, 10, 7])
    # Without ids anchor 0's negative is d1[1]'s partner d2[1] (0.29), anchor 1's d2[0] (0.29).
    blind = desc_loss(d1, d2, d3, margin=4.0)
    # With them: anchor 0's candidates are d3[0] (2.25), d3[1] (2.56), d2[2] (25.25); d3[2] (9) views
    # point 7 too, and d2[1] is left out: 0.25 + (4 - 2.25) = 2.0. Anchor 1: d3[0] (2.29) → 1.96.
    # Anchor 2 (point 8): d3[2] (4) → 0.25 + 0.
    seen = desc_loss(d1, d2, d3, margin=4.0, points=(ids, ids3))
    assert seen.item() == pytest.approx((2.0 + 0.25 + 4 - 2.29 + 0.25) / 3)
    assert blind.item() == pytest.approx((0.25 + 4 - 0.29) * 2 / 3 + 0.25 / 3)
    # ratio_loss mines the same way
    assert ratio_loss(d1, d2, d3, points=(ids, ids3)) < ratio_loss(d1, d2, d3)
    with pytest.raises(ValueError, match="id vectors"):
        desc_loss(d1, d2, d3, points=(ids[:2], ids3))


def test_hard_negative_matches_brute_force_and_gradient_reaches_chosen_negative():
    g = torch.Generator().manual_seed(0)
    n, dim, margin = 7, 5, 3.0
    d1, d2, d3 = (torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(3))
    want = 0.0
    for i in range(n):
        cands = [d3[j] for j in range(n)] + [d2[j] for j in range(n) if j != i]
        neg = min(float(((d1[i] - c) ** 2).sum()) for c in cands)
        want += float(((d1[i] - d2[i]) ** 2).sum()) + max(0.0, margin - neg)
    assert desc_loss(d1, d2, d3, margin=margin).item() == pytest.approx(want / n)
    assert desc_loss(d1, d2, d3, margin=margin).item() != pytest.approx(
        desc_loss(d1, d2, d3, margin=margin, hard_negatives=False).item())
    d1.requires_grad_(True)
    d2.requires_grad_(True)
    d3.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: desc_loss(a, b, c, margin=margin), (d1, d2, d3))


def test_ratio_loss_by_hand_both_ways():
    d1, d2 = t([[0.0, 0.0], [10.0, 0.0]]), t([[1.0, 0.0], [10.0, 1.0]])
    # anchor d1[0]: positive 1, nearest candidate d3[0] at 2 → max(0, 1 − 0.8·2) = 0; anchor d2[0]:
    # positive 1, nearest d3[0] at 1 → 1 − 0.8 = 0.2. Point 1's views are far from everything else.
    d3 = t([[2.0, 0.0], [-20.0, 0.0]])
    assert ratio_loss(d1, d2, d3).item() == pytest.approx(0.2 / 4)
    assert ratio_loss(d2, d1, d3).item() == pytest.approx(0.2 / 4)
    # at the localizer's own ratio, 0.9: anchor d2[0] gives 1 − 0.9 · 1 = 0.1
    assert ratio_loss(d1, d2, d3, ratio=0.9).item() == pytest.approx(0.1 / 4)
    # the other point's view is a candidate: put d2[1] next to d1[0]
    assert ratio_loss(d1, t([[1.0, 0.0], [0.5, 0.0]]), t([[50.0, 0.0], [-50.0, 0.0]])).item() > 0
    with pytest.raises(ValueError):
        ratio_loss(d1, d2, d3, ratio=0.0)


def test_a_step_on_the_ratio_loss_makes_more_views_pass_the_localizers_match_test():
    from lift_localizer.training.train_lift import ratio_matches

    g = torch.Generator().manual_seed(0)
    points = torch.randn(64, 8, generator=g, dtype=torch.float64)
    d1 = (points + 0.6 * torch.randn(64, 8, generator=g, dtype=torch.float64)).requires_grad_()
    d2 = points + 0.6 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    d3 = torch.randn(64, 8, generator=g, dtype=torch.float64)
    before = ratio_matches(d1.detach(), d2)
    assert 0 < before["val_ratio_recall"] < 1
    for _ in range(20):
        loss = ratio_loss(d1, d2, d3)
        (grad,) = torch.autograd.grad(loss, d1)
        d1 = (d1 - 2.0 * grad).detach().requires_grad_()
    after = ratio_matches(d1.detach(), d2)
    assert ratio_loss(d1, d2, d3).item() < loss.item() or loss.item() == 0
    assert after["val_ratio_recall"] > before["val_ratio_recall"] + 0.2
    assert after["val_ratio_precision"] >= before["val_ratio_precision"]
    assert ratio_matches(d2, d2) == {"val_ratio_recall": 1.0, "val_ratio_precision": 1.0}


def test_pair_distance_loss_by_hand():
    assert pair_distance_loss(t([[0.0, 0.0], [1.0, 1.0]]), t([[3.0, 4.0], [1.0, 2.0]])).item() == pytest.approx(13.0)


def test_shape_errors():
    with pytest.raises(ValueError):
        desc_loss(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        pair_distance_loss(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError):
        softargmax(torch.zeros(2, 3, 4, 4), 1.0)
    with pytest.raises(ValueError):
        softargmax(torch.zeros(1, 1, 4, 4), 0.0)


# ----- softargmax / softmax_pool


def test_softargmax_by_hand_and_one_hot():
    # weights 1/4, 3/4 on x = 0, 1
    xy = softargmax(t([[[[0.0, math.log(3.0)]]]]), beta=1.0)
    assert xy[0].tolist() == pytest.approx([0.75, 0.0])
    s = torch.zeros(2, 1, 5, 6, dtype=torch.float64)
    s[0, 0, 2, 3] = 1.0
    s[1, 0, 4, 0] = 1.0
    assert torch.allclose(softargmax(s, beta=60.0), t([[3.0, 2.0], [0.0, 4.0]]), rtol=0, atol=1e-20)
    # β → 0: the centre of the map
    assert torch.allclose(softargmax(s, beta=1e-9), t([[2.5, 2.0], [2.5, 2.0]]), rtol=0, atol=1e-6)


def test_softargmax_large_beta_approaches_argmax_and_is_stable():
    g = torch.Generator().manual_seed(1)
    s = torch.rand(4, 1, 9, 11, generator=g)
    idx = s.flatten(1).argmax(1)
    s.view(4, -1)[torch.arange(4), idx] += 0.05  # the maximum 0.05 above the rest
    want = torch.stack([idx % 11, idx // 11], 1).float()
    errs = [(softargmax(s, beta) - want).abs().max().item() for beta in (10.0, 100.0, 1000.0)]
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-5
    big = softargmax(s * 1e6, beta=1e3)  # exp(1e9) without the max subtracted
    assert torch.isfinite(big).all() and torch.allclose(big, want)


def test_softargmax_gradcheck():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(2, 1, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: softargmax(x, beta=2.0), (s,))


def test_softmax_pool_is_log_mean_exp():
    # (1/β) log mean(exp(0), exp(log 3)) = log 2 for β = 1
    assert softmax_pool(t([[[[0.0, math.log(3.0)]]]]), beta=1.0).item() == pytest.approx(math.log(2.0))
    s = torch.randn(3, 1, 4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    flat = s.flatten(1)
    assert torch.allclose(softmax_pool(s, 2.0), torch.log(torch.exp(2.0 * flat).mean(1)) / 2.0)
    assert torch.allclose(softmax_pool(s, 1e5), flat.amax(1), atol=1e-4)  # max - log(20)/1e5
    assert torch.allclose(softmax_pool(s, 1e-6), flat.mean(1), atol=1e-5)
    assert torch.allclose(softmax_pool(torch.full((1, 1, 3, 3), 7.0), 10.0), t([7.0]).float())
    assert torch.isfinite(softmax_pool(s * 1e6, 100.0)).all()
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: softmax_pool(x, 1.5), (s,))


# ----- det_class_loss


def test_det_class_loss():
    maps = torch.zeros(4, 1, 3, 3, dtype=torch.float64)
    maps[0] = 5.0   # positive, confident
    maps[1] = -5.0  # negative, confident
    maps[2] = -1.0  # positive, wrong: (1 + 1)^2 = 4
    maps[3] = 0.5   # negative, wrong: (1 + 0.5)^2 = 2.25
    y = torch.tensor([1, -1, 1, -1])
    assert det_class_loss(maps[:2], y[:2], beta=10.0).item() == 0.0
    assert det_class_loss(maps[2:3], y[2:3], beta=10.0).item() == pytest.approx(4.0)
    assert det_class_loss(maps, y, beta=10.0).item() == pytest.approx((4.0 + 2.25) / 4)
    # paper weights: 1/6 per positive, 3/6 for the negative (three positives per negative)
    maps3 = torch.cat([maps[:1], maps[2:3], maps[2:3], maps[3:]])
    y3 = torch.tensor([1, 1, 1, -1])
    assert det_class_loss(maps3, y3, 10.0, balanced=True).item() == pytest.approx((0 + 4 + 4) / 6 + 2.25 * 3 / 6)
    # a single strong peak makes a positive patch right; the soft max of a negative patch with a
    # peak is high, so it is wrong
    peak = torch.full((1, 1, 5, 5), -2.0, dtype=torch.float64)
    peak[0, 0, 2, 2] = 3.0
    assert det_class_loss(peak, torch.tensor([1]), beta=100.0).item() == 0.0
    assert det_class_loss(peak, torch.tensor([-1]), beta=100.0).item() > 1.0


# ----- crop_at


def test_crop_at_equals_crop_patches_per_patch():
    g = torch.Generator().manual_seed(4)
    big = torch.randn(3, 1, 20, 20, generator=g, dtype=torch.float64)
    xy = t([[9.5, 10.2], [7.0, 11.3], [12.1, 8.8]])
    support = t([8.0, 10.0, 6.0])
    angles = t([0.3, -1.2, 2.0])
    got = crop_at(big, xy, support, angles, size=6)
    for i in range(3):
        want = crop_patches(big[i:i + 1], xy[i:i + 1], support[i:i + 1], angles[i:i + 1], 6)
        assert torch.allclose(got[i:i + 1], want)
    upright = crop_at(big, xy, 8.0, None, size=6)
    assert torch.allclose(upright[1:2], crop_patches(big[1:2], xy[1:2], t([8.0]), None, 6))


def test_crop_at_gradcheck_centres_and_angles():
    g = torch.Generator().manual_seed(5)
    big = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    xy = t([[3.37, 3.61], [4.12, 3.23]]).requires_grad_(True)
    angles = t([0.41, -0.93]).requires_grad_(True)
    support = t([4.3, 3.7])
    assert torch.autograd.gradcheck(lambda c, a: crop_at(big, c, support, a, size=4), (xy, angles))


def test_det_pair_term_backpropagates_through_softargmax_and_crop():
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(2, 1, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    big = torch.randn(2, 1, 12, 12, generator=g, dtype=torch.float64)
    crops = crop_at(big, softargmax(scores, 3.0) + 3.0, 4.0, None, size=4)
    pair_distance_loss(crops[:1].flatten(1), crops[1:].flatten(1)).backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


# ----- a training step


def test_one_sgd_step_on_desc_lowers_desc_loss():
    torch.manual_seed(0)
    net = DESC()
    g = torch.Generator().manual_seed(7)
    n = 6
    points = torch.randn(2 * n, 1, 64, 64, generator=g)
    p1 = points[:n]
    p2 = p1 + 0.3 * torch.randn(n, 1, 64, 64, generator=g)
    p3 = points[n:]
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def loss():
        return desc_loss(net(p1), net(p2), net(p3))

    before = loss()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item()


def test_angle_regression_loss_by_hand():
    from lift_localizer.training.losses import angle_regression_loss

    theta = torch.tensor([0.0, 0.5, 3.0])
    unit = torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    assert float(angle_regression_loss(unit, theta)) == pytest.approx(0.0, abs=1e-6)
    # Opposite directions cost 2, a quarter turn 1; wrapping by 2π costs nothing.
    assert float(angle_regression_loss(unit, theta + math.pi)) == pytest.approx(2.0, abs=1e-6)
    assert float(angle_regression_loss(unit, theta + math.pi / 2)) == pytest.approx(1.0, abs=1e-6)
    assert float(angle_regression_loss(unit, theta - 2 * math.pi)) == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError):
        angle_regression_loss(unit, theta[:2])
