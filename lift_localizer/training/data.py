"""LIFT's training data: quadruplets of patches (Yi et al., ECCV 2016, §4).

P1 and P2 show the same 3D point in two images, P3 a different point, P4 a place with no keypoint.
The points are SIFT keypoints that survived structure from motion (posed bags: the project's map
builder with the known poses; photo collections: pycolmap's incremental SfM on the project's SIFT),
keypoints of fixed webcams that are re-detected under many illuminations (the same pixel is the
same 3D point, as TILDE used), and keypoints moved by random homographies with photometric changes.

    python -m lift_localizer.training.data --output DATA.h5 [--max-per-source N] [--sources ...]
    summary = build_dataset("DATA.h5", {"max_per_source": 2000})

DATA.h5 (one row per quadruplet, rows of all sources shuffled together):
    p1 p2 p3 p4        (N, 128, 128) uint8 upright grey patches centred on the keypoint (patch pixel
                       (63.5, 63.5)), 2 × the descriptor support wide (support = SUPPORT_PER_SCALE ×
                       sigma, sigma = OpenCV size / 2): the central 64×64 is exactly the upright patch
                       inference samples (PatchSampler, 64 pixels over the support)
    angle1 angle2 angle3  (N,) float32 radians: the SIFT orientation in crop_patches' convention
                       (direction of the patch x axis in the image, x right, y down); P4 is upright
    source             (N,) int16 index into attrs["sources"]
    attrs: sources (JSON list like "sfm:sacre_coeur", "webcam:mexico", "homography:llff_fern"),
    split (JSON: split file and section), created (JSON: parameters, counts, time), patch_size 128.

Which sets may be trained on is read from splits.json, section "lift"; test sets are refused.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import h5py
import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..features.extractors import processed_size
from ..features.patches import PatchSampler
from ..features.sift import sift_detect, true_positions
from ..nets.scale_space import SUPPORT_PER_SCALE

PATCH_SIZE = 128
INFERENCE_PATCH = 64           # PatchSampler size at inference (Lift conf patch_size)
SUPPORT_MULTIPLE = 2.0         # the stored patch covers this × the descriptor support
SPLITS_FILE = Path(__file__).with_name("splits.json")
SPLIT_SECTION = "lift"
DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")
KINDS = ("sfm", "webcam", "homography")
WRITE_BLOCK = 4096             # rows gathered in memory per write

default_conf = {
    "data_root": str(DATA_ROOT),
    "split_file": str(SPLITS_FILE),
    "split": SPLIT_SECTION,
    "sources": None,                 # None: all; else names ("sfm:fox"), kinds ("webcam") or sets ("fox")
    # A user's own data for fine-tuning, instead of the split's sets: [("bag" | "collection" | "webcam",
    # path), ...] — a posed rosbag2, a folder of photos of one place, a folder of one fixed camera.
    "user_sets": [],
    "max_per_source": 2500,          # quadruplets per source at most
    "homography_share": 0.5,         # homography sources get this × max_per_source
    "seed": 0,
    "max_keypoints": 2000,           # SIFT keypoints per image (maps, webcams, P4's keypoint-free test)
    "max_reprojection_px": 2.0,      # SfM observations farther than this from their point's projection are dropped
    "collection_max_keypoints": 8000,  # unposed photo collections: more keypoints, many more SfM points
    "sfm_attempts": 3,               # … incremental SfM seeds tried until every image is registered
    "sfm_ratio": 0.9,                # unposed collections: mutual nearest neighbours with this ratio test
    "max_pairs_per_point": 6,        # P1/P2 image pairs drawn per 3D point (spread: every point's first before any second)
    # Patch centres at least this × sigma from the image border: the rotated support stays inside,
    # as LIFT's detector keeps its keypoints (keypoints.py, border_ratio).
    "border_sigmas": SUPPORT_PER_SCALE / 2 * math.sqrt(2),
    "min_separation_sigmas": 2.0,    # P3 and P4 at least this × max(sigma, sigma_keypoint) from P1's point / every keypoint
    "webcam": {
        "repeat_px": 2.0,            # a keypoint re-detected within this in another image (after registration)
        "min_repeats": 4,            # … in at least this many other images is a stable point
        "min_register_inliers": 15,  # images that cannot be registered to the scene's reference are dropped
    },
    "homography": {
        "rotation_deg": 180.0,       # in-plane rotation uniform in ±this
        "scale": [0.6, 1.6],         # log-uniform
        "aspect": 0.15,              # anisotropy exp(±this)
        "perspective": 0.2,          # projective terms in image-half units
        "translation": 0.15,         # × image size
        "gamma": [0.6, 1.7],         # log-uniform
        "contrast": [0.7, 1.3],
        "brightness": 20.0,          # grey levels ±
        "blur": [0.0, 1.5],          # Gaussian sigma (pixels), half of the views
        "noise": [0.0, 6.0],         # Gaussian noise sigma (grey levels)
        "points_per_warp": 40,
    },
    "compression": "lzf",            # HDF5 filter of the patch datasets: lzf, gzip or none
    "threads": None,                 # torch threads for cropping (None: leave as is)
}


class DataError(ValueError):
    """No training data can be built; the message says what is missing."""


def _log(message: str) -> None:
    print(message, file=sys.stderr)


# ----------------------------------------------------------------------------------------------------
# Conventions


def wrap(angle) -> np.ndarray:
    """Angles (radians) wrapped to [-π, π), in float64."""
    return (np.asarray(angle, np.float64) + np.pi) % (2 * np.pi) - np.pi


def unbias_extractor_keypoints(xy: np.ndarray, size: tuple[int, int], extractor_conf: dict) -> np.ndarray:
    """Keypoints of the project's SIFT extractor (features.extractors) at their true positions: the
    upscale offset is in pixels of the image SIFT ran on (shrunk to resize_max where larger)."""
    w, h = size
    hs, ws = processed_size(h, w, extractor_conf.get("resize_max"))
    return true_positions(xy, (w / ws, h / hs))


def support(sigma) -> np.ndarray:
    """Descriptor support (full width, pixels) of keypoints of scale sigma (= OpenCV size / 2)."""
    return SUPPORT_PER_SCALE * np.asarray(sigma, np.float64)


def crop(gray: np.ndarray, xy: np.ndarray, sigma: np.ndarray, sampler: PatchSampler | None = None) -> np.ndarray:
    """(N, 128, 128) uint8 upright patches of 2 × the support, cut exactly as inference cuts its patches.

    The sampler's octaves are those of PatchSampler(image, 64) at inference; with 128 pixels over twice
    the support the pixel spacing, the octave chosen and the sample positions of the central 64×64
    are those of the inference patch.
    """
    if len(xy) == 0:
        return np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8)
    if sampler is None:
        sampler = inference_sampler(gray)
    with torch.no_grad():
        p = sampler(torch.as_tensor(np.asarray(xy, np.float32)).reshape(-1, 2),
                    torch.as_tensor(SUPPORT_MULTIPLE * support(sigma), dtype=torch.float32).reshape(-1))
    return p[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def inference_sampler(gray: np.ndarray) -> PatchSampler:
    sampler = PatchSampler(torch.from_numpy(np.ascontiguousarray(gray, np.float32))[None, None], INFERENCE_PATCH)
    sampler.size = PATCH_SIZE
    return sampler


# ----------------------------------------------------------------------------------------------------
# Scenes: images with their SIFT keypoints and which of them are the same point


@dataclass
class Scene:
    """Images of one set with SIFT keypoints (xy, sigma = size / 2, angle in our convention) and a
    point id per keypoint (−1: none): SfM 3D point ids, or, for webcams, ids of stable pixels."""

    name: str
    kind: str                                   # "sfm" or "webcam"
    names: list[str]
    loaders: list[Callable[[], np.ndarray]]     # → grey float32 (H, W) in [0, 255]
    keypoints: list[np.ndarray]
    sigmas: list[np.ndarray]
    angles: list[np.ndarray]
    point_ids: list[np.ndarray]
    sizes: list[tuple[int, int]]                # (width, height)
    points: dict[int, np.ndarray] = field(default_factory=dict)       # SfM: id → xyz
    cameras: list = field(default_factory=list)                       # SfM: Camera per image
    poses: list = field(default_factory=list)                         # SfM: T_map_camera per image
    offsets: np.ndarray | None = None           # webcam: (n, 2) image i pixel = reference pixel + offsets[i]
    redetected: list[np.ndarray] | None = None  # webcam: (n_kp, n_images) bool per image
    _cache: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def gray(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = self.loaders[i]()
        return self._cache[i]

    def drop_images(self) -> None:
        self._cache.clear()


def _to_gray_f32(image: np.ndarray) -> np.ndarray:
    from ..images import to_gray

    return to_gray(image)


def _file_loader(path: Path) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from ..images import read_image

        return read_image(path)
    return load


def _frame_loader(frame) -> Callable[[], np.ndarray]:
    return lambda: _to_gray_f32(frame.image())


def scene_from_frames(name: str, frames: list, conf: dict | None = None, log=_log) -> Scene:
    """The SIFT map of posed ``frames`` built by the project's map builder (build-map --features sift),
    with observations farther than max_reprojection_px from their point's projection dropped."""
    from ..mapping.build import build_map
    from ..mapping.io import load_map

    conf = merge_options(default_conf, conf or {})
    with tempfile.TemporaryDirectory(prefix="lift-data-") as tmp:
        build_map(frames, Path(tmp) / "map", ("sift",), {"max_keypoints": conf["max_keypoints"]}, source=name, log=log)
        m = load_map(Path(tmp) / "map")
    by_name = {f.name: f for f in frames}
    xyz = dict(zip(m.point_ids.tolist(), m.xyz))
    scene = Scene(name, "sfm", [], [], [], [], [], [], [], points=xyz)
    for im in m.images:
        f = im.features
        pid = im.point3D_ids.copy()
        has = pid >= 0
        if has.any():
            err = reprojection_errors(im.camera, im.T_map_camera, m.points_xyz(pid[has]), f.keypoints[has])
            pid[np.flatnonzero(has)[err > conf["max_reprojection_px"]]] = -1
        scene.names.append(im.name)
        scene.loaders.append(_frame_loader(by_name[im.name]))
        scene.keypoints.append(unbias_extractor_keypoints(np.asarray(f.keypoints, np.float64),
                                                          (im.camera.width, im.camera.height), m.meta["features"]))
        scene.sigmas.append(np.asarray(f.scales, np.float64) / 2)
        scene.angles.append(wrap(f.orientations))
        scene.point_ids.append(pid)
        scene.sizes.append((im.camera.width, im.camera.height))
        scene.cameras.append(im.camera)
        scene.poses.append(im.T_map_camera)
    return scene


