"""DESC against the descriptor network released with LIFT, on real image pairs.

    python tools/reference_desc.py [--data ../shared/data] [--images-per-scene 10]

Uses the EPFL Webcam scenes (fixed cameras across days and seasons: the same pixel is the same
point in every image). Every descriptor is computed at the same OpenCV SIFT keypoints, with
patches cut by this project's spatial transformer (support 6× the keypoint size, rotated by the
SIFT angle), so only the descriptor differs. Two protocols:

- same keypoints: keypoints of the first image used in every image; nearest-neighbour accuracy
  (is the descriptor of the same keypoint the nearest one in the other image?);
- detected keypoints (as the reference's README measured): keypoints detected in each image,
  mutual nearest neighbours, correct when within 5 px.

The reference weights are academic-licence: read here, never shipped, never used at run time.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ..nets.desc import DESC
from ..images import read_image
from ..features.patches import PatchSampler
from ..nets.scale_space import SUPPORT_PER_SCALE
from ..features.sift import sift_keypoints
from ..features.matching import mutual_nearest_neighbours

REFERENCE = Path("reference") / "lift_desc_picc_cnn3.h5"
SUPPORT_PER_SIZE = SUPPORT_PER_SCALE / 2  # OpenCV size is 2 sigma: support 6x size


def patches_at(gray: np.ndarray, xy: np.ndarray, size: np.ndarray, angle: np.ndarray) -> torch.Tensor:
    """(N, 1, 64, 64) patches in grey levels."""
    sampler = PatchSampler(torch.from_numpy(gray)[None, None])
    return sampler(torch.from_numpy(xy), torch.from_numpy(size) * SUPPORT_PER_SIZE, torch.from_numpy(angle))


def descriptors(patches: torch.Tensor, net: DESC, mean: float, std: float) -> dict[str, np.ndarray]:
    """The reference DESC beside two raw-patch baselines.

    'raw': the patch normalised as DESC's input ((p - mean) / std), compared with L2;
    'ncc': each patch made zero-mean and unit-norm (normalised cross-correlation).
    """
    with torch.inference_mode():
        lift = net((patches - mean) / std).numpy()
    raw = ((patches - mean) / std).flatten(1).numpy()
    ncc = raw - raw.mean(axis=1, keepdims=True)
    ncc /= np.linalg.norm(ncc, axis=1, keepdims=True) + 1e-8
    return {"lift_reference": lift, "raw": raw, "ncc": ncc}


def nn_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows of ``a`` whose nearest row of ``b`` (L2) is the row with the same index."""
    d = torch.cdist(torch.from_numpy(a)[None], torch.from_numpy(b)[None])[0]
    return float((d.argmin(dim=1) == torch.arange(len(a))).float().mean())


def scene_images(webcam: Path, scene: str, count: int) -> list[np.ndarray]:
    files = sorted((webcam / scene).glob("*.png"))
    step = max(1, len(files) // count)
    return [read_image(f) for f in files[::step][:count]]


def same_keypoint_accuracy(images: list[np.ndarray], net: DESC, mean: float, std: float,
                           keypoints: int = 500) -> dict[str, float]:
    """Mean NN accuracy over all image pairs of one fixed-camera scene, at image 0's keypoints."""
    xy, size, angle, _ = sift_keypoints(images[0], keypoints)
    per_image = [descriptors(patches_at(im, xy, size, angle), net, mean, std) for im in images]
    scores: dict[str, list[float]] = {}
    for a, b in itertools.combinations(range(len(images)), 2):
        for name in per_image[a]:
            scores.setdefault(name, []).append(nn_accuracy(per_image[a][name], per_image[b][name]))
    return {k: float(np.mean(v)) for k, v in scores.items()}


def detected_keypoint_matching(images: list[np.ndarray], net: DESC, mean: float, std: float,
                               keypoints: int = 1000, threshold: float = 5.0) -> dict[str, tuple[int, int, int]]:
    """(correct, matches, pairs) per descriptor over all image pairs, mutual NN, keypoints per image."""
    feats = []
    for im in images:
        xy, size, angle, sift = sift_keypoints(im, keypoints)
        feats.append((xy, {**descriptors(patches_at(im, xy, size, angle), net, mean, std), "sift": sift}))
    totals: dict[str, list[int]] = {}
    for a, b in itertools.combinations(range(len(images)), 2):
        for name in feats[a][1]:
            m = mutual_nearest_neighbours(feats[a][1][name], feats[b][1][name])
            err = np.linalg.norm(feats[a][0][m[:, 0]] - feats[b][0][m[:, 1]], axis=1)
            t = totals.setdefault(name, [0, 0, 0])
            t[0] += int((err < threshold).sum())
            t[1] += len(m)
            t[2] += 1
    return {k: (v[0], v[1], v[2]) for k, v in totals.items()}
