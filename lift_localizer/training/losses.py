"""The LIFT training losses (Yi, Trulls, Lepetit, Fua, ECCV 2016), as pure functions on tensors.

DESC is trained first with ``desc_loss`` on (P1, P2, P3) = two views of one 3D point and a view
of another. ORI is trained next with ``pair_distance_loss`` between DESC(Rot(P1, θ1)) and
DESC(Rot(P2, θ2)), the rotation done by ``crop_at`` (a spatial transformer) so that the loss
back-propagates into θ. DET is trained last: ``det_class_loss`` on the score maps of P1, P2, P3
(label +1) and of a patch without a keypoint, P4 (label -1), plus ``pair_distance_loss`` between
the descriptors of P1 and P2 cropped at their ``softargmax`` locations.

Conventions: pixel (0, 0) is the centre of the top-left pixel; x right, y down (as patches.py).
Descriptor distances are squared L2 distances. The paper (as DeepDesc) writes the unsquared
distance ‖·‖₂ in its losses, with the margin C = 4; a hinge max(0, C² - d²) is zero for exactly the
same negatives as max(0, C - d), so the default margin here is C² = 16 (see ``DESC_MARGIN``).
"""
from __future__ import annotations

import math

import torch

from ..features.patches import crop_patches

# Default margin C of desc_loss, in squared descriptor distance. Why 16:
# * The paper and DeepDesc use C = 4 on the unsquared L2 distance; C² = 16 makes the same negatives
#   active in the squared form.
# * The released LIFT DESC (trained with that margin; ../shared/data/reference) on 256 textured
#   patches (lift_localizer.synthetic.make_texture, 64 px support), squared distances: different
#   points median 21 (20 % below 16, none below 4), closest other point in the batch median 5.7-6.1
#   (all below 16), same point shifted 2 px / turned 0.1 rad / scaled 5 % median 0.7. Random
#   negatives of the trained net sit just past 16, as a margin leaves them; a margin of 4 would
#   have been met by all of them.
# * The untrained DESC (PyTorch initialisation; seed 0 as shipped, and seeds 1, 2) on the same
#   patches: different points median 23-25 (12-13 for seed 2), closest in the batch median 1.2-2.3,
#   same point median 0.2-0.3. With 16 every mined negative and about a third of the random ones
#   (60 % for seed 2) start active, far above the positive distances. Each component is the L2
#   pooling of 4×4 tanh values, in [0, 4], so squared distances lie in [0, 2048]: 16 is reachable
#   without saturating tanh.
DESC_MARGIN = 16.0

# Default β of softargmax and softmax_pool. β is relative to the scale of the scores: it is the
# inverse temperature of exp(β S). The released LIFT code uses 10 for its trained detector. The
# detector shipped here (det.analytic_init, |LoG|) scores 64×64 normalised textured patches (40×40
# maps) with max - median about 0.28 (median over 200 patches; p10 0.03, p90 0.58). Effective
# number of pixels exp(entropy) of the softmax weights, and softargmax's distance to the argmax:
#   β = 10:   1125 of 1600 pixels, 16 px (the softargmax is about the centroid of the map)
#   β = 100:  8 pixels, 1.9 px (median; p90 18 px where the map has two similar peaks)
#   β = 1000: 1.3 pixels, 0.03 px (nearly a hard argmax, gradients vanish)
# so 100: close to the argmax yet still averaging over a few pixels. The same β keeps
# softmax_pool within log(1600)/100 = 0.07 of the map's maximum (median 0.06 below it; with β = 10
# it is 0.22 below, near the map's mean). Retune if trained scores span a different range.
SOFTARGMAX_BETA = 100.0
SOFTMAX_BETA = 100.0


