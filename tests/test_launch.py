"""launch_testing: `localize.launch.py` starts the node, which answers an image with a pose.

Runs where launch_ros and launch_testing exist (a full ROS 2 install, where launch_testing's pytest
plugin registers itself). Here, with the upstream sources unpacked by ../shared/tools/upstream-launch.sh:

    PYTHONPATH=$(../shared/tools/upstream-launch.sh LAUNCH_GIT LAUNCH_ROS_GIT) \
        .venv/bin/python -m pytest -p launch_testing.pytest.hooks tests/test_launch.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("launch_ros", reason="launch_ros is not installed (not on PyPI; part of every ROS 2 install)")
launch_testing = pytest.importorskip("launch_testing", reason="launch_testing is not installed (not on PyPI)")
pytest.importorskip("pycolmap")

import launch_testing.actions  # noqa: E402
import rclpy  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from ros_harness import private_domain  # noqa: E402
from test_node import camera_info, image_msg, stamp_ns  # noqa: E402

from lift_localizer.cli import main  # noqa: E402
from lift_localizer.geometry.camera import Camera  # noqa: E402
from lift_localizer.geometry.pose import T_from_tq, pose_error  # noqa: E402
from lift_localizer.bags.writer import write_bag  # noqa: E402
from lift_localizer.mapping.frames import Frame  # noqa: E402
from lift_localizer.synthetic import room_sequence  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
os.environ["ROS_DOMAIN_ID"] = private_domain()
# A venv install (make) registers the package in the venv prefix; a ROS install has it sourced already.
if (Path(sys.prefix) / "share" / "lift_localizer").exists():
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (sys.prefix, os.environ.get("AMENT_PREFIX_PATH")) if p)

K, MAPPING, QUERY = room_sequence(10, 2, image_size=(240, 320))
CAMERA = Camera(320, 240, K)


@pytest.mark.launch_test
def generate_test_description():
    root = Path(tempfile.mkdtemp(prefix="lift_launch_"))
    write_bag(root / "mapping", [Frame(str(i), CAMERA, T, stamp_ns=10**18 + i * 10**8, loader=lambda im=im: im)
                                 for i, (im, T) in enumerate(MAPPING)])
    assert main(["build-map", "--bag", str(root / "mapping"), "--output", str(root / "map"), "--features", "lift",
                 "--max-keypoints", "300"]) == 0
    localize = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO / "launch" / "localize.launch.py")),
        launch_arguments={"map": str(root / "map"), "image": "/cam/image_raw", "camera_info": "/cam/camera_info",
                          "backend": "torch"}.items())
    return LaunchDescription([localize, launch_testing.actions.ReadyToTest()])


class TestPoseComesOut(unittest.TestCase):
    def test_pose_from_an_image(self, proc_output):
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, Image

        rclpy.init()
        node = rclpy.create_node("launch_test_client")
        try:
            poses = []
            node.create_subscription(PoseWithCovarianceStamped, "/pose", poses.append, 10)
            image_pub = node.create_publisher(Image, "/cam/image_raw", QoSProfile(depth=5))
            info_pub = node.create_publisher(CameraInfo, "/cam/camera_info", QoSProfile(depth=5))
            image, T = QUERY[0]
            deadline = time.monotonic() + 120
            while not poses and time.monotonic() < deadline:
                info_pub.publish(camera_info(CAMERA))
                image_pub.publish(image_msg(image, 10**11))
                end = time.monotonic() + 2
                while not poses and time.monotonic() < end:
                    rclpy.spin_once(node, timeout_sec=0.1)
            self.assertTrue(poses, "no /pose from the launched node")
            msg = poses[0]
            self.assertEqual(stamp_ns(msg.header), 10**11)
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            dt, dr = pose_error(T_from_tq(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])), T)
            self.assertLess(dt, 0.1)
            proc_output.assertWaitFor("map loaded", timeout=5)
        finally:
            node.destroy_node()
            rclpy.shutdown()
