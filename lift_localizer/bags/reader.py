"""Read posed image sequences from rosbag2 (sqlite3 or mcap) with the ``rosbags`` library.

    frames = read_frames("bags/kitti_seq1/mapping", pose_topic="/ground_truth/pose")

Images are decoded lazily (``frame.image()``) from the serialized messages kept in memory, so a
bad frame is reported by itself and never stops the others. Frames are named by their header
stamp in integer nanoseconds (DESIGN.md).
"""
from __future__ import annotations

import bisect
from pathlib import Path

import numpy as np

from ..geometry.camera import Camera, CameraError, camera_from_camera_info
from ..geometry.pose import T_from_tq
from ..reasons import Failure, Reason
from ..mapping.frames import Frame

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
POSE_TYPES = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped", "nav_msgs/msg/Odometry")
DEFAULT_IMAGE_TOPICS = ("/camera/image_raw", "/camera/image_raw/compressed")


class BagError(ValueError):
    """A bag that cannot be used; the message names the bag and the problem."""


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.LATEST)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def open_bag(path: str | Path):
    """An opened rosbags ``Reader`` of the bag folder (or its storage file); BagError, one line, where it cannot be read."""
    from rosbags.rosbag2 import Reader

    path = Path(path)
    if not path.exists():
        raise BagError(f"{path}: no such bag")
    if path.is_file():
        path = path.parent  # the .db3/.mcap file: its folder is the bag
    try:
        reader = Reader(path)
        reader.open()
    except Exception as e:  # rosbags raises its own errors, sqlite3 and yaml ones: all mean "not a bag"
        # One line: YAML's errors span several (the line, a caret, the position).
        raise BagError(f"{path}: not a readable rosbag2 ({type(e).__name__}: {' '.join(str(e).split())})") from None
    return reader


def bag_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """topic → (message type, count)."""
    reader = open_bag(path)
    try:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    finally:
        reader.close()


def pick_image_topic(topics: dict[str, tuple[str, int]], wanted: str | None, bag: Path) -> str:
    images = {t: ty for t, (ty, _) in topics.items() if ty in IMAGE_TYPES}
    if wanted is not None:
        if wanted not in topics:
            raise BagError(f"{bag}: no topic {wanted!r} (image topics: {', '.join(images) or 'none'})")
        if topics[wanted][0] not in IMAGE_TYPES:
            raise BagError(f"{bag}: {wanted} is a {topics[wanted][0]}, not an Image or CompressedImage")
        return wanted
    for t in DEFAULT_IMAGE_TOPICS:
        if t in images:
            return t
    if len(images) == 1:
        return next(iter(images))
    raise BagError(f"{bag}: " + ("no Image or CompressedImage topic" if not images else
                                 f"several image topics ({', '.join(images)}); choose one with --image-topic"))


def _pose_T(msg, msgtype: str) -> np.ndarray:
    pose = msg.pose.pose if msgtype != "geometry_msgs/msg/PoseStamped" else msg.pose
    p, q = pose.position, pose.orientation
    return T_from_tq([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def _decoder(raw: bytes, msgtype: str, typestore):
    def load() -> np.ndarray:
        from .convert import compressed_image_from_msg, image_to_bgr_or_gray

        msg = typestore.deserialize_cdr(raw, msgtype)
        return image_to_bgr_or_gray(msg) if msgtype.endswith("/Image") else compressed_image_from_msg(msg)
    return load


def read_frames(path: str | Path, image_topic: str | None = None, camera_info_topic: str = "/camera/camera_info",
                pose_topic: str | None = None, pose_tolerance_s: float = 0.005) -> list[Frame]:
    """The bag's images as Frames sorted by stamp, each with the camera of the camera_info with
    the same stamp (else the latest before it) and, if ``pose_topic`` is given, T_map_camera from
    the pose with the same stamp (else the nearest within ``pose_tolerance_s``, else None).

    With ``pose_topic=None`` no pose message is read at all: localization must never see ground truth.
    """
    path = Path(path)
    reader = open_bag(path)
    try:
        topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        image_topic = pick_image_topic(topics, image_topic, path)
        if camera_info_topic not in topics:
            raise BagError(f"{path}: no camera_info topic {camera_info_topic!r} (topics: {', '.join(topics)}); "
                           f"images cannot be used without intrinsics")
        if pose_topic is not None and pose_topic not in topics:
            raise BagError(f"{path}: no pose topic {pose_topic!r} (topics: {', '.join(topics)})")
        if pose_topic is not None and topics[pose_topic][0] not in POSE_TYPES:
            raise BagError(f"{path}: {pose_topic} is a {topics[pose_topic][0]}, not one of {', '.join(POSE_TYPES)}")
        wanted = {image_topic, camera_info_topic} | ({pose_topic} if pose_topic else set())
        connections = [c for c in reader.connections if c.topic in wanted]
        typestore = _typestore()
        images: list[tuple[int, bytes, str]] = []
        infos: dict[int, Camera | str] = {}
        poses: dict[int, np.ndarray] = {}
        for conn, _, raw in reader.messages(connections=connections):
            if conn.topic == image_topic:
                # Only the header is needed now; the pixels are decoded when asked for.
                header = typestore.deserialize_cdr(raw, conn.msgtype).header
                images.append((stamp_ns(header), bytes(raw), conn.msgtype))
            elif conn.topic == camera_info_topic:
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                try:
                    infos[stamp_ns(msg.header)] = camera_from_camera_info(msg)
                except CameraError as e:
                    infos[stamp_ns(msg.header)] = Failure(Reason.BAD_CAMERA_INFO, str(e))
            else:
                msg = typestore.deserialize_cdr(raw, conn.msgtype)
                poses[stamp_ns(msg.header)] = _pose_T(msg, conn.msgtype)
    except BagError:
        raise
    except Exception as e:  # a truncated or corrupt database fails part-way through
        raise BagError(f"{path}: corrupt or truncated bag ({type(e).__name__}: {e})") from None
    finally:
        reader.close()
    if not images:
        raise BagError(f"{path}: no messages on {image_topic}")
    info_stamps = sorted(infos)
    pose_stamps = np.array(sorted(poses), np.int64)
    frames = []
    for stamp, raw, msgtype in sorted(images, key=lambda x: x[0]):
        k = bisect.bisect_right(info_stamps, stamp)
        info = infos[info_stamps[k - 1]] if k else Failure(Reason.NO_CAMERA_INFO, "none at or before this image")
        camera, error = (info, None) if isinstance(info, Camera) else (None, info)
        T = None
        if len(pose_stamps):
            j = int(np.argmin(np.abs(pose_stamps - stamp)))
            if abs(int(pose_stamps[j]) - stamp) <= pose_tolerance_s * 1e9:
                T = poses[int(pose_stamps[j])]
        frames.append(Frame(str(stamp), camera, T, stamp, error, _decoder(raw, msgtype, typestore)))
    return frames
