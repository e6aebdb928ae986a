"""Recall thresholds scaled to the scene.

Fixed metric thresholds judge a street and a 9 cm figurine with the same centimetres: on an object
0.6 m away every set is at 100 % at (5 cm, 5°) and nothing can be told apart. Scaled thresholds are
fractions of the scene's depth D (the median distance from a map camera to the points it sees),
with the rotation that moves a point at depth D by the same amount (atan(f) ≈ f rad), so that
position and rotation are judged alike.
"""
from __future__ import annotations

import math

import numpy as np

from ..mapping.io import Map
from .metrics import THRESHOLDS

# f: translation f·D and rotation f rad. An object at 0.65 m is judged at (5.2 mm, 0.46°), (2 mm,
# 0.17°) and (0.65 mm, 0.057°); a street at 15 m at (12 cm, 0.46°), (4.5 cm, 0.17°) and (1.5 cm,
# 0.057°). Coarser fractions leave every development set at 100 % for SIFT and LIFT alike: their
# median errors are 0.05–0.2 % of the depth.
SCENE_FRACTIONS = (0.008, 0.003, 0.001)


def scene_depth(scene: Map) -> float:
    """Median depth of the map's observations (point in a map image's camera frame); NaN if none."""
    depths = []
    for im in scene.images:
        ids = im.point3D_ids   # read from the map's file at each access: once here
        ids = ids[ids >= 0]
        if len(ids) == 0:
            continue
        T_camera_map = np.linalg.inv(im.T_map_camera)
        z = scene.points_xyz(ids) @ T_camera_map[2, :3] + T_camera_map[2, 3]
        depths.append(z[z > 0])
    return float(np.median(np.concatenate(depths))) if depths and sum(map(len, depths)) else float("nan")


def _two_digits(x: float) -> float:
    return float(f"{x:.2g}")


def scaled_thresholds(depth: float, fractions=SCENE_FRACTIONS) -> tuple[tuple[float, float], ...]:
    """(metres, degrees) at each fraction of ``depth``, to two significant digits."""
    if not (math.isfinite(depth) and depth > 0):
        return ()
    return tuple((_two_digits(f * depth), _two_digits(math.degrees(f))) for f in fractions)


def default_thresholds(depth: float) -> tuple[tuple[float, float], ...]:
    """The fixed metric thresholds, then the scene-scaled ones (duplicates dropped)."""
    return tuple(dict.fromkeys((*THRESHOLDS, *scaled_thresholds(depth))))
