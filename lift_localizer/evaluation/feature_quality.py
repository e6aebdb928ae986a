"""``lift-localizer evaluate-features``: LIFT (with the weights given) beside OpenCV SIFT, measured in
the same run, on data the LIFT weights were not trained on (training/splits.json, "lift" test):

- detector repeatability under illumination change: Webcam test scenes (fixed cameras, so the same
  pixel is the same point): top-1000 keypoints per image, a keypoint is repeated when the other
  image has one within 5 px (mutual nearest), divided by the smaller count; mutual-NN descriptor
  matching precision at 5 px beside it;
- matching on ScanNet pairs (ground-truth relative pose), images at 640x480 as in SuperGlue's
  protocol for these pairs: mutual-NN matches, a match is correct when its symmetric epipolar
  distance is under the threshold (pixels); matching score = correct / keypoints (the smaller
  count), with every extractor cut to the same keypoint count per image (else the one that finds
  more keypoints is divided by more); mean matching accuracy = precision averaged over 1, 3, 5, 10 px;
  relative pose accuracy as SuperGlue measures it: an essential matrix by RANSAC from the matches
  (OpenCV, 1 px at 640x480), the pose error the larger of the rotation and translation-direction
  errors, and its AUC up to 5, 10 and 20 degrees;
- DESC against the released LIFT DESC on the same keypoints (Webcam test scenes, SIFT keypoints,
  patches cut identically): nearest-neighbour accuracy of the same keypoint across images.
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from ..features.extractors import make_extractor
from ..images import read_image
from ..features.types import Features
from ..features.matching import mutual_nearest_neighbours
from .features import score_pair
from ..nets.presets import apply_preset

TEST_SCENES = ("chamonix", "courbevoie")
EPIPOLAR_PX = (1.0, 3.0, 5.0, 10.0)
POSE_AUC_DEG = (5.0, 10.0, 20.0)
# RANSAC threshold of the essential matrix, in pixels of the full-resolution K (1296 px wide): SuperGlue's
# 1 px at 640x480.
ESSENTIAL_THRESHOLD_PX = 2.0


def _identity(xy: np.ndarray) -> np.ndarray:
    return xy


def webcam_scores(extractor, webcam: Path, scenes=TEST_SCENES, images_per_scene: int = 10) -> dict:
    from .reference_desc import scene_images

    rep, prec = [], []
    for scene in scenes:
        images = scene_images(webcam, scene, images_per_scene)
        feats = [extractor(im.astype(np.float32)) for im in images]
        for a, b in itertools.combinations(range(len(images)), 2):
            s = score_pair(feats[a].keypoints, feats[a].descriptors, images[a].shape[:2], feats[b].keypoints,
                           feats[b].descriptors, images[b].shape[:2], _identity, _identity, threshold=5.0)
            rep.append(s.repeatability)
            prec.append(s.precision)
    return {"repeatability": float(np.mean(rep)), "precision_5px": float(np.mean(prec)), "pairs": len(rep)}


def read_scannet_pairs(root: Path) -> list[tuple[str, str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name0, name1, K0, K1, T_0to1) per line of pairs_with_gt.txt (SuperGlue's format)."""
    out = []
    for line in (root / "pairs_with_gt.txt").read_text().splitlines():
        v = line.split()
        if len(v) < 38:
            continue
        nums = np.array(v[4:], np.float64)
        out.append((v[0], v[1], nums[:9].reshape(3, 3), nums[9:18].reshape(3, 3), nums[18:34].reshape(4, 4)))
    return out


