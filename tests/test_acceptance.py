"""The evidence for a pose and the tests that refuse it: spread of the inliers, a rival pose among
the outliers, and the calibrated covariance, on synthetic correspondences with exact geometry."""
import numpy as np
import pytest

from lift_localizer.geometry.pose import make_T, rodrigues
from lift_localizer.localization.absolute_pose import calibrate_covariance, estimate_pose
from lift_localizer.localization.acceptance import (CLUSTERED, RIVAL, TOO_FEW_INLIERS, coverage, pose_evidence,
                                                    refusal)
from lift_localizer.localization.localizer import default_conf

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
SIZE = (640, 480)


def project(T_map_camera: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    Xc = (xyz - T_map_camera[:3, 3]) @ T_map_camera[:3, :3]
    return (Xc @ K.T)[:, :2] / Xc[:, 2:]


def points_seen(T: np.ndarray, n: int, rng, box=((-2, -1.5), (2, 1.5))) -> np.ndarray:
    """n map points in front of camera T, spread over the image region ``box`` (at depth 1)."""
    lo, hi = np.array(box[0]), np.array(box[1])
    z = rng.uniform(3, 7, n)
    xy = rng.uniform(lo, hi, (n, 2)) * z[:, None] / 2
    return np.c_[xy, z] @ T[:3, :3].T + T[:3, 3]


def evidence_for(xy, xyz, keypoints=None):
    keypoints = xy if keypoints is None else keypoints
    est = estimate_pose(xy, xyz, K, SIZE, 4.0, "opencv")
    return est, pose_evidence(est, xy, xyz, keypoints, np.arange(len(xy)), K, SIZE, 4.0, "opencv")


def test_coverage_counts_only_cells_that_have_keypoints():
    keypoints = np.array([[10.0, 10], [630, 10], [10, 470], [630, 470]])
    assert coverage(keypoints, keypoints[:1], SIZE) == 0.25
    assert coverage(keypoints, keypoints, SIZE) == 1.0
    # A black background (no keypoints) does not count against a pose.
    assert coverage(keypoints[:2], keypoints[:2], SIZE) == 1.0
    assert coverage(np.zeros((0, 2)), np.zeros((0, 2)), SIZE) == 0.0


def test_a_well_supported_pose_passes_every_default_test():
    rng = np.random.default_rng(0)
    T = make_T(rodrigues([0.1, -0.2, 0.05]), [0.3, -0.1, 0.2])
    xyz = points_seen(T, 150, rng)
    xy = project(T, xyz) + rng.normal(0, 0.5, (150, 2))
    junk = rng.uniform([0, 0], SIZE, (50, 2)), points_seen(T, 50, rng)
    est, ev = evidence_for(np.r_[xy, junk[0]], np.r_[xyz, junk[1]])
    assert ev.inliers >= 145 and ev.coverage > 0.6 and ev.rival_ratio < 0.2
    assert refusal(ev, default_conf) is None
    assert 4.5 < ev.depth < 5.5


def test_a_rival_pose_among_the_outliers_is_refused():
    """Two places that look alike: the matches hold two consistent sets, one a little larger."""
    rng = np.random.default_rng(1)
    T = make_T(rodrigues([0.1, -0.2, 0.05]), [0.3, -0.1, 0.2])
    T_other = make_T(rodrigues([0.0, 0.6, 0.0]), [2.0, 0.0, 1.0])
    a, b = points_seen(T, 60, rng), points_seen(T_other, 50, rng)
    xy = np.r_[project(T, a), project(T_other, b)] + rng.normal(0, 0.3, (110, 2))
    est, ev = evidence_for(xy, np.r_[a, b])
    assert ev.inliers >= 55 and 45 <= ev.rival_inliers <= 55
    assert refusal(ev, default_conf).startswith(RIVAL)
    assert refusal(ev, {**default_conf, "max_rival_ratio": None}) is None


def test_inliers_in_one_corner_of_a_textured_image_are_refused():
    rng = np.random.default_rng(2)
    T = make_T(rodrigues([0.0, 0.1, 0.0]), [0.0, 0.0, 0.0])
    xyz = points_seen(T, 40, rng, box=((-2, -1.5), (-1.8, -1.3)))      # a top-left corner patch
    xy = project(T, xyz) + rng.normal(0, 0.3, (40, 2))
    keypoints = np.r_[xy, rng.uniform([0, 0], SIZE, (400, 2))]         # keypoints all over the image
    est, ev = evidence_for(xy, xyz, keypoints[:40])
    ev_full = pose_evidence(est, xy, xyz, keypoints, np.arange(40), K, SIZE, 4.0, "opencv")
    assert ev_full.coverage < 0.05 < ev.coverage
    assert refusal(ev_full, default_conf).startswith(CLUSTERED)


def test_the_inlier_tests_come_first_and_say_their_numbers():
    rng = np.random.default_rng(3)
    T = np.eye(4)
    xyz = points_seen(T, 12, rng)
    est, ev = evidence_for(project(T, xyz), xyz)
    assert refusal(ev, default_conf) == f"{TOO_FEW_INLIERS} (12 < {default_conf['min_inliers']})"
    # A pose the inlier tests refuse is not searched for a rival, and is refused the same way.
    quick = pose_evidence(est, project(T, xyz), xyz, project(T, xyz), np.arange(12), K, SIZE, 4.0, "opencv",
                          find_rival=False)
    assert quick.rival_inliers is None and ev.rival_inliers is not None
    assert refusal(quick, default_conf) == refusal(ev, default_conf)


def test_calibrated_covariance_weakens_correlations_and_keeps_symmetry():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(6, 6))
    cov = A @ A.T + np.diag([1, 1, 1, 1, 1, 1e-3])
    out = calibrate_covariance(cov, 1.25, 0.5)
    np.testing.assert_allclose(out, out.T)
    np.testing.assert_allclose(np.diag(out), 1.25 * 1.5 * np.diag(cov))
    corr = lambda c: c / np.sqrt(np.outer(np.diag(c), np.diag(c)))   # noqa: E731
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(corr(out)[off], corr(cov)[off] / 1.5)
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_an_unknown_covariance_stays_infinite_not_nan():
    # What estimate_pose gives a pose of fewer than 4 inliers; the default (scale 1, decorrelation 0).
    with np.errstate(invalid="raise"):
        out = calibrate_covariance(np.full((6, 6), np.inf), 1.0, 0.0)
    assert np.all(np.isposinf(out))


