"""Robust absolute pose (PnP + LO-RANSAC + non-linear refinement) and its covariance.

Three solvers behind one function, all on undistorted (pinhole) pixels:
- ``pycolmap``: estimate_and_refine_absolute_pose (LO-RANSAC, P3P, Ceres refinement);
- ``poselib``: estimate_absolute_pose (LO-RANSAC, P3P, bundle refinement);
- ``opencv``: solvePnPRansac with USAC_MAGSAC, then Levenberg–Marquardt on the inliers — the path
  that exists on Jetson, where pycolmap and poselib have no aarch64 wheels.
The covariance is computed here, the same way for all three, from the inliers' reprojection
residuals at the final pose, so that a switch of solver does not change what it means.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..geometry.pose import invert, make_T, quat_to_matrix, rodrigues

SOLVERS = ("pycolmap", "poselib", "opencv")


@dataclass
class PoseEstimate:
    """T_map_camera (4×4); inliers (N,) bool over the given correspondences; covariance (6×6) of
    (x, y, z, rot_x, rot_y, rot_z), rotations about the map's fixed axes — ROS's order."""

    T_map_camera: np.ndarray
    inliers: np.ndarray
    covariance: np.ndarray
    rmse_px: float

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def available_solvers() -> list[str]:
    found = []
    for name in SOLVERS:
        try:
            if name != "opencv":
                __import__(name)
            found.append(name)
        except ImportError:
            pass
    return found


def default_solver() -> str:
    return available_solvers()[0]


def reprojection_residuals(T_map_camera: np.ndarray, K: np.ndarray, xy: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(N, 2) projected − observed pixels; points behind the camera get infinite residuals."""
    T_cw = invert(T_map_camera)
    Xc = xyz @ T_cw[:3, :3].T + T_cw[:3, 3]
    z = Xc[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        proj = (Xc[:, :2] / z) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    r = proj - xy
    r[(z[:, 0] <= 1e-9)] = np.inf
    return r


def reprojection_jacobian(T_map_camera: np.ndarray, K: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """(N, 2, 6) derivative of each point's projection by (δt, δθ): the camera centre moved,
    c' = c + δt, and turned about the map's axes, R_map_cam' = exp([δθ]×) R_map_cam. With v = X − c,
    ∂X_cam/∂δt = −R_cam_map and ∂X_cam/∂δθ = R_cam_map [v]×.
    """
    R_cm = T_map_camera[:3, :3].T
    c = T_map_camera[:3, 3]
    v = xyz - c
    Xc = v @ R_cm.T
    x, y, z = Xc[:, 0], Xc[:, 1], Xc[:, 2]
    fx, fy = K[0, 0], K[1, 1]
    d_proj = np.zeros((len(xyz), 2, 3))
    d_proj[:, 0, 0] = fx / z
    d_proj[:, 0, 2] = -fx * x / z**2
    d_proj[:, 1, 1] = fy / z
    d_proj[:, 1, 2] = -fy * y / z**2
    vx = np.zeros((len(v), 3, 3))
    vx[:, 0, 1], vx[:, 0, 2], vx[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    vx[:, 1, 0], vx[:, 2, 0], vx[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    d_X = np.concatenate([np.broadcast_to(-R_cm, (len(v), 3, 3)), R_cm @ vx], axis=2)
    return d_proj @ d_X


def pose_covariance(T_map_camera: np.ndarray, K: np.ndarray, xy: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    """6×6 covariance of (camera position in the map, rotation about the map's axes), from the
    Gauss–Newton normal equations at the pose (``reprojection_jacobian``), σ² estimated from the
    residuals (N ≥ 4)."""
    J = reprojection_jacobian(T_map_camera, K, xyz).reshape(-1, 6)
    r = reprojection_residuals(T_map_camera, K, xy, xyz).ravel()
    dof = max(len(r) - 6, 1)
    sigma2 = float(r @ r) / dof
    JtJ = J.T @ J
    return sigma2 * np.linalg.pinv(JtJ, rcond=1e-12, hermitian=True)


def calibrate_covariance(cov: np.ndarray, scale: float, decorrelation: float) -> np.ndarray:
    """``scale · (Σ + decorrelation · diag Σ)``: the reprojection model's covariance with an
    independent error added to each coordinate, ``√decorrelation`` of its own standard deviation.

    The reprojection model knows only pixel noise, so it couples rotation and translation almost
    perfectly (a narrow field of view cannot tell a turn from a sideways step) and predicts a thin
    ellipsoid. The real error also holds what no pixel shows: the map images' pose errors, the
    camera calibration, the ground truth itself, which do not follow that coupling. The localizer adds
    the map's measured floor for that (``map_accuracy``); these two numbers are for a user's own
    calibration (``tools/acceptance_study.py --choose``), 1 and 0 by default."""
    cov = np.asarray(cov, np.float64)
    if decorrelation:   # skipped at 0: an unknown (infinite) covariance times 0 would read NaN
        cov = cov + decorrelation * np.diag(np.diag(cov))
    return scale * cov


def _pycolmap(xy, xyz, K, size, threshold, seed):
    import pycolmap

    camera = pycolmap.Camera(model="PINHOLE", width=size[0], height=size[1],
                             params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = threshold
    est.ransac.random_seed = seed
    ret = pycolmap.estimate_and_refine_absolute_pose(xy, xyz, camera, est)
    if ret is None:
        return None
    return invert(ret["cam_from_world"].matrix()), np.asarray(ret["inlier_mask"], bool)


def _poselib(xy, xyz, K, size, threshold, seed):
    import poselib

    camera = {"model": "PINHOLE", "width": size[0], "height": size[1],
              "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}
    pose, info = poselib.estimate_absolute_pose(xy, xyz, camera, {"max_reproj_error": threshold, "seed": seed}, {})
    inliers = np.asarray(info.get("inliers", []), bool)
    if inliers.sum() < 4:
        return None
    q_wxyz = np.asarray(pose.q)
    T_cw = make_T(quat_to_matrix(np.r_[q_wxyz[1:], q_wxyz[0]]), np.asarray(pose.t))
    return invert(T_cw), inliers


def _opencv(xy, xyz, K, size, threshold, seed):
    cv2.setRNGSeed(seed)
    ok, rvec, tvec, idx = cv2.solvePnPRansac(xyz, xy, K, None, flags=cv2.USAC_MAGSAC,
                                             reprojectionError=threshold, confidence=0.99999,
                                             iterationsCount=10000)
    if not ok or idx is None or len(idx) < 4:
        return None
    # Local optimisation: refine on the inliers, re-select them at the refined pose, refine again.
    inliers = np.zeros(len(xy), bool)
    inliers[idx.ravel()] = True
    for _ in range(2):
        rvec, tvec = cv2.solvePnPRefineLM(xyz[inliers], xy[inliers], K, None, rvec, tvec)
        T = invert(make_T(rodrigues(rvec.ravel()), tvec.ravel()))
        err = np.linalg.norm(reprojection_residuals(T, K, xy, xyz), axis=1)
        new = err < threshold
        if new.sum() < 4 or np.array_equal(new, inliers):
            break
        inliers = new
    # Plain least squares lets the inliers near the RANSAC threshold pull the pose; pycolmap and
    # poselib use a robust loss instead. A last refinement on the core of the inliers (within 3
    # robust standard deviations) does the same job with OpenCV alone.
    sigma = 1.4826 * float(np.median(err[inliers]))
    core = inliers & (err < max(3 * sigma, 1.0))
    if core.sum() >= 6:
        rvec, tvec = cv2.solvePnPRefineLM(xyz[core], xy[core], K, None, rvec, tvec)
        T = invert(make_T(rodrigues(rvec.ravel()), tvec.ravel()))
    return T, inliers


_SOLVE = {"pycolmap": _pycolmap, "poselib": _poselib, "opencv": _opencv}


def estimate_pose(xy: np.ndarray, xyz: np.ndarray, K: np.ndarray, image_size: tuple[int, int],
                  threshold_px: float = 8.0, solver: str = "pycolmap", seed: int = 0) -> PoseEstimate | None:
    """Absolute pose from 2D–3D correspondences, or None when RANSAC finds nothing.

    Args:
        xy: (N, 2) undistorted pixels; xyz: (N, 3) map points; K: 3×3; image_size: (width, height);
        threshold_px: RANSAC inlier threshold on the reprojection error.
    """
    if solver not in _SOLVE:
        raise ValueError(f"unknown PnP solver {solver!r}; choose from {', '.join(SOLVERS)}")
    xy = np.ascontiguousarray(xy, np.float64).reshape(-1, 2)
    xyz = np.ascontiguousarray(xyz, np.float64).reshape(-1, 3)
    if len(xy) < 4:
        return None
    out = _SOLVE[solver](xy, xyz, np.asarray(K, np.float64), image_size, float(threshold_px), int(seed))
    if out is None:
        return None
    T, inliers = out
    if not np.all(np.isfinite(T)):
        return None
    r = reprojection_residuals(T, K, xy[inliers], xyz[inliers])
    rmse = float(np.sqrt(np.mean(np.sum(r**2, 1)))) if inliers.any() else float("inf")
    cov = pose_covariance(T, K, xy[inliers], xyz[inliers]) if inliers.sum() >= 4 else np.full((6, 6), np.inf)
    return PoseEstimate(T, inliers, cov, rmse)
