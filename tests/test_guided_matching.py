"""Map-pair matching guided by the known poses (build-map --guided-matching)."""
import numpy as np
import pytest

from lift_localizer.features.matching import mutual_nearest_neighbours
from lift_localizer.features.types import Features
from lift_localizer.geometry import triangulate
from lift_localizer.geometry.camera import Camera
from lift_localizer.geometry.triangulate import epipolar_band, fundamental_from_poses, sampson_error
from lift_localizer.localization.absolute_pose import reprojection_residuals
from lift_localizer.mapping.options import default_conf
from lift_localizer.mapping.pairs import View, match_pair
from lift_localizer.synthetic import look_at

CAMERA = Camera(640, 480, np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]))


def features(keypoints: np.ndarray, descriptors: np.ndarray) -> Features:
    n = len(keypoints)
    return Features(keypoints.astype(np.float64), np.full(n, 4.0), np.zeros(n), np.ones(n),
                    descriptors.astype(np.float32), (640, 480))


def project(T_map_camera: np.ndarray, points: np.ndarray) -> np.ndarray:
    # The residuals against pixel (0, 0) are the projections themselves.
    return reprojection_residuals(T_map_camera, CAMERA.K, np.zeros((len(points), 2)), points)


@pytest.fixture(scope="module")
def repetitive_pair():
    """Two posed views of 60 points; the second view also holds, for each point, a look-alike
    (the same descriptor up to small noise) 40 px off, across the epipolar line: the repeated
    windows of a facade."""
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-1, 1, 60), rng.uniform(-0.7, 0.7, 60), rng.uniform(4, 6, 60)])
    T0 = look_at(np.array([-0.3, 0.0, 0.0]), np.array([0.0, 0.0, 5.0]))
    T1 = look_at(np.array([0.3, 0.0, 0.0]), np.array([0.0, 0.0, 5.0]))
    x0, x1 = project(T0, points), project(T1, points)
    desc = rng.normal(size=(60, 32))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    # The cameras are side by side, so epipolar lines are near horizontal: a 40 px vertical shift is
    # far outside the 4 px band.
    twins = x1 + np.array([0.0, 40.0])
    desc1 = desc + rng.normal(scale=0.01, size=desc.shape)
    twin_desc = desc1 + rng.normal(scale=1e-4, size=desc.shape)
    f0 = features(x0, desc + rng.normal(scale=0.01, size=desc.shape))
    f1 = features(np.vstack([x1, twins]), np.vstack([desc1, twin_desc]))
    return f0, f1, View(CAMERA, T0), View(CAMERA, T1)


def test_the_band_is_the_sampson_error_of_every_pair_whatever_the_block(monkeypatch):
    rng = np.random.default_rng(0)
    F = fundamental_from_poses(look_at(np.zeros(3), np.array([0.0, 0, 1])),
                               look_at(np.array([0.5, 0.1, 0]), np.array([0.0, 0, 1])), CAMERA.K, CAMERA.K)
    x0, x1 = rng.uniform(0, 640, (50, 2)), rng.uniform(0, 480, (70, 2))
    every = np.array([sampson_error(F, np.repeat(x0[i:i + 1], 70, 0), x1) for i in range(50)])
    monkeypatch.setattr(triangulate, "BAND_BLOCK_ROWS", 7)
    band = epipolar_band(F, x0, x1, 20.0)
    assert band.shape == (50, 70)
    assert 0 < band.sum() < band.size
    np.testing.assert_array_equal(band, every < 20.0)


def test_a_look_alike_outside_the_allowed_pairs_does_not_take_the_match():
    d = np.eye(3, dtype=np.float32)
    d1 = np.vstack([d, d + np.float32(1e-3)])   # each keypoint and its look-alike
    # Unconstrained, each keypoint's two candidates are equally near: the ratio test drops all three.
    d = d + np.float32(5e-4)
    assert len(mutual_nearest_neighbours(d, d1, 0.9)) == 0
    allowed = np.zeros((3, 6), bool)
    allowed[[0, 1, 2], [0, 1, 2]] = True
    np.testing.assert_array_equal(mutual_nearest_neighbours(d, d1, 0.9, allowed=allowed), [[0, 0], [1, 1], [2, 2]])
    # A keypoint with no allowed partner matches nothing (not its masked nearest).
    allowed[2, 2] = False
    np.testing.assert_array_equal(mutual_nearest_neighbours(d, d1, 0.9, allowed=allowed), [[0, 0], [1, 1]])


def test_guided_matching_keeps_the_matches_that_repeated_structure_hides(repetitive_pair):
    f0, f1, v0, v1 = repetitive_pair
    conf = dict(default_conf)
    _, verified = match_pair(f0, f1, v0, v1, conf)
    # Match-then-verify loses every point to its look-alike at the ratio test.
    assert verified is None
    raw, guided = match_pair(f0, f1, v0, v1, {**conf, "guided_matching": True})
    assert raw == len(guided) == 60
    np.testing.assert_array_equal(guided, np.column_stack([np.arange(60), np.arange(60)]))
    F = fundamental_from_poses(v0.T_map_camera, v1.T_map_camera, CAMERA.K, CAMERA.K)
    assert sampson_error(F, f0.keypoints[guided[:, 0]], f1.keypoints[guided[:, 1]]).max() < conf["epipolar_threshold_px"]


def test_guided_matching_of_an_image_without_keypoints_finds_nothing(repetitive_pair):
    f0, f1, v0, v1 = repetitive_pair
    empty = features(np.zeros((0, 2)), np.zeros((0, 32)))
    assert match_pair(empty, f1, v0, v1, {**default_conf, "guided_matching": True}) == (0, None)
    assert match_pair(f0, empty, v0, v1, {**default_conf, "guided_matching": True}) == (0, None)