def _check_beta(beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be positive, got {beta}")


def _check_score_map(scores: torch.Tensor) -> None:
    if scores.dim() != 4 or scores.shape[1] != 1:
        raise ValueError(f"scores must be (B, 1, h, w), got {tuple(scores.shape)}")


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D), (M, D) → (N, M) squared L2 distances (by expansion; for choosing, not for the loss value)."""
    return ((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between a student's descriptors and its teacher's of the same patches.

    Args:
        student: (N, D) descriptors.
        teacher: (N, D) descriptors of the same N patches (no gradient needed).
    Returns:
        () scalar.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} descriptors differ in shape")
    return (student - teacher).pow(2).sum(1).mean()


def _hardest_negatives(anchors: torch.Tensor, positives: torch.Tensor, others: torch.Tensor,
                       points: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """(N, D): for each anchor row i, the nearest of the rows of ``others`` and of ``positives`` j ≠ i
    (positives[i] views the anchor's own point). With ``points`` = (ids of the anchors' (= positives')
    points, ids of the others' points), each (N,), no row that views the anchor's point is a
    candidate either. Chosen without gradient; the rows returned carry it."""
    n = anchors.shape[0]
    candidates = torch.cat([others, positives], dim=0)   # (2N, D)
    with torch.no_grad():
        dist = _squared_distances(anchors, candidates)
        own = torch.arange(n, device=anchors.device)
        dist[own, n + own] = math.inf
        if points is not None:
            ids, other_ids = points
            if ids.shape != (n,) or other_ids.shape != (n,):
                raise ValueError(f"points must be two ({n},) id vectors, got {tuple(ids.shape)}, {tuple(other_ids.shape)}")
            same = ids[:, None] == torch.cat([other_ids, ids])[None, :]
            dist[same] = math.inf
        choice = dist.argmin(dim=1)
    return candidates[choice]


def desc_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, margin: float = DESC_MARGIN,
              hard_negatives: bool = True, points: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """LIFT's descriptor loss: pull views of one point together, push other points past a margin.

    For each anchor i: ``‖d1[i] - d2[i]‖² + max(0, C - ‖d1[i] - n_i‖²)``, averaged over the N
    anchors (one positive and one negative term per anchor; not divided by 2). Without mining n_i is
    d3[i]. With ``hard_negatives`` n_i is the candidate closest to d1[i] among all rows of d3 and
    the rows d2[j], j ≠ i (in-batch hard negative mining, in the spirit of LIFT/DeepDesc's mining of
    hard negatives). Without ``points`` this assumes that the N rows of the batch are N different 3D
    points and that no row of d3 views any of them; with them, rows that view the anchor's point are
    left out. The gradient flows through the chosen negative only.

    Args:
        d1: (N, D) descriptors of N points in one view (anchors).
        d2: (N, D) descriptors of the same N points in another view.
        d3: (N, D) descriptors of other points.
        margin: C, in squared distance (see DESC_MARGIN for the default's reasoning).
        hard_negatives: mine the closest negative in the batch for each anchor.
        points: ((N,) ids of the points of d1/d2, (N,) ids of the points of d3), or None.
    Returns:
        () scalar.
    """
    if d1.dim() != 2 or d1.shape != d2.shape or d1.shape != d3.shape:
        raise ValueError(f"d1, d2, d3 must all be (N, D), got {tuple(d1.shape)}, {tuple(d2.shape)}, {tuple(d3.shape)}")
    positive = (d1 - d2).pow(2).sum(1)
    if hard_negatives:
        negative = (d1 - _hardest_negatives(d1, d2, d3, points)).pow(2).sum(1)
    else:
        negative = (d1 - d3).pow(2).sum(1)
    return (positive + torch.relu(margin - negative)).mean()


# The ratio ``ratio_loss`` asks for: stricter than the localizer's test (0.9, options.default_conf),
# so that a match passes it with room to spare on an unseen image.
TRAIN_RATIO = 0.8


def ratio_loss(d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor, ratio: float = TRAIN_RATIO,
               points: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The localizer's matching as a loss: each view's descriptor nearer to the other view's than
    ``ratio`` × to the nearest other point, in both directions (the matching is mutual).

    Localization keeps a match when the two descriptors are mutual nearest neighbours and the
    nearest is closer than 0.9 × the second nearest (L2 distances; features/matching.py). Here, for
    each anchor a = d1[i] with positive p = d2[i], and for a = d2[i] with p = d1[i]:
    ``max(0, ‖a − p‖ − ratio · ‖a − n‖)``, n the nearest candidate among the rows of d3 and the
    other view's rows j ≠ i (as ``desc_loss``'s mining; the gradient flows through it only). The
    loss is relative, so it does not hold the descriptors' scale: train with a teacher
    (``distillation_loss``), which keeps them in the space NetVLAD aggregates.

    Args:
        d1, d2: (N, D) descriptors of N points in two views; d3: (N, D) descriptors of other points.
        ratio: the ratio asked for, in (0, 1].
        points: as desc_loss's.
    Returns:
        () scalar, the mean over the 2N anchors.
    """
    if d1.dim() != 2 or d1.shape != d2.shape or d1.shape != d3.shape:
        raise ValueError(f"d1, d2, d3 must all be (N, D), got {tuple(d1.shape)}, {tuple(d2.shape)}, {tuple(d3.shape)}")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio must be in (0, 1], got {ratio}")
    terms = []
    for a, p in ((d1, d2), (d2, d1)):
        positive = (a - p).pow(2).sum(1).clamp(min=1e-12).sqrt()
        negative = (a - _hardest_negatives(a, p, d3, points)).pow(2).sum(1).clamp(min=1e-12).sqrt()
        terms.append(torch.relu(positive - ratio * negative))
    return torch.cat(terms).mean()


def pair_distance_loss(d1: torch.Tensor, d2: torch.Tensor) -> torch.Tensor:
    """Mean squared L2 distance between matching rows: mean_i ‖d1[i] - d2[i]‖².

    The ORI loss (descriptors of P1 and P2 rotated by ORI's angles) and DET's pair term
    (descriptors cropped at the softargmax locations).

    Args:
        d1, d2: (N, D).
    Returns:
        () scalar.
    """
    if d1.shape != d2.shape or d1.dim() != 2:
        raise ValueError(f"d1, d2 must both be (N, D), got {tuple(d1.shape)}, {tuple(d2.shape)}")
    return (d1 - d2).pow(2).sum(1).mean()


def angle_regression_loss(cos_sin: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(θ - t): ORI's unit vectors (cos θ, sin θ) against target angles t.

    A warm start for ORI, not one of the paper's losses: from an upright start the pair loss sees
    mostly upright training pairs, for which angle 0 is already consistent, and ORI does not move
    (measured: held-out NN accuracy 0.540 → 0.534). Regressing the SfM keypoints' SIFT angles first
    gives ORI canonical angles the pair loss can then refine. 0 when θ = t, 2 when opposite,
    smooth and periodic (no wrap-around jump).

    Args:
        cos_sin: (N, 2) unit vectors.
        target: (N,) radians.
    Returns:
        () scalar.
    """
    if cos_sin.dim() != 2 or cos_sin.shape[1] != 2 or target.shape != cos_sin.shape[:1]:
        raise ValueError(f"cos_sin must be (N, 2) and target (N,), got {tuple(cos_sin.shape)}, {tuple(target.shape)}")
    return (1.0 - cos_sin[:, 0] * torch.cos(target) - cos_sin[:, 1] * torch.sin(target)).mean()


def softargmax(scores: torch.Tensor, beta: float = SOFTARGMAX_BETA) -> torch.Tensor:
    """Differentiable location of the maximum: Σ exp(β S(p)) p / Σ exp(β S(p)), per map.

    Computed stably (the map's maximum is subtracted before the exponential). β → ∞ gives the
    argmax, β → 0 the centre of the map. LIFT replaces non-maximum suppression by this.

    Args:
        scores: (B, 1, h, w) score maps.
        beta: inverse temperature, > 0, relative to the scale of the scores (see SOFTARGMAX_BETA).
    Returns:
        (B, 2) x, y in pixels of the score map, (0, 0) the centre of its top-left pixel. For DET
        (no padding) add ``det.margin`` (12) to get pixels of DET's input.
    """
    _check_score_map(scores)
    _check_beta(beta)
    b, _, h, w = scores.shape
    s = scores.reshape(b, h * w)
    weights = torch.softmax(beta * (s - s.amax(dim=1, keepdim=True).detach()), dim=1).reshape(b, h, w)
    xs = torch.arange(w, dtype=scores.dtype, device=scores.device)
    ys = torch.arange(h, dtype=scores.dtype, device=scores.device)
    x = (weights.sum(dim=1) * xs).sum(dim=1)
    y = (weights.sum(dim=2) * ys).sum(dim=1)
    return torch.stack([x, y], dim=1)


def softmax_pool(scores: torch.Tensor, beta: float = SOFTMAX_BETA) -> torch.Tensor:
    """The "softmax" of LIFT's classification loss: the log-mean-exponential of the score map.

    ``(1/β) log( (1/hw) Σ exp(β S(p)) )``, as the paper calls it ("log-mean-exponential softmax")
    and the released code computes it (max + log(mean(exp(β (S - max)))) / β). A soft maximum:
    between the mean of the map (β → 0) and its maximum (β → ∞), never above the maximum and at
    least max - log(hw) / β. Its gradient w.r.t. S is exactly softargmax's weights
    exp(β S) / Σ exp(β S). (Not the softmax-weighted mean Σ exp(βS) S / Σ exp(βS), which is
    another soft maximum with the same limits; LIFT uses this one.)

    Args:
        scores: (B, 1, h, w) score maps.
        beta: inverse temperature, > 0 (see SOFTMAX_BETA).
    Returns:
        (B,).
    """
    _check_score_map(scores)
    _check_beta(beta)
    b, _, h, w = scores.shape
    s = scores.reshape(b, h * w)
    top = s.amax(dim=1).detach()
    return top + (torch.logsumexp(beta * (s - top[:, None]), dim=1) - math.log(h * w)) / beta


def det_class_loss(scores: torch.Tensor, labels: torch.Tensor, beta: float = SOFTMAX_BETA,
                   balanced: bool = False) -> torch.Tensor:
    """LIFT's detector classification loss: max(0, 1 - y · softmax_pool(S))², averaged.

    Positive patches (y = +1, centred on a keypoint: P1, P2, P3) must reach a soft maximum of at
    least 1 somewhere; negative patches (y = -1, P4) must stay at or below -1 everywhere.

    Args:
        scores: (B, 1, h, w) DET score maps of the patches.
        labels: (B,) +1 or -1.
        beta: of softmax_pool.
        balanced: False: the plain mean over B. True: half the mean over the positives plus half
            the mean over the negatives, the paper's weights α = 1/6 for each of P1, P2, P3 and
            3/6 for P4 when the batch holds three positives per negative.
    Returns:
        () scalar.
    """
    if labels.shape != scores.shape[:1]:
        raise ValueError(f"labels must be (B,) = {tuple(scores.shape[:1])}, got {tuple(labels.shape)}")
    y = labels.to(scores.dtype)
    per_patch = torch.relu(1.0 - y * softmax_pool(scores, beta)).pow(2)
    if not balanced:
        return per_patch.mean()
    pos, neg = y > 0, y < 0
    parts = [per_patch[m].mean() for m in (pos, neg) if bool(m.any())]
    return torch.stack(parts).mean()


def crop_at(patches: torch.Tensor, xy: torch.Tensor, support: torch.Tensor | float,
            angles: torch.Tensor | None = None, size: int = 64) -> torch.Tensor:
    """One crop from each of B larger patches, at its own centre, support and angle.

    ``crop_patches`` with ``batch_index = arange(B)``: a spatial transformer (affine sampling grid
    by matrix product, bilinear sampling), differentiable w.r.t. the patches, ``xy``, ``support``
    and ``angles``. This is how DET's pair term (centres from ``softargmax``) and the ORI loss
    (angles from ORI) back-propagate into those networks.

    Args:
        patches: (B, C, S, S) (or (B, C, H, W)) larger patches.
        xy: (B, 2) centres x, y in pixels of ``patches`` ((0, 0) = centre of the top-left pixel);
            a softargmax of DET's score map plus ``det.margin`` when DET ran on ``patches``.
        support: (B,) full crop width in pixels of ``patches``, or one number for all.
        angles: (B,) radians (the crop's x axis turned by θ in the patch, x right, y down), or None.
        size: output side in pixels.
    Returns:
        (B, C, size, size); samples outside the patch are 0.
    """
    if patches.dim() != 4:
        raise ValueError(f"patches must be (B, C, H, W), got {tuple(patches.shape)}")
    b = patches.shape[0]
    if xy.shape != (b, 2):
        raise ValueError(f"xy must be ({b}, 2), got {tuple(xy.shape)}")
    support = torch.as_tensor(support, dtype=patches.dtype, device=patches.device)
    support = support.expand(b) if support.dim() == 0 else support
    if support.shape != (b,) or (angles is not None and angles.shape != (b,)):
        raise ValueError(f"support and angles must be ({b},)")
    index = torch.arange(b, device=patches.device)
    return crop_patches(patches, xy, support, angles, size, batch_index=index)
