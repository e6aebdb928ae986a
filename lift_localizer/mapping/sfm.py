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
    models = incremental_sfm([f.name for f in usable], cams, [ft.keypoints for ft in feats], matches,
                             known_intrinsics=known_intrinsics)
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


def incremental_sfm(names: list[str], cams: list[Camera], keypoints: list[np.ndarray],
                    matches: dict[tuple[int, int], np.ndarray], known_intrinsics: bool = False,
                    seed: int | None = None, simple_radial: bool = False) -> dict:
    """pycolmap's incremental mapper on our keypoints and matches: its models ({} where it registered
    nothing). ``known_intrinsics``: the cameras stay fixed, else their focal lengths and distortion are
    refined. ``seed``: seeded and single-threaded, so the same seed gives the same models.
    ``simple_radial``: one focal length and one radial term per camera (SIMPLE_RADIAL) instead of the
    guessed PINHOLE camera."""
    import pycolmap

    if seed is not None:
        pycolmap.set_random_seed(seed)
    with tempfile.TemporaryDirectory(prefix="lift-sfm-") as tmp:
        work = Path(tmp)
        db = work / "database.db"
        write_database(db, names, cams, None, keypoints, matches, verified=False, calibrated=known_intrinsics)
        if simple_radial:
            _to_simple_radial(db)
        (work / "pairs.txt").write_text("".join(f"{names[i]} {names[j]}\n" for i, j in matches))
        if seed is None:
            pycolmap.verify_matches(str(db), str(work / "pairs.txt"))
        else:
            verify = pycolmap.TwoViewGeometryOptions()
            verify.ransac.random_seed = seed
            pycolmap.verify_matches(str(db), str(work / "pairs.txt"), verify)
        options = pycolmap.IncrementalPipelineOptions()
        options.extract_colors = False
        if seed is not None:
            options.random_seed = seed
            options.num_threads = 1
            options.mapper.random_seed = seed
            options.mapper.num_threads = 1
        options.ba_refine_focal_length = not known_intrinsics
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = not known_intrinsics
        (work / "sfm").mkdir()
        return pycolmap.incremental_mapping(str(db), str(work), str(work / "sfm"), options)


def _to_simple_radial(db: Path) -> None:
    # PINHOLE's two refined focal lengths drift apart on collections of a few photos (fx < 0 seen on
    # phototourism); SIMPLE_RADIAL has one, and one radial term.
    import pycolmap

    database = pycolmap.Database.open(str(db))
    try:
        for cam in database.read_all_cameras():
            f0, _, cx, cy = cam.params
            database.update_camera(pycolmap.Camera(model="SIMPLE_RADIAL", width=cam.width, height=cam.height,
                                                   params=[f0, cx, cy, 0.0], camera_id=cam.camera_id))
    finally:
        database.close()


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