def symmetric_epipolar_px(xy0: np.ndarray, xy1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                          T_0to1: np.ndarray) -> np.ndarray:
    """Distance (pixels) of each point to the other's epipolar line, the larger of the two.

    Conventions (SuperGlue's pairs_with_gt.txt): ``T_0to1`` maps camera-0 coordinates to camera-1
    coordinates (X1 = R X0 + t, i.e. inv(T_world_cam1) @ T_world_cam0), so E = [t]x R and
    x1^T F x0 = 0 with F = K1^-T E K0^-1; K0, K1 are for the pixels xy0, xy1 are given in. These were
    checked against the ScanNet data (tests/test_feature_quality.py): hand-picked correspondences on
    two pairs lie 0.7-5.8 px from these epipolar lines, and 16-625 px with the pose inverted (same
    as F transposed) or R transposed. Low SIFT precision on these pairs is the pairs (wide baseline,
    31-172 degree rotations, blur), not the geometry.
    """
    from ..geometry.pose import skew

    t = np.asarray(T_0to1, np.float64)[:3, 3]
    if np.linalg.norm(t) < 1e-9:
        # No baseline: E = [t]x R = 0, every distance would come out 0 and every match "correct".
        raise ValueError("epipolar distance is undefined for a pair with no translation (T_0to1[:3, 3] = 0)")
    E = skew(t) @ T_0to1[:3, :3]
    F = np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)
    h0 = np.concatenate([xy0, np.ones((len(xy0), 1))], 1)
    h1 = np.concatenate([xy1, np.ones((len(xy1), 1))], 1)
    l1 = h0 @ F.T                    # lines in image 1
    l0 = h1 @ F                      # lines in image 0
    num = np.abs(np.sum(h1 * l1, axis=1))
    d1 = num / np.maximum(np.linalg.norm(l1[:, :2], axis=1), 1e-12)
    d0 = num / np.maximum(np.linalg.norm(l0[:, :2], axis=1), 1e-12)
    return np.maximum(d0, d1)


def _check_intrinsics(name: str, shape: tuple[int, ...], K: np.ndarray) -> None:
    """Refuse an image whose size does not fit its K (ScanNet's K is for the 1296x968 colour frames:
    an image resized, e.g. to SuperGlue's 640x480, without scaling K would put every epipolar line
    far off and read as near-chance precision)."""
    h, w = shape[:2]
    cx, cy = K[0, 2], K[1, 2]
    if not (0.3 * w < cx < 0.7 * w and 0.3 * h < cy < 0.7 * h):
        raise ValueError(f"{name}: principal point ({cx:g}, {cy:g}) is not near the centre of the {w}x{h} image; "
                         "K is for another resolution (scale K with the image)")


def relative_pose_error_deg(xy0: np.ndarray, xy1: np.ndarray, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray,
                            threshold_px: float = ESSENTIAL_THRESHOLD_PX) -> float:
    """max(rotation error, translation-direction error) in degrees of the relative pose estimated from
    matches xy0 <-> xy1 (an essential matrix by RANSAC, then the cheirality check; of several solutions
    the one with the most points in front); inf when there are fewer than 5 matches or no pose. The
    translation's sign is unobservable, so its error is at most 90 degrees."""
    import cv2

    from ..geometry.pose import rotation_angle_deg

    if len(xy0) < 5:
        return float("inf")
    n0 = (np.asarray(xy0, np.float64) - K0[:2, 2]) / np.diag(K0)[:2]
    n1 = (np.asarray(xy1, np.float64) - K1[:2, 2]) / np.diag(K1)[:2]
    focal = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(n0, n1, np.eye(3), method=cv2.RANSAC, prob=0.99999, threshold=threshold_px / focal)
    if E is None:
        return float("inf")
    best, pose = 0, None
    for e in np.split(E, len(E) // 3):
        count, R, t, _ = cv2.recoverPose(e, n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if count > best:
            best, pose = count, (R, t.ravel())
    if pose is None:
        return float("inf")
    R, t = pose
    t_gt = T_0to1[:3, 3]
    cos = float(np.dot(t, t_gt) / max(np.linalg.norm(t) * np.linalg.norm(t_gt), 1e-12))
    t_err = np.degrees(np.arccos(np.clip(abs(cos), 0.0, 1.0)))
    return float(max(rotation_angle_deg(R.T @ T_0to1[:3, :3]), t_err))


def pose_auc(errors: list[float], thresholds=POSE_AUC_DEG) -> dict[str, float]:
    """Area under the recall-vs-error curve up to each threshold, normalised to 1 (SuperGlue's pose AUC)."""
    e = np.sort(np.asarray(errors, np.float64))
    recall = np.arange(1, len(e) + 1) / max(len(e), 1)
    e, recall = np.r_[0.0, e], np.r_[0.0, recall]
    out = {}
    for t in thresholds:
        last = int(np.searchsorted(e, t))
        x, y = np.r_[e[:last], t], np.r_[recall[:last], recall[last - 1]]
        out[f"{t:g}deg"] = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) / t)
    return out


