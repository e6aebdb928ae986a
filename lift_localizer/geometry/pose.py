"""Rigid transforms as 4×4 matrices, quaternions x y z w, and pose errors.

Poses are T_map_camera: a point in camera coordinates X_c maps to the map as T @ [X_c, 1].
"""
from __future__ import annotations

import numpy as np


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) quaternions x y z w (any norm) → (..., 3, 3) rotation matrices."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = np.moveaxis(q, -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation → quaternion x y z w with w ≥ 0."""
    R = np.asarray(R, np.float64)
    # Shepperd's method: pick the largest of the four squared components for stability.
    t = np.trace(R)
    cands = np.array([t, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        w = np.sqrt(1 + t) / 2
        q = np.array([(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w), (R[1, 0] - R[0, 1]) / (4 * w), w])
    elif i == 1:
        x = np.sqrt(1 + 2 * R[0, 0] - t) / 2
        q = np.array([x, (R[0, 1] + R[1, 0]) / (4 * x), (R[0, 2] + R[2, 0]) / (4 * x), (R[2, 1] - R[1, 2]) / (4 * x)])
    elif i == 2:
        y = np.sqrt(1 + 2 * R[1, 1] - t) / 2
        q = np.array([(R[0, 1] + R[1, 0]) / (4 * y), y, (R[1, 2] + R[2, 1]) / (4 * y), (R[0, 2] - R[2, 0]) / (4 * y)])
    else:
        z = np.sqrt(1 + 2 * R[2, 2] - t) / 2
        q = np.array([(R[0, 2] + R[2, 0]) / (4 * z), (R[1, 2] + R[2, 1]) / (4 * z), z, (R[1, 0] - R[0, 1]) / (4 * z)])
    q /= np.linalg.norm(q)
    return q if q[3] >= 0 else -q


def make_T(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t).ravel()
    return T


def T_from_tq(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    return make_T(quat_to_matrix(q_xyzw), t)


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees, stable near 0 and 180."""
    c = (np.trace(R) - 1) / 2
    s = np.linalg.norm([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    return float(np.degrees(np.arctan2(s, c)))


def pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    """(translation error of the camera centre in map units, rotation error in degrees)."""
    dt = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    dr = rotation_angle_deg(T_est[:3, :3].T @ T_gt[:3, :3])
    return dt, dr


def skew(v: np.ndarray) -> np.ndarray:
    """(..., 3) → (..., 3, 3) cross-product matrices."""
    v = np.asarray(v, np.float64)
    z = np.zeros(v.shape[:-1])
    x, y, w = np.moveaxis(v, -1, 0)
    return np.stack([np.stack([z, -w, y], -1), np.stack([w, z, -x], -1), np.stack([-y, x, z], -1)], -2)


def rodrigues(rvec: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) → rotation matrix."""
    theta = float(np.linalg.norm(rvec))
    if theta < 1e-12:
        return np.eye(3) + skew(rvec)
    k = skew(np.asarray(rvec) / theta)
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)


def rotation_vector(R: np.ndarray) -> np.ndarray:
    """Rotation matrix → axis-angle (3,), the inverse of ``rodrigues`` for angles below π."""
    theta = np.radians(rotation_angle_deg(R))
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2
    s = np.linalg.norm(w)
    if s < 1e-12:
        return np.zeros(3) if theta < np.pi / 2 else _half_turn_axis(R) * np.pi
    return w / s * theta


def _half_turn_axis(R: np.ndarray) -> np.ndarray:
    # At π the antisymmetric part vanishes; the axis is the column of R + I with the largest norm.
    B = R + np.eye(3)
    col = B[:, int(np.argmax(np.linalg.norm(B, axis=0)))]
    return col / np.linalg.norm(col)


def pose_error_vector(T_est: np.ndarray, T_gt: np.ndarray) -> np.ndarray:
    """(6,) error in the covariance's coordinates (``absolute_pose.PoseEstimate``): camera centre
    difference in the map, then the rotation vector of R_est R_gtᵀ (about the map's axes)."""
    return np.r_[T_est[:3, 3] - T_gt[:3, 3], rotation_vector(T_est[:3, :3] @ T_gt[:3, :3].T)]
