"""Poses, PnP solvers, covariance and triangulation on synthetic scenes with exact geometry."""
import numpy as np
import pytest

from lift_localizer.geometry.camera import Camera
from lift_localizer.geometry.pose import (invert, make_T, matrix_to_quat, pose_error, quat_to_matrix, rotation_vector,
                                          rodrigues)
from lift_localizer.evaluation.metrics import CHI2_6DOF_95, nees
from lift_localizer.localization.absolute_pose import (available_solvers, estimate_pose, pose_covariance,
                                                       reprojection_residuals)

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def scene(n, noise=0.0, outliers=0, seed=0):
    rng = np.random.default_rng(seed)
    T = make_T(rodrigues([0.1, -0.2, 0.05]), [0.3, -0.1, 0.2])   # T_map_camera
    Xc = rng.uniform([-2, -1.5, 3], [2, 1.5, 7], (n, 3))
    xyz = Xc @ T[:3, :3].T + T[:3, 3]
    xy = (Xc @ K.T)[:, :2] / Xc[:, 2:] + rng.normal(0, noise, (n, 2)) if noise else (Xc @ K.T)[:, :2] / Xc[:, 2:]
    xy[:outliers] = rng.uniform([0, 0], [640, 480], (outliers, 2))
    return T, xy, xyz


def test_quaternion_round_trip_and_convention():
    rng = np.random.default_rng(1)
    for _ in range(50):
        R = rodrigues(rng.normal(size=3))
        q = matrix_to_quat(R)
        assert q[3] >= 0 and np.isclose(np.linalg.norm(q), 1)
        np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)
    # x y z w: a quarter turn about z maps x to y
    R = quat_to_matrix([0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)])
    np.testing.assert_allclose(R @ [1, 0, 0], [0, 1, 0], atol=1e-12)


def test_rotation_vector_inverts_rodrigues_up_to_a_half_turn():
    rng = np.random.default_rng(3)
    for _ in range(200):
        v = rng.normal(size=3)
        v *= rng.uniform(0, np.pi - 1e-3) / np.linalg.norm(v)
        np.testing.assert_allclose(rotation_vector(rodrigues(v)), v, atol=1e-9)
    half = rotation_vector(rodrigues([0, np.pi, 0]))
    np.testing.assert_allclose(np.abs(half), [0, np.pi, 0], atol=1e-9)
    np.testing.assert_allclose(rotation_vector(np.eye(3)), 0)


def test_pose_error():
    T = make_T(rodrigues([0, 0.3, 0]), [1, 2, 3])
    T2 = T @ make_T(rodrigues([0, 0, np.radians(2)]), [0, 0, 0])
    T2[:3, 3] += [0.03, 0.04, 0]
    dt, dr = pose_error(T2, T)
    assert np.isclose(dt, 0.05) and np.isclose(dr, 2.0)


@pytest.mark.parametrize("solver", available_solvers())
def test_solvers_recover_exact_pose_among_outliers(solver):
    T, xy, xyz = scene(200, outliers=60)
    est = estimate_pose(xy, xyz, K, (640, 480), 4.0, solver)
    dt, dr = pose_error(est.T_map_camera, T)
    assert dt < 1e-6 and dr < 1e-5
    assert est.num_inliers == 140 and not est.inliers[:60].any()
    assert est.rmse_px < 1e-6


@pytest.mark.parametrize("solver", available_solvers())
def test_solvers_with_noise(solver):
    T, xy, xyz = scene(300, noise=0.5, outliers=50)
    est = estimate_pose(xy, xyz, K, (640, 480), 4.0, solver)
    dt, dr = pose_error(est.T_map_camera, T)
    assert dt < 0.01 and dr < 0.1
    assert abs(est.rmse_px - 0.5 * np.sqrt(2)) < 0.15


