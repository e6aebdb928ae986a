"""Fixed-camera scenes: images registered to a reference by a translation, keypoints re-detected at
the same place under other light are the same point (as TILDE used)."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..features.sift import sift_detect
from .options import DataError, log_to_stderr
from .scenes import Scene, list_images, wrap


def webcam_sift(gray: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SIFT of a webcam image at true positions (precise upscale: the same pixel in every image is
    the same point, so no offset may be left): xy (N, 2), sigma = size / 2, angle, descriptors."""
    xy, size, angle, _, desc = sift_detect(gray, n, precise_upscale=True)
    return xy.astype(np.float64), size.astype(np.float64) / 2, wrap(angle), desc


def register_translation(desc_ref, xy_ref, desc, xy, min_inliers: int) -> np.ndarray | None:
    """Translation t with x_image = x_ref + t from SIFT matches (fixed cameras shift by a pixel or two
    between days), or None where too few matches agree."""
    if len(desc_ref) < 2 or len(desc) < 2:
        return None
    pairs = cv2.BFMatcher().knnMatch(desc_ref, desc, k=2)
    good = [m for m, *rest in pairs if rest and m.distance < 0.8 * rest[0].distance]
    if len(good) < min_inliers:
        return None
    d = np.array([xy[m.trainIdx] - xy_ref[m.queryIdx] for m in good])
    # Robust translation: the median of displacements within 3 px of the median, twice.
    t = np.median(d, axis=0)
    for _ in range(2):
        inl = np.linalg.norm(d - t, axis=1) < 3.0
        if inl.sum() < min_inliers:
            return None
        t = np.median(d[inl], axis=0)
    return t


def load_webcam(name: str, folder: Path, conf: dict, log=log_to_stderr) -> Scene:
    """A fixed-camera scene: SIFT on every (distinct) image, images registered to a reference by a
    translation, and keypoints re-detected at the same place in ≥ min_repeats other images kept."""
    wc = conf["webcam"]
    paths = list_images(folder)
    grays, names, seen = [], [], {}
    for p in paths:
        from ..images import read_image

        g = read_image(p)
        digest = hashlib.md5(g.tobytes()).hexdigest()
        if digest in seen:   # the EPFL webcam sets hold some pixel-identical copies under other dates
            log(f"note: {name}: {p.name} is a copy of {seen[digest]}, left out")
            continue
        seen[digest] = p.name
        grays.append(g)
        names.append(p.name)
    if len(grays) < 2:
        raise DataError(f"{folder}: {len(grays)} distinct image(s), need at least 2")
    shapes = {g.shape for g in grays}
    if len(shapes) != 1:
        raise DataError(f"{folder}: images of different sizes {sorted(shapes)}; not a fixed camera")
    feats = [webcam_sift(g, conf["max_keypoints"]) for g in tqdm(grays, desc=f"{name}: sift", unit="img",
                                                                 file=sys.stderr, disable=None)]
    ref = int(np.argmax([len(f[0]) for f in feats]))
    offsets = {ref: np.zeros(2)}
    # Register to the reference, else to any image already registered (night to dusk to day).
    pending = [i for i in range(len(feats)) if i != ref]
    while pending:
        progress = False
        for i in list(pending):
            for j in sorted(offsets, key=lambda j: j != ref):
                t = register_translation(feats[j][3], feats[j][0], feats[i][3], feats[i][0], wc["min_register_inliers"])
                if t is not None:
                    offsets[i] = offsets[j] + t
                    pending.remove(i)
                    progress = True
                    break
        if not progress:
            break
    for i in pending:
        log(f"note: {name}: {names[i]} could not be registered to the other images, left out")
    keep = sorted(offsets)
    offsets = np.array([offsets[i] for i in keep])
    grays = [grays[i] for i in keep]
    feats = [feats[i] for i in keep]
    names = [names[i] for i in keep]
    h, w = grays[0].shape
    # Occupancy in reference pixels: is there a keypoint within repeat_px?
    r = float(wc["repeat_px"])
    masks = np.zeros((len(grays), h, w), bool)
    for i, (xy, *_rest) in enumerate(feats):
        m = np.zeros((h, w), np.uint8)
        for x, y in xy - offsets[i]:
            cv2.circle(m, (int(round(x * 16)), int(round(y * 16))), int(round(r * 16)), 1, -1, cv2.LINE_8, 4)
        masks[i] = m > 0
    scene = Scene(name, "webcam", names, [], [], [], [], [], [(w, h)] * len(grays), offsets=offsets, redetected=[])
    next_id = 0
    for i, (xy, sigma, angle, _) in enumerate(feats):
        g = grays[i]
        scene.loaders.append(lambda g=g: g)
        ref_xy = xy - offsets[i]
        c = np.clip(np.round(ref_xy).astype(int), 0, [w - 1, h - 1])
        again = masks[:, c[:, 1], c[:, 0]].T.copy()       # (n_kp, n_images)
        again[:, i] = False
        stable = again.sum(1) >= wc["min_repeats"]
        pid = np.full(len(xy), -1, np.int64)
        pid[stable] = np.arange(next_id, next_id + stable.sum())
        next_id += int(stable.sum())
        scene.keypoints.append(xy)
        scene.sigmas.append(sigma)
        scene.angles.append(angle)
        scene.point_ids.append(pid)
        scene.redetected.append(again)
    return scene
