"""Scenes: images of one set with their SIFT keypoints and which of them are the same point, from
posed frames and bags (the project's map builder) and unposed photo collections (incremental SfM)."""
from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from ..features.extractors import processed_size
from ..features.sift import true_positions
from .options import DataError, default_conf, log_to_stderr, merge_options

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff")


def wrap(angle) -> np.ndarray:
    """Angles (radians) wrapped to [-π, π), in float64."""
    return (np.asarray(angle, np.float64) + np.pi) % (2 * np.pi) - np.pi


def unbias_extractor_keypoints(xy: np.ndarray, size: tuple[int, int], extractor_conf: dict) -> np.ndarray:
    """Keypoints of the project's SIFT extractor (features.extractors) at their true positions: the
    upscale offset is in pixels of the image SIFT ran on (shrunk to resize_max where larger)."""
    w, h = size
    hs, ws = processed_size(h, w, extractor_conf.get("resize_max"))
    return true_positions(xy, (w / ws, h / hs))


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


def scene_from_frames(name: str, frames: list, conf: dict | None = None, log=log_to_stderr) -> Scene:
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


def load_collection(name: str, folder: Path, conf: dict, log=log_to_stderr) -> Scene:
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


def sfm_scene(name: str, paths: list[Path], conf: dict, log=log_to_stderr) -> Scene:
    """pycolmap's incremental mapper (mapping/sfm.py's incremental_sfm, seeded, SIMPLE_RADIAL guessed
    intrinsics refined) on SIFT keypoints of ``paths``, keeping the reconstruction: its 3D points and
    their tracks, which mapping's poses_from_sfm drops."""
    from ..features.extractors import make_extractor
    from ..images import read_image
    from ..geometry.camera import Camera
    from ..geometry.pose import invert
    from ..geometry.triangulate import quiet_colmap
    from ..features.matching import mutual_nearest_neighbours
    from ..mapping.sfm import _radial, guess_camera, incremental_sfm

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
        models = incremental_sfm(names, cams, [f.keypoints for f in feats], matches, seed=seed, simple_radial=True)
        model = max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D())) if models else None
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


def load_bag(name: str, bag: Path, conf: dict, log=log_to_stderr) -> Scene:
    """A mapping bag with ground-truth poses: the SIFT map from the known poses."""
    from ..bags.reader import read_frames

    return scene_from_frames(name, read_frames(bag, pose_topic="/ground_truth/pose"), conf, log=log)