@pytest.mark.parametrize("solver", [s for s in available_solvers() if s in ("pycolmap", "poselib")])
def test_the_ransac_seed_repeats_a_pose_and_another_seed_samples_others(solver):
    # 20 noisy inliers among 60 outliers: which minimal samples RANSAC draws decides the inlier set.
    T, xy, xyz = scene(80, noise=2.0, outliers=60, seed=3)
    poses = [estimate_pose(xy, xyz, K, (640, 480), 4.0, solver, seed=s).T_map_camera for s in range(6)]
    again = estimate_pose(xy, xyz, K, (640, 480), 4.0, solver, seed=0).T_map_camera
    assert np.array_equal(poses[0], again)
    assert len({p.tobytes() for p in poses}) > 1


def test_opencv_path_needs_no_pycolmap_or_poselib():
    assert "opencv" in available_solvers()
    assert estimate_pose(*scene(3)[1:], K, (640, 480)) is None   # fewer than 4 points: nothing


def test_covariance_is_real_and_shrinks_with_more_points():
    covs = []
    for n in (30, 120, 480):
        T, xy, xyz = scene(n, noise=1.0, seed=n)
        est = estimate_pose(xy, xyz, K, (640, 480), 6.0, "opencv")
        covs.append(est.covariance)
        assert np.allclose(est.covariance, est.covariance.T)
        assert np.all(np.linalg.eigvalsh(est.covariance) > 0)
    stds = [np.sqrt(np.diag(c)) for c in covs]
    assert np.all(stds[1] < stds[0]) and np.all(stds[2] < stds[1])
    # 4× the points: about half the standard deviation
    assert 0.3 < np.mean(stds[2] / stds[1]) < 0.7


def test_covariance_matches_the_spread_of_estimates():
    """Monte Carlo: the predicted position std agrees with the actual scatter within 30 %."""
    T, xy0, xyz = scene(100)
    rng = np.random.default_rng(5)
    positions, preds = [], []
    for _ in range(60):
        est = estimate_pose(xy0 + rng.normal(0, 1.0, xy0.shape), xyz, K, (640, 480), 8.0, "opencv")
        positions.append(est.T_map_camera[:3, 3])
        preds.append(np.sqrt(np.diag(est.covariance)[:3]))
    actual = np.std(positions, axis=0)
    np.testing.assert_allclose(actual, np.mean(preds, axis=0), rtol=0.3)


def test_nees_of_the_covariance_follows_chi2_with_six_degrees():
    """Monte Carlo over pixel noise: the 6-D error (position; rotation vector about the map's axes)
    normalised by the predicted covariance averages 6, and the 95 % ellipsoid holds about 95 %.
    An error in the rotation convention or in a block's frame would move both far off."""
    T, xy0, xyz = scene(100)
    rng = np.random.default_rng(7)
    values = []
    for _ in range(80):
        est = estimate_pose(xy0 + rng.normal(0, 1.0, xy0.shape), xyz, K, (640, 480), 8.0, "opencv")
        values.append(nees(est.T_map_camera, est.covariance, T))
    values = np.array(values)
    assert 4.8 < values.mean() < 7.5
    assert 0.85 <= np.mean(values <= CHI2_6DOF_95) <= 1.0


def test_covariance_is_in_map_axes():
    """Rotating the whole map by R0 turns both blocks (position; rotation about fixed axes) by R0,
    as ROS's (x, y, z, rot_x, rot_y, rot_z) about the parent frame requires. A body-frame rotation
    block would not change."""
    T, xy, xyz = scene(60, noise=0.7)
    cov = pose_covariance(T, K, xy, xyz)
    R0 = rodrigues([0.4, -0.9, 1.3])
    M = make_T(R0, [5.0, -2.0, 1.0])
    cov2 = pose_covariance(M @ T, K, xy, xyz @ R0.T + M[:3, 3])
    B = np.kron(np.eye(2), R0)
    np.testing.assert_allclose(cov2, B @ cov @ B.T, rtol=1e-6, atol=1e-15)
    assert not np.allclose(cov2[3:, 3:], cov[3:, 3:], rtol=0.05)


def test_residuals_flag_points_behind_the_camera():
    T = np.eye(4)
    r = reprojection_residuals(T, K, np.zeros((2, 2)), np.array([[0, 0, 2.0], [0, 0, -2.0]]))
    assert np.isfinite(r[0]).all() and np.isinf(r[1]).all()


