"""Reprojection error of a map's keypoints, by keypoint size: where a feature set's imprecision lies.

Each map keypoint with a 3D point is compared with that point projected by the image's known pose
(the pinhole of its camera, keypoints undistorted), then grouped by keypoint size (OpenCV size, 2σ)
into quartiles:

    python tools/reprojection_by_size.py MAP [--features lift sift]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from lift_localizer.localization.absolute_pose import reprojection_residuals
from lift_localizer.mapping.io import MapError, load_map


def errors_by_size(map_dir: str, features: str | None) -> np.ndarray:
    """(N, 2): each observation's keypoint size and reprojection error in pixels."""
    scene = load_map(map_dir, features)
    rows = []
    for im in scene.images:
        f, ids = im.features, im.point3D_ids
        has = ids >= 0
        if not has.any():
            continue
        kp = im.camera.undistort_points(f.keypoints[has])
        residuals = reprojection_residuals(im.T_map_camera, im.camera.K, kp, scene.points_xyz(ids[has]))
        rows.append(np.c_[f.scales[has], np.linalg.norm(residuals, axis=1)])
    return np.concatenate(rows) if rows else np.zeros((0, 2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("map", help="a map directory written by build-map")
    ap.add_argument("--features", nargs="+", default=[None], help="feature sets (default: the map's own)")
    a = ap.parse_args()
    for name in a.features:
        try:
            e = errors_by_size(a.map, name)
        except MapError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"[{name or 'own'}] {len(e)} observations: reprojection error mean {e[:, 1].mean():.3f} px, "
              f"median {np.median(e[:, 1]):.3f} px")
        edges = np.quantile(e[:, 0], [0, 0.25, 0.5, 0.75, 1])
        for q, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = (e[:, 0] >= lo) & ((e[:, 0] < hi) if q < 3 else (e[:, 0] <= hi))
            if inside.any():
                print(f"  size quartile {q + 1} ({lo:.1f}–{hi:.1f} px): {inside.sum()} observations, "
                      f"median {np.median(e[inside, 1]):.3f} px, mean {e[inside, 1].mean():.3f} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
