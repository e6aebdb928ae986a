"""tools/split_bag.py (a mapping bag into a map half and a held-out half, byte for byte) and
tools/baseline_table.py (a reference pipeline's log as a per-query table)."""
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from split_bag import split  # noqa: E402

from lift_localizer.bags.reader import read_frames  # noqa: E402
from lift_localizer.bags.writer import write_bag  # noqa: E402
from lift_localizer.geometry.camera import Camera  # noqa: E402
from lift_localizer.mapping.frames import Frame  # noqa: E402


def test_every_other_posed_image_is_held_out_with_its_pose_and_camera(tmp_path):
    cam = Camera(40, 30, np.array([[50.0, 0, 19.5], [0, 50.0, 14.5], [0, 0, 1]]))
    rng = np.random.default_rng(0)
    frames = []
    for k in range(7):
        T = np.eye(4)
        T[0, 3] = k
        image = rng.integers(0, 255, (30, 40), dtype=np.uint8)
        frames.append(Frame(str(10**9 * (k + 1)), cam, T, 10**9 * (k + 1), loader=lambda im=image: im))
    write_bag(tmp_path / "bag", frames)
    assert split(tmp_path / "bag", tmp_path / "out", stride=2) == (4, 3)
    for half, expected in (("mapping", frames[0::2]), ("query", frames[1::2])):
        got = read_frames(tmp_path / "out" / half, pose_topic="/ground_truth/pose")
        assert [f.stamp_ns for f in got] == [f.stamp_ns for f in expected]
        for g, e in zip(got, expected):
            assert np.array_equal(g.image(), e.image()) and np.allclose(g.T_map_camera, e.T_map_camera)
            assert np.allclose(g.camera.K, cam.K)


def test_baseline_rows_are_read_in_order_with_failures_as_inf():
    from baseline_table import query_rows

    log = ("== set [sift 4000]\nmap: ...\n  q    kp top-k (matches)                  2D3D   inl        dt      dR\n"
           "  0  4000 3(120) 1(80)                  150    90    0.0100   0.268\n"
           "  1   812 2(3)                             3     0       inf     inf\n"
           "summary set [sift]: localized 1/2\n  5 not a row\n")
    assert query_rows(log) == [(0.01, 0.268), (float("inf"), float("inf"))]


def test_pooled_comparison_adds_the_queries_of_every_report(tmp_path, capsys, monkeypatch):
    import json

    import pooled_comparison

    for name, depth, lift_rows, sift_rows in (
            ("near", 0.5, ["1,0.001,0.1", "2,0.001,0.1"], ["1,0.001,0.1", "2,,"]),
            ("far", 50.0, ["1,0.1,0.1", "2,0.1,0.1", "3,9,9"], ["1,0.1,0.1", "2,0.5,0.1", "3,0.1,0.1"])):
        report = tmp_path / name
        report.mkdir()
        t = f"{0.02 * depth:g}m_1.1deg"
        (report / "summary.json").write_text(json.dumps({"lift": {"scene_thresholds": [t]}}))
        for features, rows in (("lift", lift_rows), ("sift", sift_rows)):
            (report / f"queries_{features}.csv").write_text(
                "name,translation_error_m,rotation_error_deg\n" + "\n".join(rows) + "\n")
    monkeypatch.setattr(sys, "argv", ["pooled_comparison.py", "--reports", str(tmp_path / "near"),
                                      str(tmp_path / "far"), "--a", "lift", "--b", "sift"])
    assert pooled_comparison.main() == 0
    out = capsys.readouterr().out
    # near: lift localizes query 2 and sift not; far: both within 1 m on queries 1 and 2, sift alone on 3
    assert "near (2 queries): (0.01 m, 1.1°) 1/0/1" in out
    assert "far (3 queries): (1 m, 1.1°) 0/1/2" in out
    assert "pooled over 5 queries of 2 reports" in out and "(0.8 % of D, 1.1°): 1 / 1 / 3" in out


