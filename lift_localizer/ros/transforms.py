"""Which transform the node broadcasts, as 4×4 matrices (tf2 does the rest).

TF trees allow one parent per frame. When odometry already publishes odom→camera, the localizer
must publish map→odom (the correction), never map→camera, or the camera would get two parents. For
the same reason it publishes nothing when the camera frame has a parent already (a URDF's
base_link→camera) that odom_frame does not lead to.

Pure Python: the node hands in what TF knows as ``parents`` (child → parent), read from
``tf2_ros.Buffer.all_frames_as_yaml()`` by ``tf_parents``.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from ..geometry.pose import invert

_FRAME_LINE = re.compile(r"^(\S.*?):\s*$")
_PARENT_LINE = re.compile(r"^\s+parent:\s*'?(.*?)'?\s*$")


def transform_to_broadcast(T_map_camera: np.ndarray, T_odom_camera: np.ndarray | None,
                           map_frame: str, odom_frame: str, camera_frame: str) -> tuple[str, str, np.ndarray]:
    """(parent, child, T_parent_child): map→odom when odom→camera is known, else map→camera."""
    if T_odom_camera is None:
        return map_frame, camera_frame, T_map_camera
    return map_frame, odom_frame, T_map_camera @ invert(T_odom_camera)


def parse_frames_yaml(text: str) -> dict[str, str]:
    """child → parent from tf2's ``allFramesAsYAML`` text (one block per frame that has a parent;
    "[]" when TF knows none)."""
    parents: dict[str, str] = {}
    frame = None
    for line in text.splitlines():
        if (m := _FRAME_LINE.match(line)) is not None:
            frame = m.group(1).strip("'\"")
        elif frame is not None and (m := _PARENT_LINE.match(line)) is not None:
            parents[frame] = m.group(1)
    return parents


def tf_parents(buffer) -> dict[str, str]:
    """child → parent of every frame a ``tf2_ros.Buffer`` (or its BufferCore) has heard of."""
    return parse_frames_yaml(buffer.all_frames_as_yaml())


def known_frames(parents: Mapping[str, str]) -> set[str]:
    """Every frame in the tree, roots included (a root is nobody's child: it appears only as a parent)."""
    return set(parents) | set(parents.values())


def tree_root(parents: Mapping[str, str], frame: str, above: str) -> str:
    """The topmost ancestor of ``frame`` below ``above`` (the node's own map frame), or ``frame``."""
    seen = {frame}
    while (parent := parents.get(frame)) is not None and parent != above and parent not in seen:
        seen.add(parent)
        frame = parent
    return frame


def camera_parent_conflict(parents: Mapping[str, str], map_frame: str, camera_frame: str) -> str | None:
    """Why map→camera must not be broadcast, or None: the camera frame already has a parent in TF
    other than the map frame (the node's own earlier map→camera), which a second parent would
    break (tf2 keeps one parent per frame; lookups through it jump between the two)."""
    parent = parents.get(camera_frame)
    if not parent or parent == map_frame:
        return None
    root = tree_root(parents, camera_frame, map_frame)
    return (f"no TF is broadcast: {camera_frame} already has the parent {parent} in TF (a URDF or a driver), and "
            f"{map_frame}→{camera_frame} would give it a second one. Set the odom_frame parameter to the root of "
            f"its tree ({root}; usually odom) so that the node broadcasts {map_frame}→{root} instead; /pose is "
            f"published either way")


def decide_broadcast(T_map_camera: np.ndarray, T_odom_camera: np.ndarray | None, map_frame: str, odom_frame: str,
                     camera_frame: str, parents: Mapping[str, str]
                     ) -> tuple[tuple[str, str, np.ndarray] | None, str | None]:
    """((parent, child, T_parent_child), None) to broadcast, or (None, why not).

    ``T_odom_camera``: odom→camera at the image stamp where TF has it (then map→odom); without it
    map→camera, unless ``parents`` (what TF knows, child → parent) gives the camera frame a parent
    already."""
    if T_odom_camera is not None:
        return transform_to_broadcast(T_map_camera, T_odom_camera, map_frame, odom_frame, camera_frame), None
    why = camera_parent_conflict(parents, map_frame, camera_frame)
    if why is not None:
        return None, why
    return transform_to_broadcast(T_map_camera, None, map_frame, odom_frame, camera_frame), None