@pytest.mark.parametrize("key", ["min_coverage", "max_rival_ratio", "covariance_scale", "covariance_decorrelation"])
def test_the_chosen_bounds_are_the_defaults_everywhere(key):
    """The localizer, the node's parameter file and the command line share the chosen values."""
    import yaml
    from pathlib import Path

    config = yaml.safe_load((Path(__file__).parents[1] / "config" / "localizer.yaml").read_text())
    assert config["lift_localizer"]["ros__parameters"][key] == default_conf[key]
    from lift_localizer.commands import localizer_conf
    from lift_localizer.cli import build_parser

    args = build_parser().parse_args(["localize", "--map", "m", "--bag", "b", "--output", "o"])
    assert localizer_conf(args)[key] == default_conf[key]


def _posed_scene(pos_std: float, rot_std_deg: float, seed: int = 5):
    """A map whose 16 images see 400 points (0.3 px noise) but whose recorded poses are the true ones
    disturbed by ``pos_std`` and ``rot_std_deg`` per axis, as a GPS/INS or a motion capture records
    them; the points are triangulated from the recorded poses. Also 16 query views between the map
    images, with their true and recorded poses and what they see."""
    from lift_localizer.features.types import Features
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.io import Map, MapImage
    from lift_localizer.synthetic import look_at

    rng = np.random.default_rng(seed)
    cam = Camera(640, 480, K)
    truth = rng.uniform(-1, 1, (400, 3))
    az = np.arctan2(truth[:, 0], -truth[:, 2]) % (2 * np.pi)

    def view(a: float):
        T = look_at(np.array([6 * np.sin(a), 0.5 * np.cos(3 * a), -6 * np.cos(a)]), np.zeros(3))
        recorded = make_T(rodrigues(np.radians(rot_std_deg) * rng.normal(size=3)) @ T[:3, :3],
                          T[:3, 3] + pos_std * rng.normal(size=3))
        seen = np.flatnonzero(np.abs((az - a + np.pi) % (2 * np.pi) - np.pi) < 1.0)
        return T, recorded, seen, project(T, truth) + rng.normal(0, 0.3, (400, 2))

    maps = [view(2 * np.pi * k / 16) for k in range(16)]
    queries = [view(2 * np.pi * (k + 0.5) / 16) for k in range(16)]
    xyz = np.zeros((400, 3))
    for p in range(400):
        rows = []
        for _, rec, seen, xy in maps:
            if p in seen:
                P = K @ np.linalg.inv(rec)[:3]
                rows += [xy[p, 0] * P[2] - P[0], xy[p, 1] * P[2] - P[1]]
        X = np.linalg.svd(np.array(rows))[2][-1]
        xyz[p] = X[:3] / X[3]
    images = []
    for k, (_, rec, seen, xy) in enumerate(maps):
        ids = np.full(400, -1)
        ids[seen] = seen
        f = Features(xy.astype(np.float32), np.ones(400), np.zeros(400), np.ones(400),
                     np.zeros((400, 128), np.float32), (480, 640))
        images.append(MapImage(str(k), cam, rec, f, ids))
    return Map(None, {"features": {"name": "sift"}}, images, np.arange(400), xyz), queries