def top_k(f: Features, n: int) -> Features:
    """The ``n`` highest-scoring keypoints of ``f``."""
    keep = np.argsort(-f.scores, kind="stable")[:n]
    return Features(f.keypoints[keep], f.scales[keep], f.orientations[keep], f.scores[keep], f.descriptors[keep],
                    f.image_size, f.timings)


def _pair_figures(f0: Features, f1: Features, K0: np.ndarray, K1: np.ndarray, T: np.ndarray) -> dict:
    m = mutual_nearest_neighbours(f0.descriptors, f1.descriptors)
    err = symmetric_epipolar_px(f0.keypoints[m[:, 0]].astype(np.float64), f1.keypoints[m[:, 1]].astype(np.float64),
                                K0, K1, T) if len(m) else np.zeros(0)
    correct = float((err < 5.0).sum())
    pose = relative_pose_error_deg(f0.keypoints[m[:, 0]], f1.keypoints[m[:, 1]], K0, K1, T) if len(m) else float("inf")
    return {"precision": {t: float((err < t).mean()) if len(m) else 0.0 for t in EPIPOLAR_PX},
            "correct_5px": correct, "keypoints": min(len(f0), len(f1)),
            "matching_score_5px": correct / max(min(len(f0), len(f1)), 1), "pose_error_deg": pose}


def _summary(rows: list[dict]) -> dict:
    precision = {f"{t:g}px": float(np.mean([r["precision"][t] for r in rows])) for t in EPIPOLAR_PX}
    return {"precision": precision, "mma": float(np.mean(list(precision.values()))),
            **{k: float(np.mean([r[k] for r in rows])) for k in ("matching_score_5px", "correct_5px", "keypoints")},
            "pose_auc": pose_auc([r["pose_error_deg"] for r in rows]),
            "pose_errors_deg": [round(r["pose_error_deg"], 2) for r in rows]}


def scannet_scores(extractors: dict, root: Path) -> dict:
    """Epipolar matching figures per extractor on the ScanNet pairs.

    The matching score divides correct matches by keypoints, so an extractor that returns more
    keypoints is scored against a larger denominator: the headline figures compare every extractor
    at the same count, each image's keypoints cut (by score) to the fewest any extractor found there.
    ``at_budget`` keeps each extractor's own counts.
    """
    pairs = read_scannet_pairs(root)
    rows: dict[str, list[dict]] = {name: [] for name in extractors}
    own: dict[str, list[dict]] = {name: [] for name in extractors}
    for name0, name1, K0, K1, T in pairs:
        g0, g1 = read_image(root / "images" / name0), read_image(root / "images" / name1)
        for name, g, K in ((name0, g0, K0), (name1, g1, K1)):
            _check_intrinsics(name, g.shape, K)
        feats = {name: (ex(g0), ex(g1)) for name, ex in extractors.items()}
        n0, n1 = (min(len(f[i]) for f in feats.values()) for i in (0, 1))
        for name, (f0, f1) in feats.items():
            own[name].append(_pair_figures(f0, f1, K0, K1, T))
            rows[name].append(_pair_figures(top_k(f0, n0), top_k(f1, n1), K0, K1, T))
    return {name: {**_summary(rows[name]), "at_budget": _summary(own[name]), "pairs": len(pairs)}
            for name in extractors}


