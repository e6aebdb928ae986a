"""The ROS 2 package: package.xml, the ament index marker, console scripts, and rclpy over DDS."""
import ast
import os
import xml.etree.ElementTree as ET

import pytest

from conftest import REPO


def test_package_xml_is_an_ament_python_package():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "lift_localizer"
    assert root.find("export/build_type").text == "ament_python"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "geometry_msgs", "std_msgs", "python3-numpy", "python3-opencv",
            "python3-h5py"} <= deps


def test_setup_installs_what_ros_needs():
    tree = ast.parse((REPO / "setup.py").read_text())
    text = (REPO / "setup.py").read_text()
    assert "share/ament_index/resource_index/packages" in text
    assert (REPO / "resource" / "lift_localizer").is_file()
    assert "lift-localizer = lift_localizer.cli:main" in text
    assert any(isinstance(n, ast.Constant) and n.value == "weights/*.safetensors" for n in ast.walk(tree))
    version = ET.parse(REPO / "package.xml").getroot().findtext("version")
    assert f'version="{version}"' in text


def test_rclpy_publishes_and_receives_over_dds():
    rclpy = pytest.importorskip("rclpy")
    from sensor_msgs.msg import Image

    os.environ.setdefault("ROS_DOMAIN_ID", "87")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("lift_localizer_smoke", context=context)
        got = []
        node.create_subscription(Image, "smoke_image", got.append, 10)
        pub = node.create_publisher(Image, "smoke_image", 10)
        msg = Image(height=2, width=3, encoding="mono8", step=3, data=bytes(range(6)))
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        for _ in range(50):
            pub.publish(msg)
            executor.spin_once(timeout_sec=0.1)
            if got:
                break
        assert got and bytes(got[0].data) == bytes(range(6)) and got[0].encoding == "mono8"
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
