"""Triangulate map points with the camera poses held fixed, using COLMAP's point triangulator.

pycolmap does what a careful hand-written triangulation would not: track merging and completion,
filtering by angle and reprojection error, and bundle adjustment of the points. The poses and
intrinsics stay as given (they are the map's ground truth).
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cpus import local_cpus
from .camera import Camera
from .pose import invert


@dataclass
class Triangulation:
    """The triangulated model and, per image, the 3D point id of each keypoint (−1: none)."""

    reconstruction: object  # pycolmap.Reconstruction
    point_ids: list[np.ndarray]

    @property
    def num_points(self) -> int:
        return self.reconstruction.num_points3D()


def default_options(keep_two_view_tracks: bool = True) -> dict:
    return {
        # Small maps (a ring of a few images) get no points at all without two-view tracks.
        "ignore_two_view_tracks": not keep_two_view_tracks,
        "min_angle": 1.5,             # degrees; COLMAP's default
        "merge_max_reproj_error": 4.0,
        "complete_max_reproj_error": 4.0,
        "filter_max_reproj_error": 4.0,
    }


def quiet_colmap() -> None:
    """COLMAP logs every step at INFO, and warns about image files it has no use for here (we
    never give it image folders); keep errors only."""
    import pycolmap

    pycolmap.logging.minloglevel = 2


def _same_camera_ids(cameras: list[Camera]) -> list[int]:
    ids: list[int] = []
    seen: dict[tuple, int] = {}
    for cam in cameras:
        key = (cam.width, cam.height, tuple(np.round(cam.K.ravel(), 9)), tuple(np.round(cam.dist, 12)))
        ids.append(seen.setdefault(key, len(seen) + 1))
    return ids


def write_database(db_path: Path, names: list[str], cameras: list[Camera], poses: list[np.ndarray] | None,
                   keypoints: list[np.ndarray], matches: dict[tuple[int, int], np.ndarray], verified: bool,
                   calibrated: bool = True):
    """A fresh COLMAP database (cameras, trivial rigs and frames, images, keypoints, matches) and
    the matching pycolmap.Reconstruction skeleton (images posed by ``poses``, or at the identity).
    Image i gets id i + 1. ``verified`` matches are also written as calibrated two-view geometries.
    ``calibrated``: the intrinsics are known (COLMAP's prior focal length), so that its geometric
    verification estimates essential matrices rather than fundamental ones."""
    import pycolmap

    if db_path.exists():
        db_path.unlink()
    rec = pycolmap.Reconstruction()
    cam_ids = _same_camera_ids(cameras)
    db = pycolmap.Database.open(str(db_path))
    try:
        for cam, cid in zip(cameras, cam_ids):
            if not rec.exists_camera(cid):
                pc = cam.to_colmap()
                pc.camera_id = cid
                pc.has_prior_focal_length = calibrated
                rec.add_camera_with_trivial_rig(pc)
                db.write_camera(pc, use_camera_id=True)
                db.write_rig(rec.rig(cid), use_rig_id=True)
        for i, (name, cid, kp) in enumerate(zip(names, cam_ids, keypoints)):
            iid = i + 1
            kp = np.asarray(kp, np.float64).reshape(-1, 2)
            cam_from_world = invert(np.asarray(poses[i], np.float64))[:3] if poses is not None else np.eye(4)[:3]
            image = pycolmap.Image(name=name, camera_id=cid, image_id=iid, keypoints=kp)
            # add_image_with_trivial_frame attaches the image to its camera's own rig.
            rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cam_from_world))
            db.write_frame(rec.frame(rec.image(iid).frame_id), use_frame_id=True)
            db.write_image(rec.image(iid), use_image_id=True)
            db.write_keypoints(iid, kp.astype(np.float32))
        for (i, j), m in matches.items():
            m = np.asarray(m, np.uint32).reshape(-1, 2)
            db.write_matches(i + 1, j + 1, m)
            if verified:
                geometry = pycolmap.TwoViewGeometry()
                geometry.config = pycolmap.TwoViewGeometryConfiguration.CALIBRATED
                geometry.inlier_matches = m
                db.write_two_view_geometry(i + 1, j + 1, geometry)
    finally:
        db.close()
    return rec


def triangulate(names: list[str], cameras: list[Camera], poses: list[np.ndarray],
                keypoints: list[np.ndarray], matches: dict[tuple[int, int], np.ndarray],
                options: dict | None = None, workdir: str | Path | None = None) -> Triangulation:
    """Triangulate matched keypoints of posed images.

    Args:
        names: image names; cameras: one Camera per image (identical ones are shared);
        poses: 4×4 T_map_camera per image; keypoints: (N_i, 2) pixels in the distorted image;
        matches: {(i, j): (M, 2) keypoint indices}, image indices i < j, already verified.
        workdir: where COLMAP's database goes (a temporary folder by default).
    """
    import pycolmap

    quiet_colmap()
    opts = {**default_options(), **(options or {})}
    tmp = tempfile.TemporaryDirectory(prefix="lift-tri-") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "database.db"
    try:
        rec = write_database(db_path, names, cameras, poses, keypoints, matches, verified=True)
        pipeline = pycolmap.IncrementalPipelineOptions()
        pipeline.extract_colors = False
        pipeline.num_threads = local_cpus()
        tri = pipeline.triangulation
        tri.ignore_two_view_tracks = opts["ignore_two_view_tracks"]
        tri.min_angle = opts["min_angle"]
        tri.merge_max_reproj_error = opts["merge_max_reproj_error"]
        tri.complete_max_reproj_error = opts["complete_max_reproj_error"]
        pipeline.mapper.filter_max_reproj_error = opts["filter_max_reproj_error"]
        pipeline.mapper.filter_min_tri_angle = opts["min_angle"]
        out = work / "triangulated"
        out.mkdir(exist_ok=True)
        rec = pycolmap.triangulate_points(rec, str(db_path), str(work), str(out), clear_points=True,
                                          options=pipeline, refine_intrinsics=False)
    finally:
        if tmp is not None:
            tmp.cleanup()

    point_ids = [np.full(len(kp), -1, np.int64) for kp in keypoints]
    for pid, point in rec.points3D.items():
        for el in point.track.elements:
            point_ids[el.image_id - 1][el.point2D_idx] = pid
    return Triangulation(rec, point_ids)


def fundamental_from_poses(T0: np.ndarray, T1: np.ndarray, K0: np.ndarray, K1: np.ndarray) -> np.ndarray:
    """F with x1ᵀ F x0 = 0 for pinhole pixels of two posed cameras (T = T_map_camera)."""
    from .pose import skew

    T_1_0 = invert(T1) @ T0
    R, t = T_1_0[:3, :3], T_1_0[:3, 3]
    E = skew(t) @ R
    return np.linalg.inv(K1).T @ E @ np.linalg.inv(K0)


def _epipolar_lines(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x1 homogeneous (N1, 3), the epipolar lines of x0 in image 1 (N0, 3) and of x1 in image 0 (N1, 3)."""
    h0 = np.concatenate([x0, np.ones((len(x0), 1))], 1)
    h1 = np.concatenate([x1, np.ones((len(x1), 1))], 1)
    return h1, h0 @ F.T, h1 @ F


def sampson_error(F: np.ndarray, x0: np.ndarray, x1: np.ndarray) -> np.ndarray:
    """(M,) Sampson distance in pixels of correspondences x0 ↔ x1 (M, 2) under F."""
    h1, Fx0, Ftx1 = _epipolar_lines(F, x0, x1)
    num = np.sum(h1 * Fx0, 1) ** 2
    den = Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2
    return np.sqrt(num / np.maximum(den, 1e-300))


# Rows of the all-pairs Sampson matrix computed at once by epipolar_band: ~16 MB of float64 per
# temporary at 2000 keypoints in the other image.
BAND_BLOCK_ROWS = 1024


def epipolar_band(F: np.ndarray, x0: np.ndarray, x1: np.ndarray, threshold_px: float) -> np.ndarray:
    """(N0, N1) bool: which of all pairs x0[i] ↔ x1[j] lie within ``threshold_px`` (Sampson
    distance, as ``sampson_error``) of F's epipolar geometry. Computed a block of rows at a time,
    so memory stays at the (N0, N1) booleans."""
    h1, Fx0, Ftx1 = _epipolar_lines(F, x0, x1)
    out = np.zeros((len(x0), len(x1)), bool)
    for start in range(0, len(x0), BAND_BLOCK_ROWS):
        rows = Fx0[start:start + BAND_BLOCK_ROWS]
        num = (rows @ h1.T) ** 2
        den = (rows[:, :2] ** 2).sum(1)[:, None] + (Ftx1[:, :2] ** 2).sum(1)[None]
        out[start:start + len(rows)] = num < threshold_px ** 2 * np.maximum(den, 1e-300)
    return out
