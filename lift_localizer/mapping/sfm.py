"""Poses for images that have none: pycolmap's incremental mapper on our own features.

The recovered poses then go through the same map building as known poses. The scale (and the
map frame) of such a map is arbitrary: whatever the first image pair's reconstruction chose.
"""
from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..features.extractors import make_extractor
from ..images import ImageError, to_gray
from ..geometry.camera import Camera
from ..geometry.pose import invert
from ..geometry.triangulate import quiet_colmap, write_database
from ..features.matching import mutual_nearest_neighbours
from .frames import Frame

EXHAUSTIVE_UP_TO = 40      # images; beyond, each image is matched with its SEQUENTIAL_WINDOW successors
SEQUENTIAL_WINDOW = 10


class SfmError(ValueError):
    """Structure-from-motion could not register the images."""


def guess_camera(width: int, height: int) -> Camera:
    # A 1.2 × image-size focal length (≈ 45° field of view), refined by bundle adjustment.
    f = 1.2 * max(width, height)
    return Camera(width, height, np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]]))


def poses_from_sfm(frames: list[Frame], features: str = "lift", conf: dict | None = None, ratio: float = 0.9,
                   log=print) -> list[Frame]:
    """The frames with T_map_camera from SfM (None where an image could not be registered).
    Frames with a camera keep its intrinsics fixed; others get refined guessed intrinsics."""
    import pycolmap

    quiet_colmap()
    extractor = make_extractor(features, conf)
    usable, feats, cams = [], [], []
    for f in tqdm(frames, desc="sfm: extract", unit="img", file=sys.stderr, disable=None):
        try:
            gray = to_gray(f.image())
        except ImageError as e:
            log(f"warning: skipped {f.name}: {e}")
            continue
        usable.append(f)
        feats.append(extractor(gray))
        cams.append(f.camera or guess_camera(gray.shape[1], gray.shape[0]))
    n = len(usable)
    known_intrinsics = all(f.camera is not None for f in usable)
    if n < 2:
        raise SfmError(f"need at least 2 readable images for SfM, have {n}")
    pairs = list(combinations(range(n), 2)) if n <= EXHAUSTIVE_UP_TO else \
        [(i, j) for i in range(n) for j in range(i + 1, min(n, i + 1 + SEQUENTIAL_WINDOW))]
    matches = {}
    for i, j in tqdm(pairs, desc="sfm: match", unit="pair", file=sys.stderr, disable=None):
        m = mutual_nearest_neighbours(feats[i].descriptors, feats[j].descriptors, ratio)
        if len(m):
            matches[(i, j)] = m
    with tempfile.TemporaryDirectory(prefix="lift-sfm-") as tmp:
        work = Path(tmp)
        db = work / "database.db"
        write_database(db, [f.name for f in usable], cams, None, [ft.keypoints for ft in feats], matches,
                       verified=False, calibrated=known_intrinsics)
        (work / "pairs.txt").write_text("".join(f"{usable[i].name} {usable[j].name}\n" for i, j in matches))
        pycolmap.verify_matches(str(db), str(work / "pairs.txt"))
        options = pycolmap.IncrementalPipelineOptions()
        options.extract_colors = False
        options.ba_refine_focal_length = not known_intrinsics
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = not known_intrinsics
        (work / "sfm").mkdir()
        models = pycolmap.incremental_mapping(str(db), str(work), str(work / "sfm"), options)
    if not models:
        raise SfmError(f"SfM registered no images ({len(matches)} matched pairs of {n} images)")
    rec = max(models.values(), key=lambda r: r.num_reg_images())
    log(f"sfm: registered {rec.num_reg_images()}/{n} images, {rec.num_points3D()} points "
        f"(the map's scale is arbitrary)")
    by_name = {im.name: im for im in rec.images.values() if im.has_pose}
    out = []
    for f, cam in zip(usable, cams):
        im = by_name.get(f.name)
        if im is None:
            out.append(replace(f, T_map_camera=None, camera=f.camera or cam))
            continue
        if not known_intrinsics:
            p = rec.cameras[im.camera_id]
            cam = Camera(cam.width, cam.height, p.calibration_matrix(), _radial(p))
        out.append(replace(f, T_map_camera=invert(im.cam_from_world().matrix()), camera=cam))
    return out


def _radial(camera) -> np.ndarray:
    """OpenCV coefficients of a pycolmap camera's distortion (the guessed camera is PINHOLE: none)."""
    params = np.asarray(camera.params)
    name = camera.model.name
    if name in ("SIMPLE_RADIAL", "RADIAL"):
        k = params[3:]
        return np.array([k[0], k[1] if len(k) > 1 else 0.0, 0.0, 0.0])
    if name in ("OPENCV", "FULL_OPENCV"):
        return params[4:]
    return np.zeros(0)
