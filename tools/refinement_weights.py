"""Does weighting the final pose refinement by how precise each correspondence should be localize better?

The localizer's last step (pycolmap) refines the pose on the PnP inliers with every residual
weighted alike. LIFT's keypoints reproject worse the larger their scale (tools/reprojection_by_size.py),
and map points differ in their own reprojection error and track length. This tool localizes each
query as shipped, then refines the same pose on the same inliers again, robustly (Cauchy, 1 px, as
pycolmap), with residuals divided by a per-correspondence sigma, and compares the errors paired:

- ``plain``: sigma 1 (a control: it should reproduce pycolmap's pose);
- ``scale``: the query keypoint's size over the median size of the inliers;
- ``sqrt-scale``: the square root of that;
- ``point-error``: sqrt(1 + (the map point's reprojection error / the inliers' median)²);
- ``track``: sqrt(2 / min(track length, 10)).

    python tools/refinement_weights.py --sets MAP:QUERY_BAG... [--features lift sift]

Pooled over every query of every set: won / lost / tied at the three scene-scaled thresholds of each
set's map, and the translation-error ratio against the pose as shipped (geometric mean, bootstrap
95 % interval). Use it on held-out mapping images (tools/split_bag.py), never on a query half.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np

from lift_localizer.bags.reader import read_frames
from lift_localizer.evaluation.metrics import within
from lift_localizer.evaluation.paired import error_ratio, paired_row
from lift_localizer.evaluation.thresholds import scaled_thresholds, scene_depth
from lift_localizer.geometry.pose import make_T, pose_error, rodrigues
from lift_localizer.localization.absolute_pose import reprojection_jacobian, reprojection_residuals
from lift_localizer.localization.localizer import Localizer
from lift_localizer.mapping.io import MapError, load_map

WEIGHTINGS = ("plain", "scale", "sqrt-scale", "point-error", "track")


def weighted_refinement(T_map_camera: np.ndarray, K: np.ndarray, xy: np.ndarray, xyz: np.ndarray,
                        sigma: np.ndarray, loss_scale: float = 1.0, iterations: int = 30) -> np.ndarray:
    """T_map_camera refined by Gauss-Newton on the residuals (projected − xy) / sigma under a
    Cauchy loss of scale ``loss_scale`` (iteratively reweighted), in the localizer's own residuals
    and Jacobian (absolute_pose). xy (N, 2) undistorted pixels, xyz (N, 3) map points, sigma (N,) > 0."""
    T = np.array(T_map_camera, np.float64)
    for _ in range(iterations):
        r = reprojection_residuals(T, K, xy, xyz) / sigma[:, None]
        J = (reprojection_jacobian(T, K, xyz) / sigma[:, None, None]).reshape(-1, 6)
        w = np.repeat(1.0 / (1.0 + (r**2).sum(1) / loss_scale**2), 2)
        step = -np.linalg.solve(J.T @ (J * w[:, None]) + 1e-9 * np.eye(6), J.T @ (w * r.reshape(-1)))
        # The Jacobian's perturbation: the centre moved by step[:3], turned by step[3:] about the map's axes.
        T = make_T(rodrigues(step[3:]) @ T[:3, :3], T[:3, 3] + step[:3])
        if np.linalg.norm(step) < 1e-12:
            break
    return T


def sigmas(scales: np.ndarray, point_errors: np.ndarray, track_lengths: np.ndarray) -> dict[str, np.ndarray]:
    """Each weighting's (N,) sigma for N inliers."""
    s = scales / np.median(scales)
    e = point_errors / max(float(np.median(point_errors)), 1e-9)
    return {"plain": np.ones(len(s)), "scale": s, "sqrt-scale": np.sqrt(s), "point-error": np.sqrt(1 + e**2),
            "track": np.sqrt(2.0 / np.minimum(track_lengths, 10))}


def run_set(map_dir: str, bag: str, features: str) -> tuple[dict[str, np.ndarray], tuple]:
    """{"shipped" and each weighting: (Q, 2) errors, inf where not localized}, the set's scaled thresholds."""
    scene = load_map(map_dir, features)
    thresholds = scaled_thresholds(scene_depth(scene))
    # Each point's error and track length, in the rows of the map's points (points.h5's order).
    with h5py.File(Path(scene.path) / "points.h5", "r") as f:
        point_error, track_length = f["error"][()], f["track_length"][()]
    localizer = Localizer(scene)
    frames = [f for f in read_frames(bag, pose_topic="/ground_truth/pose") if f.T_map_camera is not None]
    errors = {k: np.full((len(frames), 2), np.inf) for k in ("shipped", *WEIGHTINGS)}
    for i, f in enumerate(frames):
        r = localizer(f.image(), f.camera)
        if not r.success:
            continue
        errors["shipped"][i] = pose_error(r.T_map_camera, f.T_map_camera)
        inl = r.inliers
        kp, xyz = r.match_keypoints[inl], r.match_xyz[inl]
        xy = f.camera.undistort_points(r.features.keypoints[kp])
        rows, _ = scene.rows(r.match_point_ids[inl])
        per = sigmas(r.features.scales[kp], point_error[rows], track_length[rows])
        for name, sigma in per.items():
            T = weighted_refinement(r.T_map_camera, f.camera.K, xy, xyz, sigma)
            errors[name][i] = pose_error(T, f.T_map_camera)
    return errors, thresholds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", required=True, metavar="MAP:QUERY_BAG")
    ap.add_argument("--features", nargs="+", default=["lift", "sift"])
    a = ap.parse_args()
    for features in a.features:
        pooled: dict[str, list] = {k: [] for k in ("shipped", *WEIGHTINGS)}
        hits: dict[str, list] = {k: [] for k in pooled}
        for pair in a.sets:
            map_dir, _, bag = pair.partition(":")
            if not bag:
                ap.error(f"{pair}: give MAP:QUERY_BAG")
            try:
                errors, thresholds = run_set(map_dir, bag, features)
            except (MapError, OSError, ValueError) as e:
                print(f"error: {pair}: {e}", file=sys.stderr)
                return 2
            print(f"{features} {Path(bag).parent.name or bag}: {np.isfinite(errors['shipped'][:, 0]).sum()} of "
                  f"{len(errors['shipped'])} localized", flush=True)
            for k, err in errors.items():
                pooled[k].append(err)
                hits[k].append(np.stack([within(err, t) for t in thresholds], 1))
        shipped = np.concatenate(pooled["shipped"])
        shipped_hits = np.concatenate(hits["shipped"])
        print(f"{features}, {len(shipped)} queries; against the pose as shipped: won / lost / tied at 0.8, 0.3, "
              f"0.1 % of the depth; translation error ratio [95 %]")
        for name in WEIGHTINGS:
            err, hit = np.concatenate(pooled[name]), np.concatenate(hits[name])
            rows = [paired_row(hit[:, j], shipped_hits[:, j], (0.0, 0.0)) for j in range(hit.shape[1])]
            ratio, n = error_ratio(err[:, 0], shipped[:, 0])
            cells = "  ".join(f"{r.won} / {r.lost} / {r.tied}" for r in rows)
            print(f"  {name:12s} {cells}   ×{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}] (n = {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
