"""Keypoint refinement along tracks (mapping/keypoint_refinement.py): tracks are the match graph's
components, observations land on their reference's point, unlike patches stay put, and a build with it
triangulates the same scene with a smaller reprojection error."""
import json
import math

import cv2
import numpy as np
import pytest

from lift_localizer.features.types import Features
from lift_localizer.mapping.keypoint_refinement import refine_keypoints, tracks
from lift_localizer.synthetic import make_texture


def test_tracks_are_the_components_of_the_match_graph():
    # image 0 kp 0 ↔ image 1 kp 1 ↔ image 2 kp 2; image 0 kp 2 ↔ image 1 kp 0; the rest unmatched.
    matches = {(0, 1): np.array([[0, 1], [2, 0]]), (1, 2): np.array([[1, 2]])}
    label = tracks([3, 3, 3], matches)
    assert label.shape == (9,)
    assert label[0] == label[4] == label[8] >= 0
    assert label[2] == label[3] >= 0 and label[2] != label[0]
    assert (label[[1, 5, 6, 7]] == -1).all()
    assert (tracks([2, 2], {}) == -1).all()


def test_tracks_join_chains_longer_than_one_pass():
    # a chain 0-1-2-…-9 over ten images, listed from its far end: one track.
    matches = {(i, i + 1): np.array([[0, 0]]) for i in reversed(range(9))}
    label = tracks([1] * 10, matches)
    assert (label == 0).all()


def _features(xy: np.ndarray, size: float, angle: float, score: float) -> Features:
    n = len(xy)
    return Features(xy.astype(np.float32), np.full(n, size, np.float32), np.full(n, angle, np.float32),
                    np.full(n, score, np.float32), np.zeros((n, 4), np.float32), (480, 640))


def _pair(similar: bool, seed: int = 0):
    """Image 0 and image 1 = image 0 rotated by 20°, scaled by 1.3 and shifted by a fraction of a pixel
    (or another texture); keypoints at corners of image 0 (as a detector finds them: a point on a
    straight edge is not pinned down along it), their true places in image 1 and those moved by up to
    1 pixel (the detector's noise)."""
    tex = make_texture(1024, seed=0)
    a = np.ascontiguousarray(tex[200:680, 200:840]).astype(np.float32)
    angle, scale = math.radians(20.0), 1.3
    M = cv2.getRotationMatrix2D((320.0, 240.0), -20.0, scale)   # OpenCV's angle turns the other way
    M[:, 2] += (0.37, -0.21)
    other = a if similar else np.ascontiguousarray(make_texture(1024, seed=7)[200:680, 200:840]).astype(np.float32)
    b = cv2.warpAffine(other, M, (640, 480), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros(a.shape, np.uint8)
    mask[160:320, 220:420] = 1
    xy_a = cv2.goodFeaturesToTrack(a, 30, 0.01, 12, mask=mask, blockSize=7)[:, 0].astype(np.float64)
    truth = xy_a @ M[:, :2].T + M[:, 2]
    rng = np.random.default_rng(seed)
    noisy = truth + rng.uniform(-1.0, 1.0, truth.shape)
    size = 10.0
    feats = [_features(xy_a, size, 0.0, 2.0), _features(noisy, size * scale, angle, 1.0)]
    matches = {(0, 1): np.stack([np.arange(len(xy_a))] * 2, 1)}
    return [a, b], feats, matches, truth, noisy


def test_observations_land_on_the_reference_point():
    images, feats, matches, truth, noisy = _pair(similar=True)
    refined, stats = refine_keypoints(lambda k: images[k], feats, matches, {"centre": False})
    # Both observations have one match; image 0 scores higher, so it is the reference and stays.
    np.testing.assert_array_equal(refined[0], feats[0].keypoints)
    before = np.linalg.norm(noisy - truth, axis=1)
    after = np.linalg.norm(refined[1] - truth, axis=1)
    assert stats.refined == len(truth) and stats.rejected == 0
    assert np.median(before) > 0.5
    assert np.median(after) < 0.05 and after.max() < 0.2, after


def test_a_centred_track_keeps_the_mean_of_its_detections():
    # Aligned, and then moved together to the mean of where the detector put them: in image 1 the pair
    # lands half-way between the reference's point (the truth) and image 1's own detection.
    images, feats, matches, truth, noisy = _pair(similar=True)
    refined, stats = refine_keypoints(lambda k: images[k], feats, matches)
    M = cv2.getRotationMatrix2D((320.0, 240.0), -20.0, 1.3)
    M[:, 2] += (0.37, -0.21)
    consistency = np.linalg.norm(refined[0] @ M[:, :2].T + M[:, 2] - refined[1], axis=1)
    assert np.median(consistency) < 0.05 and consistency.max() < 0.2, consistency
    middle = np.linalg.norm(refined[1] - (truth + noisy) / 2, axis=1)
    assert np.median(middle) < 0.05 and middle.max() < 0.2, middle
    assert np.median(np.linalg.norm(refined[0] - feats[0].keypoints, axis=1)) > 0.15   # the reference moved too


def test_unlike_patches_stay_where_the_detector_put_them():
    images, feats, matches, truth, noisy = _pair(similar=False)
    refined, stats = refine_keypoints(lambda k: images[k], feats, matches)
    np.testing.assert_array_equal(refined[1], feats[1].keypoints)
    assert stats.refined == 0 and stats.rejected == len(truth)


def test_keypoints_without_a_track_are_not_read():
    images, feats, _, _, _ = _pair(similar=True)
    read = []
    refined, stats = refine_keypoints(lambda k: read.append(k) or images[k], feats, {})
    assert read == [] and stats.observations == 0
    np.testing.assert_array_equal(refined[1], feats[1].keypoints)


def test_a_refined_map_reprojects_better(tmp_path):
    pytest.importorskip("pycolmap")
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.build import build_map
    from lift_localizer.mapping.frames import Frame
    from lift_localizer.synthetic import room_sequence

    K, mapping, _ = room_sequence(10, 0, image_size=(240, 320))
    camera = Camera(320, 240, K)
    frames = [Frame(f"{i}", camera, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
    # SIFT for speed: the refinement reads keypoint frames, whichever extractor made them.
    plain = build_map(frames, tmp_path / "plain", ("sift",), {"max_keypoints": 400}, log=lambda m: None)["sift"]
    refined = build_map(frames, tmp_path / "refined", ("sift",), {"max_keypoints": 400, "refine_keypoints": True},
                        log=lambda m: None)["sift"]
    assert refined["refinement"]["refined"] > 0.3 * refined["refinement"]["observations"]
    assert refined["mean_reprojection_error_px"] < 0.85 * plain["mean_reprojection_error_px"]
    assert refined["points"] >= 0.9 * plain["points"]
    assert "refinement" not in plain
    meta = json.loads((tmp_path / "refined" / "map.json").read_text())
    assert meta["parameters"]["refine_keypoints"] is True
    assert meta["statistics"]["refinement"] == refined["refinement"]
