"""DET's training step (Yi et al., ECCV 2016, §4): classification plus the pair term (the joint
phase adds DESC's negative term on the same keypoints, train_lift.joint_loss).

DET runs on each 128×128 training patch resized as inference resizes an image for the patch's
keypoint scale (the 64-pixel descriptor support → DET's 25-pixel window), so that training and
inference see the same thing: the 128-pixel patch becomes 47 pixels, the score map 23×23.
softargmax of the score map is the keypoint; a spatial transformer
crops the descriptor support there, ORI (fixed) orients it and DESC (fixed) describes it. The pair
term pulls the descriptors of P1's and P2's keypoints together, so DET learns to fire at the same
3D point in both views; the classification term makes DET fire on P1, P2, P3 (points that survived
SfM) and stay low on P4 (no keypoint).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..nets import ori as ori_module
from ..nets.det import HALF_WINDOW
from ..weights import LoadedNetwork
from .patches import PATCH_SIZE as SOURCE
from .losses import (
    crop_at,
    det_class_loss,
    pair_distance_loss,
    softargmax,
    softmax_pool,
)

SUPPORT = SOURCE // 2           # descriptor support in patch pixels (a training patch is twice as wide)
# The level inference builds for the patch's scale: the 64-px support → 23.5 px, DET's 25-px window
# (scale_space.resize_ratio).
LEVEL = round(SOURCE * HALF_WINDOW / SUPPORT)


def score_maps(det: LoadedNetwork, patches: torch.Tensor) -> torch.Tensor:
    """(B, 1, 128, 128) grey patches in [0, 255] → (B, 1, h, w) DET scores at the patch's level."""
    x = (patches - det.mean) / det.std
    x = F.interpolate(x, size=(LEVEL, LEVEL), mode="bilinear", align_corners=False, antialias=True)
    return det.module(x)


def to_patch_pixels(xy_score: torch.Tensor, margin: int) -> torch.Tensor:
    """Score-map pixels (B, 2) → patch pixels, through the level's pixels (+ DET's margin)."""
    ratio = LEVEL / SOURCE
    return (xy_score + margin + 0.5) / ratio - 0.5


def keypoint_descriptors(nets: dict[str, LoadedNetwork], patches: torch.Tensor,
                         xy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ORI's angles (B,) and DESC's descriptors (B, D) of the support at ``xy`` (B, 2 patch pixels):
    the pipeline after DET, as inference runs it; differentiable in ``xy`` and in ORI."""
    ori, desc = nets["ori"], nets["desc"]
    upright = crop_at(patches, xy, float(SUPPORT))
    angle = ori_module.angle(ori.module((upright - ori.mean) / ori.std))
    rotated = crop_at(patches, xy, float(SUPPORT), angle)
    return angle, desc.module((rotated - desc.mean) / desc.std)


def patch_centres(b: int) -> torch.Tensor:
    """(b, 2) the centre of every training patch, where its SfM keypoint lies."""
    return torch.full((b, 2), (SOURCE - 1) / 2)


def det_terms(nets: dict[str, LoadedNetwork], batch: dict, conf: dict,
              with_p3: bool = False) -> dict[str, torch.Tensor]:
    """The classification and pair terms on one batch of quadruplets, and the keypoints found.

    ``with_p3``: also describe P3 at its own softargmax keypoint, for the joint phase's negative term;
    "keypoint_descriptors" holds the rows of P1, P2 (and P3), still attached to the graph."""
    det = nets["det"]
    b = batch["p1"].shape[0]
    scores = score_maps(det, torch.cat([batch[f"p{k}"] for k in (1, 2, 3, 4)]))
    labels = torch.cat([torch.ones(3 * b), -torch.ones(b)])
    classification = det_class_loss(scores, labels, conf["softmax_beta"], balanced=True)
    described = 3 if with_p3 else 2
    xy = to_patch_pixels(softargmax(scores[:described * b], conf["softargmax_beta"]), det.module.margin)
    _, d = keypoint_descriptors(nets, torch.cat([batch[f"p{k}"] for k in range(1, described + 1)]), xy)
    pair = pair_distance_loss(d[:b], d[b:2 * b])
    # The held-out figures stay those of P1 and P2, whichever phase computed the terms.
    return {"class": classification, "pair": pair, "xy": xy[:2 * b].detach(), "descriptors": d[:2 * b].detach(),
            "keypoint_descriptors": d, "pooled": softmax_pool(scores, conf["softmax_beta"]).detach(),
            "labels": labels}


def det_loss(terms: dict[str, torch.Tensor], conf: dict) -> torch.Tensor:
    """γ · L_class + L_pair, the paper's detector loss."""
    return conf["class_weight"] * terms["class"] + terms["pair"]


@torch.no_grad()
def det_validation(terms: dict[str, torch.Tensor]) -> dict:
    """Held-out figures: the loss terms, classification accuracy, how far the keypoint lands from the
    SfM point (the patch centre) and NN accuracy of the descriptors at P1's and P2's keypoints."""
    offset = (terms["xy"] - patch_centres(len(terms["xy"]))).norm(dim=1)
    correct = (terms["pooled"] > 0) == (terms["labels"] > 0)
    return {"val_class": round(float(terms["class"]), 4), "val_pair": round(float(terms["pair"]), 4),
            "val_class_accuracy": round(float(correct.float().mean()), 4),
            "val_median_offset_px": round(float(offset.median()), 2),
            "val_nn_accuracy": nn_accuracy(*terms["descriptors"].chunk(2))}


@torch.no_grad()
def nn_accuracy(d1: torch.Tensor, d2: torch.Tensor) -> float:
    """How often row i of ``d2`` is the nearest to row i of ``d1`` among all rows of ``d2``."""
    return float((torch.cdist(d1, d2).argmin(1) == torch.arange(len(d1))).float().mean())