def desc_vs_reference(webcam: Path, reference: Path, desc_weights: str | None, scenes=TEST_SCENES,
                      images_per_scene: int = 10, keypoints: int = 500) -> dict:
    """Same-keypoint NN accuracy of our DESC and the reference DESC on identical patches."""
    from ..nets.desc import load_reference
    from ..features.sift import sift_keypoints
    from ..weights import load_network
    from .reference_desc import nn_accuracy, patches_at, scene_images

    ref, ref_mean, ref_std = load_reference(reference)
    ours = load_network("desc", desc_weights)
    acc: dict[str, list[float]] = {"ours": [], "reference": []}
    for scene in scenes:
        images = scene_images(webcam, scene, images_per_scene)
        xy, size, angle, _ = sift_keypoints(images[0], keypoints)
        with torch.inference_mode():
            per_image = [(ours.module((p - ours.mean) / ours.std).numpy(), ref((p - ref_mean) / ref_std).numpy())
                         for p in (patches_at(im, xy, size, angle) for im in images)]
        for a, b in itertools.combinations(range(len(images)), 2):
            acc["ours"].append(nn_accuracy(per_image[a][0], per_image[b][0]))
            acc["reference"].append(nn_accuracy(per_image[a][1], per_image[b][1]))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def run(args: argparse.Namespace) -> int:
    data = args.data
    webcam, scannet, reference = data / "raw" / "webcam", data / "raw" / "scannet_pairs", data / "reference" / \
        "lift_desc_picc_cnn3.h5"
    if not webcam.exists():
        print(f"error: {webcam} is absent; evaluate-features needs ../shared/data (or --data)")
        return 2
    weights = args.weights   # the command's --det/--ori/--desc (commands.network_weights)
    upright, preset = args.upright, args.preset

    def extractors(**conf) -> dict:
        lift = apply_preset({"max_keypoints": args.keypoints, "weights": weights, "upright": upright, **conf}, preset)
        return {"lift": make_extractor("lift", lift), "sift": make_extractor("sift", {"max_keypoints": args.keypoints,
                                                                                     **conf})}

    result: dict = {"weights": weights or "shipped", "keypoints": args.keypoints, "upright": upright, "preset": preset}
    for name, ex in extractors().items():
        w = result.setdefault(name, {})["webcam"] = webcam_scores(ex, webcam, images_per_scene=args.images_per_scene)
        print(f"[{name}] webcam {TEST_SCENES}: repeatability {w['repeatability']:.3f}, "
              f"precision@5px {w['precision_5px']:.3f} ({w['pairs']} pairs)", flush=True)
    rep = result["lift"]["webcam"]["repeatability"] / max(result["sift"]["webcam"]["repeatability"], 1e-9)
    print(f"LIFT / SIFT repeatability: {rep:.2f}× (goal ≥ 1.5×)")
    if scannet.exists():
        result["scannet_resize_max"] = args.scannet_resize_max
        for name, r in scannet_scores(extractors(resize_max=args.scannet_resize_max), scannet).items():
            result[name]["scannet"] = r
            print(f"[{name}] scannet ({r['pairs']} pairs, longer side {args.scannet_resize_max} px), at equal keypoint "
                  f"counts ({r['keypoints']:.0f} per image): matching score {r['matching_score_5px']:.4f} "
                  f"({r['correct_5px']:.1f} correct matches per pair), MMA {r['mma']:.3f}, precision "
                  + " ".join(f"{k} {v:.3f}" for k, v in r["precision"].items())
                  + "; pose AUC " + " / ".join(f"{v:.3f}" for v in r["pose_auc"].values()) + " at 5 / 10 / 20°"
                  + f"; own budget ({r['at_budget']['keypoints']:.0f} keypoints): matching score "
                  f"{r['at_budget']['matching_score_5px']:.4f}, MMA {r['at_budget']['mma']:.3f}, pose AUC "
                  + " / ".join(f"{v:.3f}" for v in r["at_budget"]["pose_auc"].values()), flush=True)
    if reference.exists():
        result["desc_vs_reference"] = desc_vs_reference(webcam, reference, args.desc, images_per_scene=args.images_per_scene)
        r = result["desc_vs_reference"]
        print(f"DESC at the same SIFT keypoints, NN accuracy: ours {r['ours']:.3f}, released LIFT DESC {r['reference']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0