def reprojection_errors(camera, T_map_camera: np.ndarray, xyz: np.ndarray, xy: np.ndarray) -> np.ndarray:
    T = np.linalg.inv(T_map_camera)
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    proj, _ = cv2.projectPoints(np.asarray(xyz, np.float64).reshape(-1, 1, 3), rvec, T[:3, 3], camera.K,
                                camera.dist if camera.has_distortion else None)
    return np.linalg.norm(proj.reshape(-1, 2) - xy, axis=1)


def merge_scenes(name: str, scenes: list[Scene]) -> Scene:
    """One scene of several SfM models (e.g. landmarks): point ids kept apart."""
    out = Scene(name, "sfm", [], [], [], [], [], [], [])
    offset = 0
    for s in scenes:
        out.names += s.names
        out.loaders += s.loaders
        out.keypoints += s.keypoints
        out.sigmas += s.sigmas
        out.angles += s.angles
        out.point_ids += [np.where(p >= 0, p + offset, -1) for p in s.point_ids]
        out.sizes += s.sizes
        out.cameras += s.cameras
        out.poses += s.poses
        out.points.update({k + offset: v for k, v in s.points.items()})
        offset += 1 + max(s.points, default=0)
    return out


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def collection_groups(paths: list[Path]) -> dict[str, list[Path]]:
    """Photo-tourism names are ``<landmark>_<id>_<id>``: one SfM per landmark (others: one group)."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        parts = p.stem.rsplit("_", 2)
        groups.setdefault(parts[0] if len(parts) == 3 else "", []).append(p)
    return groups


def load_collection(name: str, folder: Path, conf: dict, log=_log) -> Scene:
    """An unposed photo collection: incremental SfM (pycolmap) on the project's SIFT, one model per
    landmark; the model's own tracks are the points."""
    paths = list_images(folder)
    if len(paths) < 2:
        raise DataError(f"{folder}: {len(paths)} image(s), need at least 2")
    scenes = []
    for group, members in collection_groups(paths).items():
        label = f"{name}/{group}" if group else name
        if len(members) < 2:
            log(f"note: {label}: a single image, no SfM")
            continue
        try:
            scenes.append(sfm_scene(label, members, conf, log))
        except DataError as e:
            log(f"warning: {label}: {e}")
    if not scenes:
        raise DataError(f"{folder}: SfM registered no image pair")
    return merge_scenes(name, scenes)


