"""Where does an image fail between retrieval and pose? Its 2D-3D matches judged by its ground truth.

For each image of a posed bag, each covisibility place the localizer tries (as shipped, best-ranked
first): its 2D-3D matches, how many of them are right (the ground-truth pose projects the match's 3D
point within ``--threshold`` px of its keypoint), the PnP inliers, how far RANSAC's pose lies from the
ground truth, and whether the pose is accepted or why not.
Beside it, the map images whose optical axes are nearest the image's, with the angle and their
retrieval rank. An image with few right matches among many, while its nearest map images are
retrieved, fails at matching descriptors; one whose nearest map images are not retrieved fails at
retrieval; one with many right matches but no pose fails at RANSAC or acceptance. A place refused
for too few inliers whose pose is off by more than the evaluation's wrong bound would be a wrong
accept under a lower ``min_inliers``, not a rescued one.

    python tools/match_truth.py --map MAP --bag BAG [--features lift] [--threshold 8] [--failed-only]
                                [--csv ROWS.csv] [--bins 0,10,20,30,45]
    python tools/match_truth.py --pool ROWS.csv... [--against B_ROWS.csv...] [--bins ...]

``--pool`` sums several runs' rows; with ``--against`` (the same images' rows of another feature set
or build, the files in the same order) it compares them paired, bin by bin: images localized by
each, and the geometric mean of (right + 1) / (B's right + 1) with its bootstrap 95 % interval.

``--csv`` writes one row per image (its nearest map view's angle and rank; the matches, right
matches and inliers of the place that decided it: the accepted one, else the one with the most
inliers). The images are also summed by the angle to their nearest map view (``--bins``): how the
matching holds up as the viewpoint moves away from the map's. Use it on held-out mapping images
(tools/split_bag.py) or a query half; it chooses nothing.
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from lift_localizer.bags.reader import read_frames
from lift_localizer.evaluation.paired import bootstrap_mean_interval
from lift_localizer.geometry.pose import pose_error
from lift_localizer.images import to_gray
from lift_localizer.localization.absolute_pose import reprojection_residuals
from lift_localizer.localization.localizer import Localizer, LocalizationResult
from lift_localizer.mapping.io import MapError, load_map


def right_matches(result: LocalizationResult, T_map_camera: np.ndarray, xy_undistorted: np.ndarray, K: np.ndarray,
                  threshold_px: float) -> int:
    """How many of a place's 2D-3D matches the true pose projects within ``threshold_px`` of their keypoint."""
    if result.match_keypoints is None or len(result.match_keypoints) == 0:
        return 0
    r = reprojection_residuals(T_map_camera, K, xy_undistorted[result.match_keypoints], result.match_xyz)
    return int((np.linalg.norm(r, axis=1) < threshold_px).sum())


def nearest_views(axes: np.ndarray, T_map_camera: np.ndarray, count: int = 3) -> list[tuple[int, float]]:
    """The ``count`` map images whose optical axes are nearest the image's: (index, angle in degrees)."""
    angle = np.degrees(np.arccos(np.clip(axes @ T_map_camera[:3, 2], -1, 1)))
    return [(int(i), float(angle[i])) for i in np.argsort(angle, kind="stable")[:count]]


def angle_bins(rows: list[dict], edges: list[float]) -> list[tuple[str, np.ndarray]]:
    """(label, indices of ``rows``) for each bin of the angle to the nearest map view; the last bin is open."""
    bins = np.digitize([r["nearest_angle_deg"] for r in rows], edges[1:])
    return [(f"{edges[b]:g}–{edges[b + 1]:g}°" if b + 1 < len(edges) else f"≥ {edges[b]:g}°", np.flatnonzero(bins == b))
            for b in range(len(edges))]


def print_bins(rows: list[dict], edges: list[float]) -> None:
    """The images summed by the angle to their nearest map view: how many, localized, and the median
    matches, right matches and share right of their deciding place."""
    print("by the angle to the nearest map view: images, localized, median matches / right / share right")
    for label, idx in angle_bins(rows, edges):
        sel = [rows[i] for i in idx]
        if not sel:
            print(f"  {label}: none")
            continue
        share = [r["right"] / r["matches"] for r in sel if r["matches"]]
        print(f"  {label}: {len(sel)}, {sum(r['localized'] for r in sel):.0f}, "
              f"{np.median([r['matches'] for r in sel]):.0f} / {np.median([r['right'] for r in sel]):.0f} / "
              + (f"{100 * np.median(share):.1f} %" if share else "–"))


def tried_places(localizer: Localizer, frame) -> tuple[list[LocalizationResult], np.ndarray]:
    """The places the localizer tries for ``frame``, up to the accepted one (as it stops there), and the
    frame's undistorted keypoints."""
    q = localizer.extract(to_gray(frame.image()), frame.camera)
    results = []
    for r in localizer.cluster_results(q, frame.camera, {}):
        results.append(r)
        if r.success:
            break
    return results, frame.camera.undistort_points(q.keypoints)


def read_rows(paths: list[str]) -> list[dict]:
    """The rows of --csv files, in order, with their numbers as floats."""
    rows = [dict(r) for path in paths for r in csv.DictReader(open(path, newline=""))]
    for r in rows:
        for key in ("nearest_angle_deg", "matches", "right", "inliers", "localized"):
            r[key] = float(r[key])
    return rows


