"""Which transform the node broadcasts, as 4×4 matrices (tf2 does the rest).

TF trees allow one parent per frame. When odometry already publishes odom→camera, the localizer
must publish map→odom (the correction), never map→camera, or the camera would get two parents.
"""
from __future__ import annotations

import numpy as np

from ..geometry.pose import invert


def transform_to_broadcast(T_map_camera: np.ndarray, T_odom_camera: np.ndarray | None,
                           map_frame: str, odom_frame: str, camera_frame: str) -> tuple[str, str, np.ndarray]:
    """(parent, child, T_parent_child): map→odom when odom→camera is known, else map→camera."""
    if T_odom_camera is None:
        return map_frame, camera_frame, T_map_camera
    return map_frame, odom_frame, T_map_camera @ invert(T_odom_camera)