def sfm_scene(name: str, paths: list[Path], conf: dict, log=_log) -> Scene:
    """pycolmap's incremental mapper on SIFT keypoints of ``paths`` (guessed, refined intrinsics),
    as mapping/sfm.py runs it, keeping the reconstruction: its 3D points and their tracks."""
    from ..features.extractors import make_extractor
    from ..images import read_image
    from ..geometry.camera import Camera
    from ..geometry.pose import invert
    from ..geometry.triangulate import quiet_colmap
    from ..features.matching import mutual_nearest_neighbours
    from ..mapping.sfm import _radial, guess_camera

    quiet_colmap()
    extractor = make_extractor("sift", {"max_keypoints": conf["collection_max_keypoints"]})
    feats, cams = [], []
    for p in tqdm(paths, desc=f"{name}: sift", unit="img", file=sys.stderr, disable=None, leave=False):
        g = read_image(p)
        feats.append(extractor(g))
        cams.append(guess_camera(g.shape[1], g.shape[0]))
    names = [p.name for p in paths]
    matches = {}
    for i in range(len(paths)):
        for j in range(i + 1, len(paths)):
            m = mutual_nearest_neighbours(feats[i].descriptors, feats[j].descriptors, conf["sfm_ratio"])
            if len(m):
                matches[(i, j)] = m
    rec = None
    # Seeded, single-threaded: the same model for the same seed. The incremental mapper sometimes
    # stops after a few images of a small collection; then other seeds are tried and the largest kept.
    for attempt in range(int(conf["sfm_attempts"])):
        seed = int(conf["seed"]) + attempt
        model = _incremental_sfm(names, cams, [f.keypoints for f in feats], matches, seed)
        if model is not None and (rec is None or (model.num_reg_images(), model.num_points3D())
                                  > (rec.num_reg_images(), rec.num_points3D())):
            rec = model
        if rec is not None and rec.num_reg_images() == len(paths):
            break
    if rec is None:
        raise DataError(f"SfM registered no images ({len(matches)} matched pairs of {len(paths)} images)")
    log(f"{name}: SfM registered {rec.num_reg_images()}/{len(paths)} images, {rec.num_points3D()} points")
    scene = Scene(name, "sfm", [], [], [], [], [], [], [],
                  points={int(k): np.asarray(v.xyz) for k, v in rec.points3D.items()})
    for im in sorted(rec.images.values(), key=lambda im: im.image_id):
        if not im.has_pose:
            continue
        i = im.image_id - 1
        f = feats[i]
        pid = np.array([p.point3D_id if p.has_point3D() else -1 for p in im.points2D], np.int64)
        has = np.flatnonzero(pid >= 0)
        if len(has):
            cam_xyz = im.cam_from_world() * np.array([scene.points[int(k)] for k in pid[has]])
            proj = rec.cameras[im.camera_id].img_from_cam(cam_xyz)
            err = np.linalg.norm(np.asarray(proj) - f.keypoints[has], axis=1)
            pid[has[~(err <= conf["max_reprojection_px"])]] = -1
        c = rec.cameras[im.camera_id]
        scene.names.append(names[i])
        scene.loaders.append(_file_loader(paths[i]))
        scene.keypoints.append(unbias_extractor_keypoints(np.asarray(f.keypoints, np.float64),
                                                          (cams[i].width, cams[i].height), extractor.conf))
        scene.sigmas.append(np.asarray(f.scales, np.float64) / 2)
        scene.angles.append(wrap(f.orientations))
        scene.point_ids.append(pid)
        scene.sizes.append((cams[i].width, cams[i].height))
        scene.cameras.append(Camera(cams[i].width, cams[i].height, c.calibration_matrix(), _radial(c)))
        scene.poses.append(invert(im.cam_from_world().matrix()))
    return scene


def _incremental_sfm(names: list[str], cams: list, keypoints: list[np.ndarray], matches: dict, seed: int):
    """The largest model of pycolmap's incremental mapper (SIMPLE_RADIAL cameras), or None."""
    import pycolmap

    from ..geometry.triangulate import write_database

    pycolmap.set_random_seed(seed)
    with tempfile.TemporaryDirectory(prefix="lift-data-sfm-") as tmp:
        work = Path(tmp)
        db = work / "database.db"
        write_database(db, names, cams, None, keypoints, matches, verified=False, calibrated=False)
        # One focal length and one radial term per photo (SIMPLE_RADIAL): PINHOLE's two refined focal
        # lengths drift apart on collections of a few photos (fx < 0 seen on phototourism).
        database = pycolmap.Database.open(str(db))
        try:
            for cam in database.read_all_cameras():
                f0, _, cx, cy = cam.params
                database.update_camera(pycolmap.Camera(model="SIMPLE_RADIAL", width=cam.width, height=cam.height,
                                                       params=[f0, cx, cy, 0.0], camera_id=cam.camera_id))
        finally:
            database.close()
        (work / "pairs.txt").write_text("".join(f"{names[i]} {names[j]}\n" for i, j in matches))
        verify = pycolmap.TwoViewGeometryOptions()
        verify.ransac.random_seed = seed
        pycolmap.verify_matches(str(db), str(work / "pairs.txt"), verify)
        options = pycolmap.IncrementalPipelineOptions()
        options.extract_colors = False
        options.random_seed = seed
        options.num_threads = 1
        options.mapper.random_seed = seed
        options.mapper.num_threads = 1
        options.ba_refine_focal_length = True
        options.ba_refine_principal_point = False
        options.ba_refine_extra_params = True
        (work / "sfm").mkdir()
        models = pycolmap.incremental_mapping(str(db), str(work), str(work / "sfm"), options)
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D())) if models else None


