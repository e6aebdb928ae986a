"""How well a map pins a camera down, whatever the query: the floor under every pose covariance.

A query's error against the truth holds what no pixel of the query shows: the errors of the poses
the map was built from (ground truth, GPS/INS, motion capture, a gantry's calibration) and of the
points triangulated from them. The reprojection covariance shrinks as inliers grow; this part does
not. It is measured on the map alone, leaving each map image out in turn:

1. its points are triangulated again from the other images that see them (at least two), so that
   the image's own observations do not pull them toward its pose;
2. its pose is estimated from its keypoints and those points (RANSAC, then Levenberg–Marquardt);
3. the difference from its given pose, less what the reprojection covariance already explains,
   is the floor: one variance for position (map units²) and one for rotation (rad²) per axis,
   from medians over the images and axes.

A map is not equally good everywhere (the start of a drive, seen from one side only, is worse than
its middle), so a pose also gets the floor of the left-out images nearest it where that is larger
(``MapAccuracy.at``).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.pose import invert, make_T, pose_error_vector, rodrigues
from ..mapping.io import Map
from .absolute_pose import pose_covariance

# Map images left out in turn, evenly spread: enough for a variance, bounded for large maps.
MAX_IMAGES = 40
MIN_POINTS = 12
CHI2_1DOF_MEDIAN = 0.4549
# Left-out images whose errors make a pose's local floor: the nearest few, not one (one error is noise).
NEAREST = 3
# Up to this many map images every one triangulates the points; above, only the NEIGHBOURS nearest
# each left-out image do, so that loading a large map reads ~MAX_IMAGES × NEIGHBOURS images.
ALL_IMAGES_UP_TO = 400
NEIGHBOURS = 6


@dataclass
class MapAccuracy:
    """``floor`` (6,): variances for the whole map; ``centres`` (M, 3) and ``excess`` (M, 6): each
    left-out image's camera centre and squared error less its reprojection variance, per axis."""

    floor: np.ndarray
    centres: np.ndarray
    excess: np.ndarray

    def at(self, position: np.ndarray) -> np.ndarray:
        """(6,) variances for a camera at ``position``: the map's floor, or the mean of the
        ``NEAREST`` left-out images' where it is larger."""
        if len(self.centres) < NEAREST:
            return self.floor
        near = np.argsort(np.linalg.norm(self.centres - position, axis=1))[:NEAREST]
        return np.maximum(self.floor, _per_block(self.excess[near].mean(0)))


def _per_block(per_axis: np.ndarray) -> np.ndarray:
    """(6,) per-axis variances → one for position and one for rotation (the floor is the same
    whatever way the camera looks), never negative, repeated per axis."""
    return np.repeat([max(per_axis[:3].mean(), 0.0), max(per_axis[3:].mean(), 0.0)], 3)


def _observations(map_: Map, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (image index, point row, undistorted pixel) of ``images``' tracks."""
    img, pid, xy = [], [], []
    for i in images:
        im, seen = map_.images[i], map_.observations(i)
        img.append(np.full(len(seen.point3D_ids), i))
        pid.append(seen.point3D_ids)
        xy.append(im.camera.undistort_points(seen.keypoints).astype(np.float64).reshape(-1, 2))
    if not img:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 2))
    return np.concatenate(img), np.concatenate(pid), np.concatenate(xy)


def _triangulating(map_: Map, left_out: np.ndarray) -> np.ndarray:
    """The images whose observations triangulate the left-out images' points: all of them up to
    ALL_IMAGES_UP_TO, else each left-out image and the NEIGHBOURS images whose cameras are nearest
    it (a large map is not read whole when it is loaded)."""
    n = len(map_.images)
    if n <= ALL_IMAGES_UP_TO:
        return np.arange(n)
    centres = np.array([im.T_map_camera[:3, 3] for im in map_.images])
    near = [np.argsort(np.linalg.norm(centres - centres[i], axis=1), kind="stable")[:NEIGHBOURS + 1]
            for i in left_out]
    return np.unique(np.concatenate([left_out, *near]))


