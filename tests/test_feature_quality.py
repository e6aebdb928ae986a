"""ScanNet epipolar matching in ``evaluate-features`` (lift_localizer/evaluation/feature_quality.py):
the pose / intrinsics conventions, on a synthetic pair built as pairs_with_gt.txt states them and
on hand-picked correspondences in the real ScanNet pairs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import shared_path
from lift_localizer.evaluation.feature_quality import (pose_auc, read_scannet_pairs, relative_pose_error_deg,
                                                          scannet_scores, symmetric_epipolar_px, top_k)
from lift_localizer.features.types import Features

K0 = np.array([[1163.45, 0.0, 653.626], [0.0, 1164.79, 481.6], [0.0, 0.0, 1.0]])
K1 = np.array([[1100.0, 0.0, 640.0], [0.0, 1120.0, 470.0], [0.0, 0.0, 1.0]])  # unlike K0, so K0/K1 swaps show


def _rot(axis, deg):
    return cv2.Rodrigues(np.asarray(axis, np.float64) / np.linalg.norm(axis) * np.radians(deg))[0]


def _pose(R, c):
    """T_world_cam (camera-to-world, as ScanNet's pose files) from a rotation and a centre."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, c
    return T


def _synthetic_pair(n=200, seed=0):
    """Points seen by two cameras 1 m apart with a 25 degree turn, and the pairs_with_gt T_0to1."""
    rng = np.random.default_rng(seed)
    T_w0 = _pose(_rot([0.1, 1, 0.05], -10), [0.0, 0.0, 0.0])
    T_w1 = _pose(_rot([0.2, 1, -0.1], 15), [1.0, 0.15, 0.3])
    T_0to1 = np.linalg.inv(T_w1) @ T_w0  # camera-0 coordinates -> camera-1 coordinates
    X0 = np.c_[rng.uniform(-1.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(2.5, 6, n)]  # camera-0 frame
    X1 = X0 @ T_0to1[:3, :3].T + T_0to1[:3, 3]
    keep = X1[:, 2] > 0.5
    x0 = X0[keep] @ K0.T
    x1 = X1[keep] @ K1.T
    return x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:], T_0to1


def _pairs_line(name0, name1, K0, K1, T):
    nums = np.r_[K0.ravel(), K1.ravel(), T.ravel()]
    return " ".join([name0, name1, "0", "0"] + [f"{v:.10g}" for v in nums])


def test_synthetic_pair_read_back_has_zero_epipolar_error(tmp_path):
    xy0, xy1, T = _synthetic_pair()
    (tmp_path / "pairs_with_gt.txt").write_text(_pairs_line("a.png", "b.png", K0, K1, T) + "\n")
    [(name0, name1, k0, k1, t)] = read_scannet_pairs(tmp_path)
    assert (name0, name1) == ("a.png", "b.png")
    np.testing.assert_allclose(k0, K0)
    np.testing.assert_allclose(k1, K1)
    np.testing.assert_allclose(t, T, atol=1e-9)
    assert symmetric_epipolar_px(xy0, xy1, k0, k1, t).max() < 1e-6
    # Every convention slip is far off: pose inverted (= F transposed), R transposed, images or K swapped.
    wrong = {"inverted": (xy0, xy1, k0, k1, np.linalg.inv(t)),
             "R transposed": (xy0, xy1, k0, k1, np.r_[np.c_[t[:3, :3].T, t[:3, 3]], [[0, 0, 0, 1]]]),
             "images swapped": (xy1, xy0, k0, k1, t),
             "K swapped": (xy0, xy1, k1, k0, t)}
    for name, args in wrong.items():
        assert np.median(symmetric_epipolar_px(*args)) > 5.0, name


def test_epipolar_distance_is_in_pixels():
    """Moving a point d px across its epipolar line gives an error of at least d (the larger of the
    two one-sided distances; the image-1 one is exactly d)."""
    xy0, xy1, T = _synthetic_pair(n=50)
    F = np.linalg.inv(K1).T @ np.array([[0, -T[2, 3], T[1, 3]], [T[2, 3], 0, -T[0, 3]], [-T[1, 3], T[0, 3], 0]]) \
        @ T[:3, :3] @ np.linalg.inv(K0)
    lines = np.c_[xy0, np.ones(len(xy0))] @ F.T
    normal = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
    for d in (1.0, 3.0, 7.5):
        err = symmetric_epipolar_px(xy0, xy1 + d * normal, K0, K1, T)
        assert np.all(err >= d - 1e-6)
        assert np.all(err < 20 * d)


def test_zero_baseline_is_refused():
    T = np.eye(4)
    T[:3, :3] = _rot([0, 1, 0], 10)
    with pytest.raises(ValueError, match="no translation"):
        symmetric_epipolar_px(np.zeros((3, 2)), np.ones((3, 2)), K0, K0, T)


class _OracleExtractor:
    """Returns given keypoints for an image of a given width (images are told apart by size), with
    descriptors that make keypoint i of image 0 the mutual nearest neighbour of keypoint i of image 1."""

    def __init__(self, by_width, scores=None):
        self.by_width = by_width
        self.scores = scores

    def __call__(self, gray):
        xy = self.by_width[gray.shape[1]]
        n = len(xy)
        desc = np.eye(n, 128, dtype=np.float32)
        scores = np.ones(n, np.float32) if self.scores is None else self.scores[:n]
        return Features(xy.astype(np.float32), np.ones(n, np.float32), np.zeros(n, np.float32),
                        scores, desc, gray.shape, {})


def test_scannet_scores_on_a_synthetic_pair(tmp_path):
    xy0, xy1, T = _synthetic_pair(n=120)
    n = min(len(xy0), 100)
    xy0, xy1 = xy0[:n], xy1[:n]
    wrong = n // 4  # the last quarter of image 1's keypoints moved 40 px off: wrong matches
    xy1 = xy1.copy()
    xy1[-wrong:] += np.array([0.0, 40.0])
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((968, 1296), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((960, 1280), np.uint8))
    (tmp_path / "pairs_with_gt.txt").write_text(_pairs_line("a.png", "b.png", K0, K1, T) + "\n")
    r = scannet_scores({"oracle": _OracleExtractor({1296: xy0, 1280: xy1})}, tmp_path)["oracle"]
    expected = (n - wrong) / n
    for k in ("1px", "3px", "5px", "10px"):
        assert r["precision"][k] == pytest.approx(expected)
    assert r["matching_score_5px"] == pytest.approx(expected)
    assert r["correct_5px"] == n - wrong
    assert r["pairs"] == 1
    # 75 % right matches: RANSAC recovers the pose (pose AUC near 1 at every threshold)
    assert r["pose_errors_deg"][0] < 0.5 and r["pose_auc"]["20deg"] > 0.97


def test_scannet_scores_compare_extractors_at_equal_keypoint_counts(tmp_path):
    """An extractor that adds low-scoring keypoints is cut back to the other's count (by score) for
    the headline figures; its own-budget figures keep them."""
    xy0, xy1, T = _synthetic_pair(n=120)
    n = min(len(xy0), 80)
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((968, 1296), np.uint8))
    cv2.imwrite(str(tmp_path / "images" / "b.png"), np.zeros((960, 1280), np.uint8))
    (tmp_path / "pairs_with_gt.txt").write_text(_pairs_line("a.png", "b.png", K0, K1, T) + "\n")
    few = _OracleExtractor({1296: xy0[:40], 1280: xy1[:40]})
    # 40 right matches scored high, then 40 wrong ones (shifted 40 px) scored low: given in an order
    # that interleaves them, so only a cut by score keeps the right ones.
    moved = xy1[40:n] + np.array([0.0, 40.0])
    order = np.random.default_rng(0).permutation(n)
    scores = np.r_[np.full(40, 2.0), np.full(n - 40, 1.0)].astype(np.float32)[order]
    many = _OracleExtractor({1296: xy0[:n][order], 1280: np.r_[xy1[:40], moved][order]}, scores)
    r = scannet_scores({"few": few, "many": many}, tmp_path)
    assert r["few"]["matching_score_5px"] == pytest.approx(1.0)
    assert r["many"]["keypoints"] == 40
    assert r["many"]["matching_score_5px"] == pytest.approx(1.0)
    assert r["many"]["at_budget"]["keypoints"] == n
    assert r["many"]["at_budget"]["matching_score_5px"] == pytest.approx(40 / n)