def load_bag(name: str, bag: Path, conf: dict, log=_log) -> Scene:
    """A mapping bag with ground-truth poses: the SIFT map from the known poses."""
    from ..bags.reader import read_frames

    return scene_from_frames(name, read_frames(bag, pose_topic="/ground_truth/pose"), conf, log=log)


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


def load_webcam(name: str, folder: Path, conf: dict, log=_log) -> Scene:
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


# ----------------------------------------------------------------------------------------------------
# Quadruplets


@dataclass
class Quads:
    """Where each patch of N quadruplets is cut: image index (scenes' images, then warps), centre,
    sigma and angle per patch (P4: upright, angle 0), and the ids of P1/P2's point and P3's."""

    image: np.ndarray   # (N, 4) int64
    xy: np.ndarray      # (N, 4, 2)
    sigma: np.ndarray   # (N, 4)
    angle: np.ndarray   # (N, 4)
    point: np.ndarray   # (N, 2) int64

    @staticmethod
    def empty() -> Quads:
        return Quads(np.zeros((0, 4), np.int64), np.zeros((0, 4, 2)), np.zeros((0, 4)), np.zeros((0, 4)),
                     np.zeros((0, 2), np.int64))

    def __len__(self) -> int:
        return len(self.image)


def spread(groups: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of up to ``n`` candidates in random order, every group's first candidate before any
    group's second, and so on (as many different points as possible)."""
    m = len(groups)
    if m == 0 or n <= 0:
        return np.zeros(0, np.int64)
    order = rng.permutation(m)
    g = np.asarray(groups)[order]
    by_group = np.argsort(g, kind="stable")
    sg = g[by_group]
    start = np.r_[0, np.flatnonzero(sg[1:] != sg[:-1]) + 1]
    rank_sorted = np.arange(m) - np.repeat(start, np.diff(np.r_[start, m]))
    rank = np.empty(m, np.int64)
    rank[by_group] = rank_sorted
    return order[np.argsort(rank, kind="stable")][:n]


def inside(xy: np.ndarray, sigma: np.ndarray, size: tuple[int, int], border_sigmas: float) -> np.ndarray:
    w, h = size
    m = border_sigmas * np.asarray(sigma)
    xy = np.asarray(xy).reshape(-1, 2)
    return (xy[:, 0] >= m) & (xy[:, 1] >= m) & (xy[:, 0] <= w - 1 - m) & (xy[:, 1] <= h - 1 - m)


def free_location(xy: np.ndarray, sigma: np.ndarray, size: tuple[int, int], conf: dict, rng: np.random.Generator,
                  tries: int = 8) -> tuple[np.ndarray, float] | None:
    """P4: a random centre and scale (drawn from the keypoints' scales) whose support lies inside the
    image and that is ≥ min_separation_sigmas × max(sigma, sigma_k) from every keypoint k."""
    if len(sigma) == 0:
        return None
    w, h = size
    k = conf["min_separation_sigmas"]
    for _ in range(tries):
        s = sigma[rng.integers(0, len(sigma), 64)]
        m = conf["border_sigmas"] * s
        ok = (w - 1 - 2 * m > 0) & (h - 1 - 2 * m > 0)
        if not ok.any():
            continue
        s, m = s[ok], m[ok]
        c = np.stack([m + rng.random(len(s)) * (w - 1 - 2 * m), m + rng.random(len(s)) * (h - 1 - 2 * m)], 1)
        d = np.linalg.norm(c[:, None] - xy[None], axis=2)
        good = np.all(d >= k * np.maximum(s[:, None], sigma[None]), axis=1)
        if good.any():
            j = int(np.flatnonzero(good)[0])
            return c[j], float(s[j])
    return None


def _observations(scene: Scene, conf: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, keypoint, point id) of every usable observation of a point."""
    img, kp, pid = [], [], []
    for i in range(len(scene)):
        p = scene.point_ids[i]
        ok = (p >= 0) & inside(scene.keypoints[i], scene.sigmas[i], scene.sizes[i], conf["border_sigmas"])
        idx = np.flatnonzero(ok)
        img.append(np.full(len(idx), i))
        kp.append(idx)
        pid.append(p[idx])
    return np.concatenate(img).astype(np.int64), np.concatenate(kp).astype(np.int64), np.concatenate(pid)


def _other_point(scene: Scene, obs, avoid_pid: int, near: list[tuple[int, np.ndarray, float]], conf: dict,
                 rng: np.random.Generator, tries: int = 20):
    """A random observation of another point, not within min_separation_sigmas of P1/P2 in their images."""
    img, kp, pid = obs
    for _ in range(tries):
        j = int(rng.integers(0, len(img)))
        if pid[j] == avoid_pid:
            continue
        i, k = int(img[j]), int(kp[j])
        xy, s = scene.keypoints[i][k], scene.sigmas[i][k]
        if any(i == ni and np.linalg.norm(xy - nxy) < conf["min_separation_sigmas"] * max(s, ns)
               for ni, nxy, ns in near):
            continue
        return i, k, int(pid[j])
    return None


def sfm_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None) -> Quads:
    """Up to ``n`` quadruplets from an SfM scene: P1, P2 two observations of one 3D point in two
    images (each with its own SIFT scale and angle), P3 an observation of another point, P4 a
    keypoint-free place in P2's image."""
    conf = merge_options(default_conf, conf or {})
    obs = _observations(scene, conf)
    img, kp, pid = obs
    if len(img) == 0:
        return Quads.empty()
    order = np.argsort(pid, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(pid[order])) + 1, len(order)]
    cand_a, cand_b, cand_p = [], [], []
    for s, e in zip(starts[:-1], starts[1:]):
        members = order[s:e]
        pairs = [(a, b) for ai, a in enumerate(members) for b in members[ai + 1:] if img[a] != img[b]]
        if not pairs:
            continue
        for t in rng.permutation(len(pairs))[: conf["max_pairs_per_point"]]:
            a, b = pairs[t]
            if rng.random() < 0.5:
                a, b = b, a
            cand_a.append(a)
            cand_b.append(b)
            cand_p.append(pid[a])
    cand_a, cand_b, cand_p = (np.array(v, np.int64) for v in (cand_a, cand_b, cand_p))
    chosen = spread(cand_p, len(cand_p), rng)
    rows = []
    for c in chosen:
        if len(rows) >= n:
            break
        a, b = int(cand_a[c]), int(cand_b[c])
        ia, ka, ib, kb = int(img[a]), int(kp[a]), int(img[b]), int(kp[b])
        near = [(ia, scene.keypoints[ia][ka], scene.sigmas[ia][ka]), (ib, scene.keypoints[ib][kb], scene.sigmas[ib][kb])]
        other = _other_point(scene, obs, int(cand_p[c]), near, conf, rng)
        free = free_location(scene.keypoints[ib], scene.sigmas[ib], scene.sizes[ib], conf, rng)
        if other is None or free is None:
            continue
        i3, k3, p3 = other
        rows.append(((ia, ib, i3, ib),
                     (scene.keypoints[ia][ka], scene.keypoints[ib][kb], scene.keypoints[i3][k3], free[0]),
                     (scene.sigmas[ia][ka], scene.sigmas[ib][kb], scene.sigmas[i3][k3], free[1]),
                     (scene.angles[ia][ka], scene.angles[ib][kb], scene.angles[i3][k3], 0.0),
                     (int(cand_p[c]), p3)))
    return _quads(rows)