def pose_floor(map_: Map, max_images: int = MAX_IMAGES, threshold_px: float = 4.0) -> np.ndarray:
    """(6,) variances added to the diagonal of every pose covariance (position ×3, rotation ×3);
    zeros where fewer than two images can be checked."""
    return map_accuracy(map_, max_images, threshold_px).floor


def map_accuracy(map_: Map, max_images: int = MAX_IMAGES, threshold_px: float = 4.0) -> MapAccuracy:
    """The map's floor and the left-out images' errors (see the module's docstring)."""
    none = MapAccuracy(np.zeros(6), np.zeros((0, 3)), np.zeros((0, 6)))
    n = len(map_.images)
    left_out = np.unique(np.linspace(0, n - 1, min(n, max_images)).round().astype(int))
    img, pid, xy = _observations(map_, _triangulating(map_, left_out))
    if len(img) == 0:
        return none
    _, point = np.unique(pid, return_inverse=True)
    read, which = np.unique(img, return_inverse=True)
    P = np.array([map_.images[i].camera.K @ invert(map_.images[i].T_map_camera)[:3] for i in read])[which]
    # Linear triangulation, rows normalised so that near and far views weigh alike; each point's
    # normal matrix is a sum over its observations, so leaving one image out is a subtraction.
    rows = np.stack([xy[:, :1] * P[:, 2] - P[:, 0], xy[:, 1:] * P[:, 2] - P[:, 1]], 1)
    rows /= np.linalg.norm(rows[:, :, :3], axis=2, keepdims=True)
    outer = np.einsum("oki,okj->oij", rows, rows)
    normal = np.zeros((point.max() + 1, 4, 4))
    np.add.at(normal, point, outer)
    views = np.bincount(point)
    errors, model, centres = [], [], []
    for i in left_out:
        mine = np.flatnonzero((img == i) & (views[point] >= 3))
        if len(mine) < MIN_POINTS:
            continue
        _, vec = np.linalg.eigh(normal[point[mine]] - outer[mine])
        X = vec[:, :, 0]
        ok = np.abs(X[:, 3]) > 1e-12
        X, obs = X[ok, :3] / X[ok, 3:], xy[mine][ok]
        im = map_.images[i]
        T_cw = invert(im.T_map_camera)
        rvec, tvec = cv2.Rodrigues(T_cw[:3, :3])[0], T_cw[:3, 3].reshape(3, 1).copy()
        found, rvec, tvec, inl = cv2.solvePnPRansac(X, obs, im.camera.K, None, rvec, tvec, useExtrinsicGuess=True,
                                                    reprojectionError=threshold_px, flags=cv2.SOLVEPNP_ITERATIVE)
        if not found or inl is None or len(inl) < MIN_POINTS:
            continue
        inl = inl.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[inl], obs[inl], im.camera.K, None, rvec, tvec)
        T = invert(make_T(rodrigues(rvec.ravel()), tvec.ravel()))
        errors.append(pose_error_vector(T, im.T_map_camera))
        model.append(np.diag(pose_covariance(T, im.camera.K, obs[inl], X[inl])))
        centres.append(im.T_map_camera[:3, 3])
    if len(errors) < 2:
        return none
    # Medians, not means: an image at the end of a sequence has neighbours on one side only, and its
    # extrapolated pose (several times the others' error on a drive) must not set the whole map's floor.
    # The median of a squared N(0, σ²) error is 0.455 σ².
    # Per axis first: a camera is always surer of its sideways position than of its depth.
    sq, model = np.square(errors), np.asarray(model)
    floor = _per_block(np.median(sq, 0) / CHI2_1DOF_MEDIAN - np.median(model, 0))
    return MapAccuracy(floor, np.asarray(centres), sq - model)
