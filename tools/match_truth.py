"""Where does an image fail between retrieval and pose? Its 2D-3D matches judged by its ground truth.

For each image of a posed bag, each covisibility place the localizer tries (as shipped, best-ranked
first): its 2D-3D matches, how many of them are right (the ground-truth pose projects the match's 3D
point within ``--threshold`` px of its keypoint), the PnP inliers, and whether the pose is accepted.
Beside it, the map images whose optical axes are nearest the image's, with the angle and their
retrieval rank. An image with few right matches among many, while its nearest map images are
retrieved, fails at matching descriptors; one whose nearest map images are not retrieved fails at
retrieval; one with many right matches but no pose fails at RANSAC or acceptance.

    python tools/match_truth.py --map MAP --bag BAG [--features lift] [--threshold 8] [--failed-only]

Use it on held-out mapping images (tools/split_bag.py) or a query half; it chooses nothing.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from lift_localizer.bags.reader import read_frames
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--map", required=True)
    p.add_argument("--bag", required=True, help="images with ground-truth poses")
    p.add_argument("--features", default="lift")
    p.add_argument("--pose-topic", default="/ground_truth/pose")
    p.add_argument("--threshold", type=float, default=8.0, metavar="PX",
                   help="a match is right where the true pose projects its point within PX (default: the "
                        "localizer's RANSAC threshold)")
    p.add_argument("--failed-only", action="store_true", help="print only the images that are not localized")
    a = p.parse_args(argv)
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
    for f in frames:
        q = localizer.extract(to_gray(f.image()), f.camera)
        results = list(localizer.cluster_results(q, f.camera, {}))
        ok = any(r.success for r in results)
        xy = f.camera.undistort_points(q.keypoints)
        places = []
        for r in results:
            right = right_matches(r, f.T_map_camera, xy, f.camera.K, a.threshold)
            places.append(f"{r.num_matches} matches, {right} right, {r.num_inliers} inliers, "
                          + ("accepted" if r.success else str(r.reason or "refused")))
            if not ok and r.num_matches:
                right_of_failed.append(right / r.num_matches)
            if r.success:
                break
        retrieved = results[0].retrieved if results else []
        near = ", ".join(f"{i} at {angle:.1f}° (rank {retrieved.index(names[i]) if names[i] in retrieved else '-'})"
                         for i, angle in nearest_views(axes, f.T_map_camera))
        failed += not ok
        if ok and a.failed_only:
            continue
        print(f"{f.name}: {'localized' if ok else 'failed'}; nearest map images {near}")
        for k, line in enumerate(places):
            print(f"  place {k + 1}: {line}")
    print(f"{len(frames) - failed} of {len(frames)} localized" + (
        f"; in the failed images' places a median {100 * np.median(right_of_failed):.1f} % of the matches are right"
        if right_of_failed else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