def _quads(rows) -> Quads:
    if not rows:
        return Quads.empty()
    im, xy, sg, an, pt = zip(*rows)
    return Quads(np.array(im, np.int64), np.array(xy, np.float64), np.array(sg, np.float64),
                 np.array(an, np.float64), np.array(pt, np.int64))


def webcam_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None) -> Quads:
    """Up to ``n`` quadruplets from a fixed camera: P1 a stable keypoint of one image, P2 the same
    (registered) pixel, scale and angle in another image where it is re-detected, P3 another stable
    keypoint cut from P2's image, P4 a keypoint-free place of P2's image."""
    conf = merge_options(default_conf, conf or {})
    sep = conf["min_separation_sigmas"]
    cand_i, cand_k, cells = [], [], []
    for i in range(len(scene)):
        ok = (scene.point_ids[i] >= 0) & inside(scene.keypoints[i], scene.sigmas[i], scene.sizes[i],
                                                 conf["border_sigmas"])
        for k in np.flatnonzero(ok):
            ref = scene.keypoints[i][k] - scene.offsets[i]
            cand_i.append(i)
            cand_k.append(int(k))
            cells.append(int(ref[1] // 3) * 100000 + int(ref[0] // 3))
    if not cand_i:
        return Quads.empty()
    cand_i, cand_k = np.array(cand_i), np.array(cand_k)
    w, h = scene.sizes[0]
    off = scene.offsets
    rows = []
    for c in spread(np.array(cells), len(cells), rng):
        if len(rows) >= n:
            break
        a, k = int(cand_i[c]), int(cand_k[c])
        others = np.flatnonzero(scene.redetected[a][k])
        if len(others) == 0:
            continue
        b = int(rng.choice(others))
        first, second = (a, b) if rng.random() < 0.5 else (b, a)   # either image may be the detecting one
        s1, t1 = scene.sigmas[a][k], scene.angles[a][k]
        ref1 = scene.keypoints[a][k] - off[a]
        xy1, xy2 = ref1 + off[first], ref1 + off[second]
        if not inside(np.stack([xy1, xy2]), [s1, s1], (w, h), conf["border_sigmas"]).all():
            continue
        third = None
        for _ in range(20):
            j = int(rng.integers(0, len(cand_i)))
            i3, k3 = int(cand_i[j]), int(cand_k[j])
            s3 = scene.sigmas[i3][k3]
            ref3 = scene.keypoints[i3][k3] - off[i3]
            if np.linalg.norm(ref3 - ref1) < max(sep * max(s1, s3), 2 * conf["webcam"]["repeat_px"]):
                continue
            if inside(ref3 + off[second], [s3], (w, h), conf["border_sigmas"])[0]:
                third = (ref3 + off[second], s3, scene.angles[i3][k3], int(scene.point_ids[i3][k3]))
                break
        free = free_location(scene.keypoints[second], scene.sigmas[second], (w, h), conf, rng)
        if third is None or free is None:
            continue
        rows.append(((first, second, second, second), (xy1, xy2, third[0], free[0]), (s1, s1, third[1], free[1]),
                     (t1, t1, third[2], 0.0), (int(scene.point_ids[a][k]), third[3])))
    return _quads(rows)


# Homographies -----------------------------------------------------------------------------------------


@dataclass
class Warp:
    """A synthetic view: image ``base`` of a scene warped by H (base pixels → view pixels) with
    photometric changes."""

    base: int
    H: np.ndarray
    gamma: float
    contrast: float
    brightness: float
    blur: float
    noise: float
    seed: int


def random_homography(size: tuple[int, int], rng: np.random.Generator, hc: dict) -> np.ndarray:
    """Rotation, scale, anisotropy, perspective and translation about the image centre."""
    w, h = size
    half = max(w, h) / 2
    N = np.array([[1 / half, 0, -(w - 1) / 2 / half], [0, 1 / half, -(h - 1) / 2 / half], [0, 0, 1]])
    theta = np.radians(rng.uniform(-hc["rotation_deg"], hc["rotation_deg"]))
    s = np.exp(rng.uniform(*np.log(hc["scale"])))
    a = np.exp(rng.uniform(-hc["aspect"], hc["aspect"]))
    R = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    S = np.diag([s * a, s / a, 1.0])
    P = np.eye(3)
    P[2, :2] = rng.uniform(-hc["perspective"], hc["perspective"], 2)
    T = np.eye(3)
    T[:2, 2] = rng.uniform(-hc["translation"], hc["translation"], 2) * np.array([w, h]) / half
    H = np.linalg.inv(N) @ T @ P @ R @ S @ N
    return H / H[2, 2]


def transfer(H: np.ndarray, xy: np.ndarray, sigma: np.ndarray, angle: np.ndarray):
    """Keypoints through a homography: positions, scales (× sqrt|det J|) and angles (direction of
    J (cos θ, sin θ)), J the homography's Jacobian at each point."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    X = np.c_[xy, np.ones(len(xy))] @ H.T
    z = X[:, 2]
    out = X[:, :2] / z[:, None]
    # J = (A - x' c^T) / z with H = [[A, b], [c^T, 1]]
    A, c = H[:2, :2], H[2, :2]
    J = (A[None] - out[:, :, None] * c[None, None, :]) / z[:, None, None]
    det = np.abs(np.linalg.det(J))
    d = np.einsum("nij,nj->ni", J, np.stack([np.cos(angle), np.sin(angle)], 1))
    return out, np.asarray(sigma) * np.sqrt(det), np.arctan2(d[:, 1], d[:, 0]), z > 0


def warp_image(gray: np.ndarray, warp: Warp) -> np.ndarray:
    """The synthetic view of ``gray`` (float32 0..255): warped (pre-blurred where it shrinks), then
    gamma, contrast, brightness, blur and noise."""
    h, w = gray.shape
    J = warp.H[:2, :2] / warp.H[2, 2]
    shrink = math.sqrt(abs(np.linalg.det(J)))
    src = gray
    if shrink < 1:
        src = cv2.GaussianBlur(gray, (0, 0), 0.6 * math.sqrt(1 / shrink ** 2 - 1))
    out = cv2.warpPerspective(src, warp.H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)
    valid = cv2.warpPerspective(np.ones_like(gray), warp.H, (w, h), flags=cv2.INTER_LINEAR) > 0.5
    x = np.clip(out / 255.0, 0, 1) ** warp.gamma
    mean = float(x[valid].mean()) if valid.any() else 0.5
    x = (x - mean) * warp.contrast + mean + warp.brightness / 255.0
    x = x * 255.0
    if warp.blur > 0:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), warp.blur)
    if warp.noise > 0:
        x = x + np.random.default_rng(warp.seed).normal(0, warp.noise, x.shape)
    x = np.where(valid, x, 0)
    return np.clip(x, 0, 255).astype(np.float32)


def homography_quads(scene: Scene, n: int, rng: np.random.Generator, conf: dict | None = None
                     ) -> tuple[Quads, list[Warp]]:
    """Up to ``n`` quadruplets from synthetic views of the scene's images: P1 a keypoint that is a
    point (SfM / stable webcam), P2 its transfer into a random homography with photometric changes,
    P3 another such keypoint in the same view, P4 a keypoint-free place of the original image.
    Image indices ≥ len(scene) refer to the returned warps."""
    conf = merge_options(default_conf, conf or {})
    hc = conf["homography"]
    sep = conf["min_separation_sigmas"]
    usable = [i for i in range(len(scene)) if (scene.point_ids[i] >= 0).sum() >= 2]
    rows, warps = [], []
    if not usable:
        return Quads.empty(), warps
    max_warps = 4 * (n // max(1, hc["points_per_warp"]) + len(usable))
    order = []
    while len(rows) < n and len(warps) < max_warps:
        if not order:
            order = list(rng.permutation(usable))
        i = int(order.pop())
        size = scene.sizes[i]
        H = random_homography(size, rng, hc)
        warp = Warp(i, H, float(np.exp(rng.uniform(*np.log(hc["gamma"])))), float(rng.uniform(*hc["contrast"])),
                    float(rng.uniform(-hc["brightness"], hc["brightness"])),
                    float(rng.uniform(*hc["blur"])) if rng.random() < 0.5 else 0.0,
                    float(rng.uniform(*hc["noise"])), int(rng.integers(2**31)))
        good = np.flatnonzero((scene.point_ids[i] >= 0)
                              & inside(scene.keypoints[i], scene.sigmas[i], size, conf["border_sigmas"]))
        xy, sg, an = scene.keypoints[i][good], scene.sigmas[i][good], scene.angles[i][good]
        xy2, sg2, an2, front = transfer(H, xy, sg, an)
        ok = front & inside(xy2, sg2, size, conf["border_sigmas"])
        if ok.sum() < 2:
            continue
        view = len(scene) + len(warps)
        warps.append(warp)
        sel = np.flatnonzero(ok)
        for j in rng.permutation(sel)[: hc["points_per_warp"]]:
            if len(rows) >= n:
                break
            far = sel[np.linalg.norm(xy[sel] - xy[j], axis=1) >= sep * np.maximum(sg[sel], sg[j])]
            free = free_location(scene.keypoints[i], scene.sigmas[i], size, conf, rng)
            if len(far) == 0 or free is None:
                continue
            t = int(rng.choice(far))
            rows.append(((i, view, view, i), (xy[j], xy2[j], xy2[t], free[0]), (sg[j], sg2[j], sg2[t], free[1]),
                         (an[j], wrap(an2[j]), wrap(an2[t]), 0.0),
                         (int(scene.point_ids[i][good[j]]), int(scene.point_ids[i][good[t]]))))
    return _quads(rows), warps


def render(scene: Scene, quads: Quads, warps: list[Warp] = (), desc: str = "crop") -> np.ndarray:
    """(N, 4, 128, 128) uint8 patches of ``quads``, each image (or warp) loaded once."""
    out = np.zeros((len(quads), 4, PATCH_SIZE, PATCH_SIZE), np.uint8)
    flat = quads.image.reshape(-1)
    keys = np.unique(flat)
    for key in tqdm(keys, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False):
        key = int(key)
        gray = scene.gray(key) if key < len(scene) else warp_image(scene.gray(warps[key - len(scene)].base),
                                                                   warps[key - len(scene)])
        sel = np.flatnonzero(flat == key)
        patches = crop(gray, quads.xy.reshape(-1, 2)[sel], quads.sigma.reshape(-1)[sel])
        out.reshape(-1, PATCH_SIZE, PATCH_SIZE)[sel] = patches
    return out


# ----------------------------------------------------------------------------------------------------
# Splits, sources, the file


@dataclass
class SetEntry:
    path: str            # relative to the data root, as in splits.json
    name: str            # short name: "fox", "sacre_coeur", "mexico"
    kind: str            # "bag" (posed), "collection" (unposed photos) or "webcam"


def read_split(split_file: str | Path, section: str = SPLIT_SECTION) -> dict:
    path = Path(split_file)
    try:
        split = json.loads(path.read_text())[section]
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{path}: no split section {section!r} ({type(e).__name__}: {e})") from None
    train, test = [_norm(p) for p in split.get("train", [])], [_norm(p) for p in split.get("test", [])]
    excluded = [_norm(p) for p in split.get("excluded", [])]
    for t in train:
        for u in test + excluded:
            if t == u or t.startswith(u + "/") or u.startswith(t + "/"):
                raise DataError(f"{path} [{section}]: training set {t} overlaps the test/excluded set {u}")
    return {"train": train, "test": test, "excluded": excluded}


def _norm(p: str) -> str:
    return str(Path(p)).strip("/")


def classify(path: str) -> SetEntry:
    parts = Path(path).parts
    if parts[0] == "bags":
        return SetEntry(path, parts[1], "bag")
    if len(parts) >= 3 and parts[:2] == ("raw", "webcam"):
        return SetEntry(path, parts[2], "webcam")
    return SetEntry(path, parts[1] if len(parts) > 1 else parts[0], "collection")


def source_names(entry: SetEntry) -> list[str]:
    pair = f"webcam:{entry.name}" if entry.kind == "webcam" else f"sfm:{entry.name}"
    return [pair, f"homography:{entry.name}"]


def select_sources(train: list[str], wanted, test: list[str] = ()) -> list[tuple[SetEntry, list[str]]]:
    """Training sets with the sources wanted of each: names ('sfm:fox'), kinds ('webcam') or set names."""
    entries = [classify(p) for p in train]
    if wanted is None:
        return [(e, source_names(e)) for e in entries]
    wanted = list(wanted)
    test_names = {classify(p).name for p in test} | set(test)
    out, used = [], set()
    for e in entries:
        names = [s for s in source_names(e) if any(w in (s, s.split(":")[0], e.name, e.path) for w in wanted)]
        used.update(w for w in wanted for s in names if w in (s, s.split(":")[0], e.name, e.path))
        if names:
            out.append((e, names))
    unknown = [w for w in wanted if w not in used]
    if unknown:
        bad = [w for w in unknown if w.split(":")[-1] in test_names]
        if bad:
            raise DataError(f"{', '.join(bad)}: test set(s) of this split; never trained on")
        avail = [s for e in entries for s in source_names(e)]
        raise DataError(f"unknown source(s) {', '.join(unknown)}; available: {', '.join(avail)} (or a kind: "
                        f"{', '.join(KINDS)})")
    return out


def user_plan(user_sets) -> tuple[list[tuple[SetEntry, list[str]]], dict]:
    """A user's own sets (fine-tuning) → the build plan and the split to record (all of it is training)."""
    plan = []
    for kind, path in user_sets:
        if kind not in ("bag", "collection", "webcam"):
            raise DataError(f"{path}: unknown kind {kind!r} (bag, collection, webcam)")
        path = Path(path).resolve()
        if not path.exists():
            raise DataError(f"{path} is absent")
        entry = SetEntry(str(path), path.name, kind)
        plan.append((entry, source_names(entry)))
    return plan, {"train": [e.path for e, _ in plan], "test": [], "excluded": []}


def load_scene(entry: SetEntry, root: Path, conf: dict, log=_log) -> Scene:
    path = root / entry.path
    if not path.exists():
        raise FileNotFoundError(f"{path} is absent")
    if entry.kind == "bag":
        return load_bag(entry.name, path, conf, log)
    if entry.kind == "webcam":
        return load_webcam(entry.name, path, conf, log)
    return load_collection(entry.name, path, conf, log)


def merge_options(base: dict, over: dict, what: str = "data") -> dict:
    """``base`` updated by ``over``, nested dicts key by key; a key ``base`` lacks is refused."""
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"unknown {what} option {k!r}")
        out[k] = merge_options(base[k], v, what) if isinstance(base[k], dict) and isinstance(v, dict) else v
    return out


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def build_dataset(output: str | Path, conf: dict | None = None, log=_log) -> dict:
    """Build the quadruplet file ``output`` (written beside and moved into place when complete).
    Returns {"output", "counts": {source: N}, "total", "seconds", "skipped": {source: reason}}."""
    conf = merge_options(default_conf, conf or {})
    if conf["threads"]:
        torch.set_num_threads(int(conf["threads"]))
    t0 = time.perf_counter()
    output = Path(output)
    root = Path(conf["data_root"])
    if conf["user_sets"]:
        plan, split = user_plan(conf["user_sets"])
        root = Path("/")
    else:
        split = read_split(conf["split_file"], conf["split"])
        plan = select_sources(split["train"], conf["sources"], split["test"])
    if not root.is_dir():
        raise DataError(f"data root {root} is absent (expected the shared data folder with bags/ and raw/)")
    output.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix=f".{output.name}.parts-", dir=output.parent) as tmp:
        parts: list[tuple[str, Path, Path]] = []
        for entry, names in tqdm(plan, desc="sets", unit="set", file=sys.stderr, disable=None):
            try:
                scene = load_scene(entry, root, conf, log)
            except (OSError, ValueError, RuntimeError) as e:   # a missing or unusable set is skipped, never silently
                for s in names:
                    skipped[s] = f"{type(e).__name__}: {e}"
                log(f"warning: skipped {', '.join(names)}: {e}")
                continue
            for s in names:
                kind = s.split(":")[0]
                rng = _rng(conf["seed"], s)
                if kind == "homography":
                    cap = int(round(conf["max_per_source"] * conf["homography_share"]))
                    quads, warps = homography_quads(scene, cap, rng, conf)
                else:
                    quads, warps = (sfm_quads if kind == "sfm" else webcam_quads)(scene, conf["max_per_source"],
                                                                                  rng, conf), []
                if len(quads) == 0:
                    skipped[s] = "no quadruplet could be formed"
                    log(f"warning: {s}: no quadruplet could be formed")
                    continue
                patches = render(scene, quads, warps, desc=s)
                pfile, afile = Path(tmp) / f"{len(parts)}.npy", Path(tmp) / f"{len(parts)}.angles.npy"
                np.save(pfile, patches)
                np.save(afile, quads.angle[:, :3].astype(np.float32))
                parts.append((s, pfile, afile))
                counts[s] = len(quads)
                log(f"{s}: {len(quads)} quadruplets")
            scene.drop_images()
        if not parts:
            raise DataError("no training data: every source was skipped (" +
                            "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
        partial = Path(tmp) / "data.h5"
        _write(partial, parts, conf, split, counts, time.perf_counter() - t0)
        os.replace(partial, output)
    seconds = time.perf_counter() - t0
    with h5py.File(output, "r+") as f:
        created = json.loads(f.attrs["created"])
        created["seconds"] = round(seconds, 1)
        f.attrs["created"] = json.dumps(created)
    return {"output": str(output), "counts": counts, "total": int(sum(counts.values())), "seconds": seconds,
            "skipped": skipped}


def _write(path: Path, parts, conf: dict, split: dict, counts: dict, seconds: float) -> None:
    sources = [s for s, _, _ in parts]
    patches = [np.load(p, mmap_mode="r") for _, p, _ in parts]
    angles = np.concatenate([np.load(a) for _, _, a in parts])
    source = np.concatenate([np.full(len(p), k, np.int16) for k, p in enumerate(patches)])
    local = np.concatenate([np.arange(len(p)) for p in patches])
    n = len(source)
    perm = np.random.default_rng(conf["seed"]).permutation(n)
    comp = None if conf["compression"] in (None, "none") else conf["compression"]
    with h5py.File(path, "w") as f:
        chunk = (min(n, 64), PATCH_SIZE, PATCH_SIZE)
        ds = [f.create_dataset(f"p{k}", (n, PATCH_SIZE, PATCH_SIZE), np.uint8, chunks=chunk, compression=comp)
              for k in (1, 2, 3, 4)]
        for k in range(3):
            f.create_dataset(f"angle{k + 1}", data=angles[perm, k].astype(np.float32))
        f.create_dataset("source", data=source[perm])
        step = WRITE_BLOCK
        for s in tqdm(range(0, n, step), desc="write", unit="block", file=sys.stderr, disable=None):
            rows = perm[s:s + step]
            block = np.empty((len(rows), 4, PATCH_SIZE, PATCH_SIZE), np.uint8)
            for k, p in enumerate(patches):
                m = source[rows] == k
                if m.any():
                    block[m] = p[np.sort(local[rows[m]])][np.argsort(np.argsort(local[rows[m]]))]
            for k in range(4):
                ds[k][s:s + len(rows)] = block[:, k]
        f.attrs["sources"] = json.dumps(sources)
        f.attrs["split"] = json.dumps({"file": None if conf["user_sets"] else str(Path(conf["split_file"]).resolve()),
                                       "section": None if conf["user_sets"] else conf["split"],
                                       "train": split["train"], "test": split["test"]})
        f.attrs["created"] = json.dumps({
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(), "lift_localizer_version": __version__,
            "opencv": cv2.__version__, "parameters": conf, "counts": counts, "seconds": round(seconds, 1),
            "patch": f"{PATCH_SIZE}x{PATCH_SIZE} upright, {SUPPORT_MULTIPLE:g} x support wide "
                     f"(support = {SUPPORT_PER_SCALE:g} sigma, sigma = OpenCV size / 2)",
        })
        f.attrs["patch_size"] = PATCH_SIZE


# ----------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m lift_localizer.training.data",
        description="Build LIFT's training quadruplets (P1, P2: one point in two images; P3: another point; "
                    "P4: no keypoint) from SfM maps of the training sets of splits.json [lift], fixed webcams and "
                    "random homographies with photometric changes, into one HDF5 file.")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="DATA.h5")
    p.add_argument("--max-per-source", type=int, default=default_conf["max_per_source"],
                   help="quadruplets per source at most (homography sources: half) (default %(default)s)")
    p.add_argument("--sources", nargs="+", default=None,
                   help="sources to build: names (sfm:fox, webcam:mexico, homography:llff_fern), kinds (sfm, webcam, "
                        "homography) or set names (fox); default: all training sets of the split")
    p.add_argument("--data-root", type=Path, default=Path(default_conf["data_root"]),
                   help="the shared data folder (default %(default)s)")
    p.add_argument("--split-file", type=Path, default=Path(default_conf["split_file"]))
    p.add_argument("--bag", action="append", default=[], type=Path, metavar="BAG",
                   help="fine-tuning on your own data: a posed rosbag2 (image, camera_info, pose topics as "
                        "build-map reads them); repeatable; replaces the split's sets")
    p.add_argument("--images", action="append", default=[], type=Path, metavar="DIR",
                   help="fine-tuning: a folder of photos of one place (pycolmap SfM finds the points); repeatable")
    p.add_argument("--webcam", action="append", default=[], type=Path, metavar="DIR",
                   help="fine-tuning: a folder of one fixed camera's images under changing light; repeatable")
    p.add_argument("--max-keypoints", type=int, default=default_conf["max_keypoints"])
    p.add_argument("--seed", type=int, default=default_conf["seed"])
    p.add_argument("--compression", choices=("lzf", "gzip", "none"), default=default_conf["compression"])
    args = p.parse_args(argv)
    if args.max_per_source <= 0 or args.max_keypoints <= 0:
        p.error("--max-per-source and --max-keypoints must be positive")
    conf = {"max_per_source": args.max_per_source, "sources": args.sources, "data_root": str(args.data_root),
            "split_file": str(args.split_file), "max_keypoints": args.max_keypoints, "seed": args.seed,
            "compression": args.compression,
            "user_sets": [("bag", str(b)) for b in args.bag] + [("collection", str(d)) for d in args.images] +
                         [("webcam", str(d)) for d in args.webcam]}
    try:
        summary = build_dataset(args.output, conf)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, n in summary["counts"].items():
        print(f"{name:32s} {n:7d}")
    for name, why in summary["skipped"].items():
        print(f"{name:32s} skipped: {why}")
    print(f"{summary['total']} quadruplets in {summary['seconds']:.0f} s → {summary['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