def test_reprojection_by_size_is_zero_for_keypoints_on_their_points(room_scene):
    from reprojection_by_size import errors_by_size

    root, _, _ = room_scene
    e = errors_by_size(str(root / "map"), None)
    assert len(e) > 100
    # the map's points are triangulated from these keypoints: they reproject within a pixel or two
    assert np.median(e[:, 1]) < 0.5 and np.all(e[:, 0] > 0)


def test_weighted_refinement_finds_the_pose_and_down_weights_what_it_is_told_to():
    from refinement_weights import weighted_refinement

    from lift_localizer.geometry.pose import invert, make_T, pose_error, rodrigues

    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    T_cw = make_T(rodrigues(np.array([0.1, -0.2, 0.05])), np.array([0.3, -0.1, 0.2]))
    xyz = rng.uniform([-2, -2, 4], [2, 2, 8], (200, 3))
    Xc = xyz @ T_cw[:3, :3].T + T_cw[:3, 3]
    xy = Xc[:, :2] / Xc[:, 2:] * 500 + [320, 240]
    truth = invert(T_cw)
    start = truth @ make_T(rodrigues(np.array([0.01, 0.01, -0.01])), np.array([0.05, -0.03, 0.02]))
    plain = weighted_refinement(start, K, xy, xyz, np.ones(200))
    assert pose_error(plain, truth)[0] < 1e-6
    # A third of the observations off by a few pixels: told that they are imprecise (sigma 10), the
    # refinement lands nearer the truth than when all count alike.
    noisy = xy.copy()
    noisy[:70] += rng.normal(0, 3, (70, 2)) + 2
    sigma = np.ones(200)
    sigma[:70] = 10
    alike = pose_error(weighted_refinement(start, K, noisy, xyz, np.ones(200)), truth)[0]
    weighted = pose_error(weighted_refinement(start, K, noisy, xyz, sigma), truth)[0]
    assert weighted < alike / 3


def test_det_start_sigma_scores_the_start_it_writes(tmp_path):
    import cv2
    import torch
    from det_start_sigma import start_extractor

    from lift_localizer.evaluation.feature_quality import webcam_scores
    from lift_localizer.nets.det import DET, START_SIGMA_FACTOR, analytic_init

    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (120, 160)).astype(np.float32), (0, 0), 2.0)
    (tmp_path / "scene").mkdir()
    for i in range(3):   # a fixed camera that saw nothing change: every keypoint repeats and matches
        cv2.imwrite(str(tmp_path / "scene" / f"{i}.png"), image.clip(0, 255).astype(np.uint8))
    for sigma in (1.0, START_SIGMA_FACTOR):
        with start_extractor(sigma, keypoints=100) as lift:
            det = lift.lift.networks["det"].module.state_dict()
            s = webcam_scores(lift, tmp_path, scenes=("scene",), images_per_scene=3)
        assert all(torch.equal(v, det[k]) for k, v in analytic_init(DET(), sigma).state_dict().items())
        assert s["pairs"] == 3 and s["repeatability"] == 1.0 and s["precision_5px"] == 1.0


def test_ransac_seeds_localizes_every_query_with_each_seed_and_pools_its_table(room_scene, tmp_path, capsys):
    import csv

    import ransac_seeds
    from lift_localizer.mapping.frames import posed_frames

    root, cam, query = room_scene
    write_bag(tmp_path / "query", posed_frames(query, cam, 2 * 10**18))
    table = tmp_path / "room.csv"
    assert ransac_seeds.main(["--maps", f"a={root / 'map'}", f"b={root / 'map'}", "--bag", str(tmp_path / "query"),
                              "--seeds", "3", "--csv", str(table)]) == 0
    out = capsys.readouterr().out
    assert f"{len(query)} queries, RANSAC seeds 0–2" in out
    # every query of the rendered room is localized within (0.25 m, 2°) under each of the 3 seeds, by both maps
    assert out.count(f"(0.25 m, 2°): {' '.join([str(len(query))] * 3)}") == 2
    assert f"(0.25 m, 2°): {len(query):.1f} vs {len(query):.1f}, +0.0 [+0.0, +0.0]" in out
    rows = list(csv.DictReader(table.open()))
    scaled = [r for r in rows if r["threshold"] == "0.8 % of D"]
    assert len(scaled) == len(query) and all(r["rate_a"] == r["rate_b"] for r in rows)
    assert ransac_seeds.main(["--pool", str(table), str(table)]) == 0
    assert f"0.8 % of D ({2 * len(query)} queries)" in capsys.readouterr().out