def test_camera_undistort_points():
    cam = Camera(640, 480, K, [-0.2, 0.05, 0.001, -0.001, 0.0])
    import cv2

    ideal = np.array([[100.0, 50], [320, 240], [600, 400]])
    n = np.c_[(ideal - K[:2, 2]) / [K[0, 0], K[1, 1]], np.zeros(3)]
    distorted, _ = cv2.projectPoints(n + [0, 0, 1], np.zeros(3), np.zeros(3), K, cam.dist)
    np.testing.assert_allclose(cam.undistort_points(distorted[:, 0]), ideal, atol=0.01)
    assert cam.to_colmap().model.name == "OPENCV"
    assert Camera(640, 480, K).to_colmap().model.name == "PINHOLE"


def test_triangulation_recovers_points_and_keeps_poses():
    pytest.importorskip("pycolmap")
    from lift_localizer.geometry.triangulate import triangulate

    rng = np.random.default_rng(0)
    X = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], (150, 3))
    cam = Camera(640, 480, K)
    poses, kps = [], []
    for i in range(4):
        T = make_T(rodrigues([0, 0.05 * i, 0]), [0.4 * i, 0, 0])
        Xc = (X - T[:3, 3]) @ T[:3, :3]
        poses.append(T)
        kps.append((Xc @ K.T)[:, :2] / Xc[:, 2:])
    ident = np.stack([np.arange(150)] * 2, 1)
    # Only consecutive pairs matched, and the last pair only for half the points: tracks must merge.
    matches = {(0, 1): ident, (1, 2): ident, (2, 3): ident[:75]}
    tri = triangulate([f"{i}.png" for i in range(4)], [cam] * 4, poses, kps, matches)
    rec = tri.reconstruction
    assert tri.num_points == 150
    for i, pid in enumerate(tri.point_ids[0]):
        np.testing.assert_allclose(rec.points3D[int(pid)].xyz, X[i], atol=1e-5)
    assert np.all(tri.point_ids[3][:75] >= 0) and np.all(tri.point_ids[3][75:] == -1)
    np.testing.assert_array_equal(tri.point_ids[0], tri.point_ids[1])   # one track per point
    for i, T in enumerate(poses):
        np.testing.assert_allclose(invert(rec.image(i + 1).cam_from_world().matrix()), T, atol=1e-9)


def test_two_view_tracks_are_kept():
    pytest.importorskip("pycolmap")
    from lift_localizer.geometry.triangulate import triangulate

    rng = np.random.default_rng(1)
    X = rng.uniform([-1, -1, 4], [1, 1, 6], (40, 3))
    cam = Camera(640, 480, K)
    poses = [np.eye(4), make_T(np.eye(3), [0.5, 0, 0])]
    kps = [((X - T[:3, 3]) @ K.T)[:, :2] / (X - T[:3, 3])[:, 2:] for T in poses]
    ident = np.stack([np.arange(40)] * 2, 1)
    assert triangulate(["a", "b"], [cam] * 2, poses, kps, {(0, 1): ident}).num_points == 40
    assert triangulate(["a", "b"], [cam] * 2, poses, kps, {(0, 1): ident},
                       {"ignore_two_view_tracks": True}).num_points == 0


@pytest.mark.parametrize("model,count,ok", [("plumb_bob", 5, True), ("plumb_bob", 3, False), ("plumb_bob", 8, False),
                                            ("rational_polynomial", 8, True), ("rational_polynomial", 5, False),
                                            ("", 4, True), ("", 3, False), ("plumb_bob", 0, True)])
def test_camera_info_with_a_wrong_number_of_distortion_coefficients_is_refused(model, count, ok):
    import types

    from lift_localizer.geometry.camera import CameraError, camera_from_camera_info

    msg = types.SimpleNamespace(width=640, height=480, k=[500.0, 0, 320, 0, 500.0, 240, 0, 0, 1],
                                distortion_model=model, d=[0.01] * count)
    if ok:
        assert len(camera_from_camera_info(msg).dist) == count
    else:
        with pytest.raises(CameraError, match=f"{count} coefficients"):
            camera_from_camera_info(msg)
