"""Write posed image sequences as rosbag2 in the layout of the evaluation bags (DESIGN.md):
image (raw or JPEG), camera_info and, for ground truth, PoseStamped of T_map_camera per image."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..geometry.pose import matrix_to_quat
from .convert import make_image_fields
from ..mapping.frames import Frame

IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
POSE_TOPIC = "/ground_truth/pose"


def _msgs(ts):
    t = ts.types
    return (t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"], t["sensor_msgs/msg/Image"],
            t["sensor_msgs/msg/CompressedImage"], t["sensor_msgs/msg/CameraInfo"],
            t["sensor_msgs/msg/RegionOfInterest"], t["geometry_msgs/msg/PoseStamped"], t["geometry_msgs/msg/Pose"],
            t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"])


def write_bag(path: str | Path, frames: list[Frame], with_poses: bool = True, compressed: bool = False,
              storage: str = "sqlite3", frame_id: str = "camera") -> None:
    """Write ``frames`` (each with a stamp, camera and image; poses if ``with_poses``) to a new bag."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.LATEST)
    Time, Header, Image, CImage, Info, Roi, PoseStamped, Pose, Point, Quat = _msgs(ts)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    with Writer(Path(path), version=8, storage_plugin=plugin) as w:
        image_topic = IMAGE_TOPIC + ("/compressed" if compressed else "")
        image_type = (CImage if compressed else Image).__msgtype__
        c_img = w.add_connection(image_topic, image_type, typestore=ts)
        c_info = w.add_connection(INFO_TOPIC, Info.__msgtype__, typestore=ts)
        c_pose = w.add_connection(POSE_TOPIC, PoseStamped.__msgtype__, typestore=ts) if with_poses else None
        for f in frames:
            s = int(f.stamp_ns)
            header = Header(stamp=Time(sec=s // 10**9, nanosec=s % 10**9), frame_id=frame_id)
            cam = f.camera
            d = np.zeros(5)
            d[: min(5, len(cam.dist))] = cam.dist[:5]
            info = Info(header=header, height=cam.height, width=cam.width, distortion_model="plumb_bob", d=d,
                        k=cam.K.ravel().astype(np.float64), r=np.eye(3).ravel(),
                        p=np.c_[cam.K, np.zeros(3)].ravel().astype(np.float64), binning_x=0, binning_y=0,
                        roi=Roi(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
            w.write(c_info, s, ts.serialize_cdr(info, Info.__msgtype__))
            image = f.image()
            if compressed:
                ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
                msg = CImage(header=header, format="jpeg", data=buf.ravel())
            else:
                enc = "mono8" if image.ndim == 2 else "bgr8"
                fields = make_image_fields(image, enc)
                fields["data"] = np.frombuffer(fields["data"], np.uint8)
                msg = Image(header=header, **fields)
            w.write(c_img, s, ts.serialize_cdr(msg, image_type))
            if with_poses and f.T_map_camera is not None:
                q = matrix_to_quat(f.T_map_camera[:3, :3])
                t = f.T_map_camera[:3, 3]
                pose = PoseStamped(header=Header(stamp=header.stamp, frame_id="map"),
                                   pose=Pose(position=Point(x=t[0], y=t[1], z=t[2]),
                                             orientation=Quat(x=q[0], y=q[1], z=q[2], w=q[3])))
                w.write(c_pose, s, ts.serialize_cdr(pose, PoseStamped.__msgtype__))