def test_top_k_keeps_the_highest_scores():
    f = Features(np.arange(10, dtype=np.float32).reshape(5, 2), np.ones(5, np.float32), np.zeros(5, np.float32),
                 np.array([0.1, 0.9, 0.5, 0.7, 0.2], np.float32), np.eye(5, 128, dtype=np.float32), (10, 10), {})
    t = top_k(f, 3)
    assert t.scores.tolist() == pytest.approx([0.9, 0.7, 0.5])
    assert t.keypoints[:, 0].tolist() == [2, 6, 4]
    assert len(top_k(f, 10)) == 5


def test_scannet_scores_refuses_images_resized_without_k(tmp_path):
    """SuperGlue ships these pairs at 640x480 with K for 1296x968: that must not pass silently."""
    xy0, xy1, T = _synthetic_pair(n=20)
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / "images" / name), np.zeros((480, 640), np.uint8))
    (tmp_path / "pairs_with_gt.txt").write_text(_pairs_line("a.png", "b.png", K0, K0, T) + "\n")
    with pytest.raises(ValueError, match="another resolution"):
        scannet_scores({"oracle": _OracleExtractor({640: xy0})}, tmp_path)


# Correspondences picked by hand (full-resolution pixels) in two ScanNet pairs: phone-screen corners in
# scene0711, picture corners and a detail in scene0758. Image blur makes them good to a few pixels.
HAND_PICKED = {
    ("scene0711_00_frame-001680.jpg", "scene0711_00_frame-001995.jpg"): (
        [(1010, 201), (1045, 196), (1056, 236), (1020, 244)],
        [(828, 320), (917, 323), (912, 388), (823, 382)]),
    ("scene0758_00_frame-000165.jpg", "scene0758_00_frame-000510.jpg"): (
        [(798.5, 271.5), (800, 367.5), (801, 222.5), (791, 165)],
        [(173.5, 182.5), (189, 306), (161, 114), (139, 35)]),
}


