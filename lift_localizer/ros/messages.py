"""Localizer results → ROS messages (needs the ROS Python message packages).

Array fields are filled from numpy through ``array.array`` bytes: assigning a numpy array to a
sequence field makes the generated setter check every element in Python.
"""
from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import PoseWithCovarianceStamped, TransformStamped

from ..features.types import Features
from ..geometry.pose import matrix_to_quat


def float32_array(values: np.ndarray) -> array.array:
    out = array.array("f")
    out.frombytes(np.ascontiguousarray(values, np.float32).tobytes())
    return out


def pose_msg(T_map_camera: np.ndarray, covariance: np.ndarray, header) -> PoseWithCovarianceStamped:
    """T_map_camera and its 6×6 covariance (x y z, rotation about the map's x y z axes, ROS's order)."""
    msg = PoseWithCovarianceStamped()
    msg.header = header
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in T_map_camera[:3, 3])
    q.x, q.y, q.z, q.w = (float(v) for v in matrix_to_quat(T_map_camera[:3, :3]))
    msg.pose.covariance = np.asarray(covariance, np.float64).reshape(36)
    return msg


def transform_msg(T_parent_child: np.ndarray, parent: str, child: str, stamp) -> TransformStamped:
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id, msg.child_frame_id = parent, child
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in T_parent_child[:3, 3])
    r.x, r.y, r.z, r.w = (float(v) for v in matrix_to_quat(T_parent_child[:3, :3]))
    return msg


def T_from_transform(transform) -> np.ndarray:
    """geometry_msgs/Transform → 4×4."""
    from ..geometry.pose import T_from_tq

    t, r = transform.translation, transform.rotation
    return T_from_tq(np.array([t.x, t.y, t.z]), np.array([r.x, r.y, r.z, r.w]))


def keypoints_msg(features: Features, header, keypoints_type):
    """``lift_localizer_msgs/Keypoints`` (class passed in: the interface package is optional at import)."""
    msg = keypoints_type()
    msg.header = header
    msg.x = float32_array(features.keypoints[:, 0])
    msg.y = float32_array(features.keypoints[:, 1])
    msg.scale = float32_array(features.scales)
    msg.orientation = float32_array(features.orientations)
    msg.score = float32_array(features.scores)
    msg.descriptor_size = int(features.descriptors.shape[1]) if features.descriptors.ndim == 2 else 0
    msg.descriptors = float32_array(features.descriptors.ravel())
    return msg


def features_from_keypoints_msg(msg) -> dict[str, np.ndarray]:
    """The inverse, for subscribers: arrays without per-element loops."""
    n = len(msg.x)
    f32 = lambda field: np.frombuffer(field, np.float32) if len(field) else np.zeros(0, np.float32)  # noqa: E731
    return {"keypoints": np.stack([f32(msg.x), f32(msg.y)], 1).reshape(n, 2), "scales": f32(msg.scale),
            "orientations": f32(msg.orientation), "scores": f32(msg.score),
            "descriptors": f32(msg.descriptors).reshape(n, msg.descriptor_size)}