def test_query_refinement_moves_disturbed_keypoints_back_onto_their_points(room_scene, tmp_path, capsys):
    import dataclasses

    import query_refinement

    from lift_localizer.geometry.pose import invert
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.mapping.io import load_map

    root, cam, query = room_scene
    scene = load_map(root / "map")
    localizer = Localizer(scene)
    image, T = query[0]
    r = localizer(image, cam)
    assert r.success
    kp = r.match_keypoints[r.inliers]
    pids = r.match_point_ids[r.inliers]
    np.testing.assert_array_equal(scene.points_xyz(pids), r.match_xyz[r.inliers])
    # Where the query sees each point: its projection at the true pose (the room is rendered exactly).
    Xc = r.match_xyz[r.inliers] @ invert(T)[:3, :3].T + invert(T)[:3, 3]
    truth = Xc[:, :2] / Xc[:, 2:] @ np.diag(cam.K[[0, 1], [0, 1]]) + cam.K[:2, 2]
    rng = np.random.default_rng(0)
    disturbed = r.features.keypoints.astype(np.float64).copy()
    disturbed[kp] = truth + rng.normal(0, 0.7, (len(kp), 2))
    disturbed = disturbed.astype(np.float32)
    q = dataclasses.replace(r.features, keypoints=disturbed)
    images = query_refinement.MapImages(str(root / "mapping"))
    index = query_refinement.observations_by_point(scene)
    aligned, counted = query_refinement.aligned_keypoints(
        image, q, kp, pids, scene, index, images, {}, 3, dict(query_refinement.default_conf))
    assert (counted > 0).mean() > 0.3
    before = np.linalg.norm(disturbed[kp] - truth, axis=1)
    after = np.linalg.norm(aligned - truth, axis=1)
    assert np.median(after[counted > 0]) < 0.5 * np.median(before[counted > 0])
    np.testing.assert_allclose(aligned[counted == 0], disturbed[kp][counted == 0], atol=1e-5)

    write_bag(tmp_path / "query", posed_frames(query, cam, 2 * 10**18))
    assert query_refinement.main(["--sets", f"{root / 'map'}:{root / 'mapping'}:{tmp_path / 'query'}",
                                  "--features", "lift"]) == 0
    out = capsys.readouterr().out
    assert f"lift map: {len(query)} of {len(query)} localized" in out
    assert "  aligned " in out and f"(n = {len(query)})" in out