def test_real_scannet_pairs_hand_picked_correspondences_fit_the_ground_truth():
    root = shared_path("raw", "scannet_pairs")
    pairs = {(a, b): (k0, k1, T) for a, b, k0, k1, T in read_scannet_pairs(root)}
    for key, (p0, p1) in HAND_PICKED.items():
        assert key in pairs, key
        k0, k1, T = pairs[key]
        for name in key:
            assert cv2.imread(str(root / "images" / name), cv2.IMREAD_UNCHANGED).shape[:2] == (968, 1296)
        p0, p1 = np.array(p0, np.float64), np.array(p1, np.float64)
        err = symmetric_epipolar_px(p0, p1, k0, k1, T)
        assert err.max() < 8.0, (key, err)
        assert np.median(symmetric_epipolar_px(p0, p1, k0, k1, np.linalg.inv(T))) > 100.0, key


def test_relative_pose_error_from_exact_matches_and_its_failures():
    xy0, xy1, T = _synthetic_pair(n=120)
    assert relative_pose_error_deg(xy0, xy1, K0, K1, T) < 0.1
    # the pose the wrong way round (camera 1 to camera 0) is far off
    assert relative_pose_error_deg(xy0, xy1, K0, K1, np.linalg.inv(T)) > 5.0
    # the translation's sign is unobservable from matches: -t reads as the same pose
    flipped = T.copy()
    flipped[:3, 3] *= -1
    assert relative_pose_error_deg(xy0, xy1, K0, K1, flipped) < 0.1
    assert relative_pose_error_deg(xy0[:4], xy1[:4], K0, K1, T) == float("inf")


def test_pose_auc_hand_computed():
    # errors 0 and 10 of 2 pairs, SuperGlue's trapezoids: recall 0.5 from 0, (0, 0.5) to (10, 1), then 1;
    # cut at a threshold with the recall reached below it: AUC@5 = 0.5, AUC@20 = (10 * 0.75 + 10 * 1) / 20
    r = pose_auc([0.0, 10.0], (5.0, 20.0))
    assert r["5deg"] == pytest.approx(0.5) and r["20deg"] == pytest.approx(0.875)
    assert pose_auc([float("inf")] * 3)["20deg"] == 0.0
    assert pose_auc([0.0] * 3)["5deg"] == pytest.approx(1.0)


def test_evaluate_features_describes_with_the_lift_it_is_asked_for(tmp_path, monkeypatch):
    """--upright, --preset and --det reach LIFT's extractor (SIFT unchanged); the JSON records them."""
    import json

    import lift_localizer.evaluation.feature_quality as fq
    from lift_localizer.cli import main

    made = {}

    def fake_make(name, conf):
        made[name] = conf
        return name

    (tmp_path / "raw" / "webcam").mkdir(parents=True)   # no ScanNet, no reference: the Webcam part only
    monkeypatch.setattr(fq, "make_extractor", fake_make)
    monkeypatch.setattr(fq, "webcam_scores", lambda ex, *a, **k: {"repeatability": 0.5, "precision_5px": 0.5,
                                                                    "pairs": 1})
    assert main(["evaluate-features", "--data", str(tmp_path), "--upright", "--preset", "paper", "--det", "det",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert made["lift"]["upright"] and made["lift"]["min_scale_log2"] == 1.0 and made["lift"]["weights"] == {"det": "det"}
    assert "upright" not in made["sift"] and "min_scale_log2" not in made["sift"]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["upright"] and result["preset"] == "paper"
    assert main(["evaluate-features", "--data", str(tmp_path), "--det", str(tmp_path / "none")]) == 2