def print_paired_bins(rows_a: list[dict], rows_b: list[dict], edges: list[float]) -> None:
    """Per bin of the angle to the nearest map view: images localized by A and by B, images where A has
    more right matches, and the geometric mean of (A's right + 1) / (B's right + 1), 95 % interval."""
    print("paired with --against: images, localized A / B, A more right, right matches A / B (geometric mean, 95 %)")
    for label, idx in angle_bins(rows_a, edges):
        if len(idx) == 0:
            print(f"  {label}: none")
            continue
        ra = np.array([rows_a[i]["right"] for i in idx])
        rb = np.array([rows_b[i]["right"] for i in idx])
        logs = np.log((ra + 1) / (rb + 1))
        low, high = bootstrap_mean_interval(logs)
        print(f"  {label}: {len(idx)}, {sum(rows_a[i]['localized'] for i in idx):.0f} / "
              f"{sum(rows_b[i]['localized'] for i in idx):.0f}, {int((ra > rb).sum())}, "
              f"×{np.exp(logs.mean()):.2f} [{np.exp(low):.2f}, {np.exp(high):.2f}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--map")
    p.add_argument("--bag", help="images with ground-truth poses")
    p.add_argument("--pool", nargs="+", metavar="ROWS.csv", help="sum the rows of earlier runs' --csv instead")
    p.add_argument("--against", nargs="+", metavar="B_ROWS.csv", help="with --pool: compare with these rows, paired")
    p.add_argument("--features", default="lift")
    p.add_argument("--pose-topic", default="/ground_truth/pose")
    p.add_argument("--threshold", type=float, default=8.0, metavar="PX",
                   help="a match is right where the true pose projects its point within PX (default: the "
                        "localizer's RANSAC threshold)")
    p.add_argument("--failed-only", action="store_true", help="print only the images that are not localized")
    p.add_argument("--csv", default=None, metavar="FILE", help="one row per image")
    p.add_argument("--bins", default="0,10,20,30,45", metavar="DEG,...",
                   help="edges of the summary's bins of the angle to the nearest map view (the last bin is open)")
    a = p.parse_args(argv)
    try:
        edges = sorted(float(x) for x in a.bins.split(","))
    except ValueError:
        p.error(f"--bins: {a.bins!r} is not a comma-separated list of degrees")
    if a.pool:
        rows = read_rows(a.pool)
        print(f"{len(rows)} images of {len(a.pool)} runs")
        print_bins(rows, edges)
        if a.against:
            if len(a.against) != len(a.pool):
                p.error(f"--against needs one file per --pool file ({len(a.pool)}), got {len(a.against)}")
            rows_b = read_rows(a.against)
            if [r["name"] for r in rows] != [r["name"] for r in rows_b]:
                p.error("--pool and --against do not hold the same images in the same order")
            print_paired_bins(rows, rows_b, edges)
        return 0
    if not (a.map and a.bag):
        p.error("give --map and --bag, or --pool")
    try:
        scene = load_map(a.map, a.features)
    except MapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    localizer = Localizer(scene)
    names = [im.name for im in scene.images]
    axes = np.array([im.T_map_camera[:3, 2] for im in scene.images])
    frames = [f for f in read_frames(a.bag, pose_topic=a.pose_topic) if f.T_map_camera is not None]
    if not frames:
        print(f"error: no image of {a.bag} has a pose on {a.pose_topic}", file=sys.stderr)
        return 2
    failed = 0
    right_of_failed: list[float] = []
    rows: list[dict] = []
    for f in frames:
        results, xy = tried_places(localizer, f)
        ok = any(r.success for r in results)
        rights = [right_matches(r, f.T_map_camera, xy, f.camera.K, a.threshold) for r in results]
        if not ok:
            right_of_failed += [right / r.num_matches for r, right in zip(results, rights) if r.num_matches]
        rank = {name: j for j, name in enumerate(results[0].retrieved if results else [])}
        near = nearest_views(axes, f.T_map_camera)
        failed += not ok
        # The place that decided the image: the accepted one (the last tried), else the best supported.
        k = len(results) - 1 if ok else max(range(len(results)), key=lambda j: results[j].num_inliers, default=None)
        deciding = results[k] if k is not None else None
        rows.append({"name": f.name, "nearest_angle_deg": round(near[0][1], 2),
                     "nearest_rank": rank.get(names[near[0][0]], -1),
                     "matches": deciding.num_matches if deciding else 0, "right": rights[k] if deciding else 0,
                     "inliers": deciding.num_inliers if deciding else 0, "localized": int(ok)})
        if ok and a.failed_only:
            continue
        print(f"{f.name}: {'localized' if ok else 'failed'}; nearest map images "
              + ", ".join(f"{i} at {angle:.1f}° (rank {rank.get(names[i], '-')})" for i, angle in near))
        for j, (r, right) in enumerate(zip(results, rights)):
            print(f"  place {j + 1}: {r.num_matches} matches, {right} right, {r.num_inliers} inliers, "
                  + ("" if r.T_map_camera is None else "pose off by {:.4g} m, {:.3g}°, ".format(
                      *pose_error(r.T_map_camera, f.T_map_camera)))
                  + ("accepted" if r.success else str(r.reason or "refused")))
    print_bins(rows, edges)
    if a.csv:
        with open(a.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    print(f"{len(frames) - failed} of {len(frames)} localized" + (
        f"; in the failed images' places a median {100 * np.median(right_of_failed):.1f} % of the matches are right"
        if right_of_failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