def test_ransac_seeds_judges_both_maps_by_the_first_maps_scene_depth(tmp_path, monkeypatch, capsys):
    import ransac_seeds

    from lift_localizer.evaluation.thresholds import scaled_thresholds

    frames = [Frame(str(k), Camera(64, 48, np.eye(3)), np.eye(4), k) for k in range(2)]
    monkeypatch.setattr(ransac_seeds, "read_frames", lambda *a, **k: frames)
    depths = {"near": 1.0, "far": 4.0}
    monkeypatch.setattr(ransac_seeds, "seed_errors",
                        lambda m, f, g, seeds: (np.zeros((len(seeds), len(f), 2)), depths[m.name]))
    assert ransac_seeds.main(["--maps", f"a={tmp_path / 'near'}", f"b={tmp_path / 'far'}", "--bag", "q",
                              "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    for metres, degrees in scaled_thresholds(1.0):
        assert f"({metres:g} m, {degrees:g}°): 2 2" in out
    assert f"({scaled_thresholds(4.0)[0][0]:g} m" not in out


def test_match_truth_counts_right_matches_by_the_true_pose(room_scene, tmp_path, capsys):
    import csv

    import match_truth

    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.mapping.io import load_map

    root, cam, query = room_scene
    localizer = Localizer(load_map(root / "map"))
    image, T = query[0]
    r = localizer(image, cam)
    xy = cam.undistort_points(r.features.keypoints)
    right = match_truth.right_matches(r, T, xy, cam.K, 8.0)
    assert r.num_inliers <= right <= r.num_matches
    # The same matches judged by a pose 1 m off are nearly all wrong.
    shifted = T.copy()
    shifted[:3, 3] += [1.0, 0.0, 0.0]
    assert match_truth.right_matches(r, shifted, xy, cam.K, 8.0) < 0.1 * right

    write_bag(tmp_path / "query", posed_frames(query[:2], cam, 2 * 10**18))
    assert match_truth.main(["--map", str(root / "map"), "--bag", str(tmp_path / "query"),
                             "--csv", str(tmp_path / "rows.csv"), "--bins", "0,90"]) == 0
    out = capsys.readouterr().out
    assert out.count(": localized; nearest map images ") == 2
    assert out.count("  place 1: ") == 2 and "accepted" in out
    # Each accepted place's pose, judged by the ground truth: within the evaluation's wrong bound (0.25 m, 5°).
    offsets = [(float(m), float(d)) for m, d in re.findall(r"pose off by ([0-9.e-]+) m, ([0-9.e-]+)°, ", out)]
    assert len(offsets) == 2 and all(m < 0.25 and d < 5 for m, d in offsets), out
    assert out.rstrip().endswith("2 of 2 localized")
    rows = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert len(rows) == 2 and all(r["localized"] == "1" and int(r["right"]) >= int(r["inliers"]) > 0 for r in rows)
    assert all(0 <= float(r["nearest_angle_deg"]) < 90 for r in rows)
    # Both images fall in the first bin, none in the open one.
    assert "  0–90°: 2, 2, " in out and "  ≥ 90°: none" in out
    assert match_truth.main(["--map", str(root / "map"), "--bag", str(tmp_path / "query"), "--failed-only",
                             "--bins", "0,90"]) == 0
    assert capsys.readouterr().out.strip().endswith("2 of 2 localized")
    assert match_truth.main(["--pool", str(tmp_path / "rows.csv"), str(tmp_path / "rows.csv"), "--bins", "0,90"]) == 0
    out = capsys.readouterr().out
    assert "4 images of 2 runs" in out and "  0–90°: 4, 4, " in out
    # Rows against themselves: both localize all, neither has more right matches, a ratio of exactly 1.
    assert match_truth.main(["--pool", str(tmp_path / "rows.csv"), "--against", str(tmp_path / "rows.csv"),
                             "--bins", "0,90"]) == 0
    assert "  0–90°: 2, 2 / 2, 0, ×1.00 [1.00, 1.00]" in capsys.readouterr().out
    # B: the same images, none localized, each with a quarter of A's right matches (+1 − 1).
    with (tmp_path / "fewer.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "right": (int(r["right"]) + 1) // 4 - 1, "localized": 0} for r in rows)
    assert match_truth.main(["--pool", str(tmp_path / "rows.csv"), "--against", str(tmp_path / "fewer.csv"),
                             "--bins", "0,90"]) == 0
    out = capsys.readouterr().out
    ratios = [(int(r["right"]) + 1) / ((int(r["right"]) + 1) // 4) for r in rows]
    assert f"  0–90°: 2, 2 / 0, 2, ×{np.exp(np.mean(np.log(ratios))):.2f} [" in out