def test_the_map_floor_predicts_the_error_of_queries_against_their_recorded_poses():
    """Recorded poses off by 1 cm and 0.2° per axis: a query localized against the map is off its
    own recorded pose by what the floor says (within a factor 1.6); with exact poses, a small one."""
    from lift_localizer.geometry.pose import pose_error_vector
    from lift_localizer.localization.map_accuracy import pose_floor

    map_, queries = _posed_scene(0.01, 0.2)
    errors = []
    for _, recorded, seen, xy in queries:
        est = estimate_pose(xy[seen], map_.xyz[seen], K, SIZE, 4.0, "opencv")
        errors.append(pose_error_vector(est.T_map_camera, recorded))
    rms = np.sqrt(np.mean(np.square(errors), 0))
    floor = np.sqrt(pose_floor(map_))
    for block in (slice(0, 3), slice(3, 6)):
        ratio = floor[block].mean() / np.sqrt(np.mean(rms[block] ** 2))
        assert 1 / 1.6 < ratio < 1.6, (block, floor, rms)
    # Exact poses: what is left is the map points' own triangulation noise (0.3 px), far less.
    exact = np.sqrt(pose_floor(_posed_scene(0.0, 0.0)[0]))
    assert exact[0] < 0.25 * floor[0] and exact[3] < 0.25 * floor[3]


def test_a_pose_near_the_worse_part_of_a_map_gets_its_larger_floor():
    from lift_localizer.localization.map_accuracy import MapAccuracy

    centres = np.c_[np.arange(10.0), np.zeros(10), np.zeros(10)]        # a drive along x
    excess = np.full((10, 6), 1e-4)
    excess[:3] = 0.01                                                    # its start is worse
    acc = MapAccuracy(np.full(6, 1e-4), centres, excess)
    np.testing.assert_allclose(acc.at(np.array([0.5, 0, 0])), 0.01)
    np.testing.assert_allclose(acc.at(np.array([8.0, 0, 0])), 1e-4)
    # never below the map's floor, even where the nearest images did better than it
    excess[5:] = -1.0
    np.testing.assert_allclose(acc.at(np.array([8.0, 0, 0])), 1e-4)
