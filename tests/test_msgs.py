"""The interface package lift_localizer_msgs (msg/): its package.xml and CMakeLists.txt agree with
the repository's package.xml, and the generated message, as `make` installs it into the venv,
imports with no ROS environment and round-trips through rclpy's serialization.

Outside CI a venv without the generated package skips the import tests (run
`bash msg/build_into_venv.sh .venv`); in CI (CI set) it fails them, since `make` builds it.
"""
import array
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from conftest import REPO

MSG_DIR = REPO / "msg"
IN_CI = bool(os.environ.get("CI"))


def _import_or_skip(module: str, hint: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        if IN_CI:
            pytest.fail(f"{module} must be importable in CI ({hint}): {e}")
        pytest.skip(f"{module} is not importable ({hint}): {e}")


def keypoints_class():
    return _import_or_skip("lift_localizer_msgs.msg",
                           "`make` builds it into the venv: bash msg/build_into_venv.sh .venv").Keypoints


def _deps(root, *tags):
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def _msg_fields(path):
    """name -> type of a .msg file, in order (no constants or defaults in ours)."""
    fields = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            typ, name = line.split()[:2]
            fields[name] = typ
    return fields


def test_msgs_package_xml_is_an_interface_package():
    root = ET.parse(MSG_DIR / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "lift_localizer_msgs"
    assert root.find("export/build_type").text == "ament_cmake"
    assert _deps(root, "member_of_group") == {"rosidl_interface_packages"}
    assert {"ament_cmake", "rosidl_default_generators"} <= _deps(root, "buildtool_depend")
    assert "rosidl_default_runtime" in _deps(root, "exec_depend", "depend")


def test_msgs_package_is_consistent_with_the_repository():
    msgs = ET.parse(MSG_DIR / "package.xml").getroot()
    pkg = ET.parse(REPO / "package.xml").getroot()
    assert msgs.findtext("version") == pkg.findtext("version")
    assert msgs.findtext("license") == pkg.findtext("license")
    # The node uses the messages and the services/diagnostics from these packages.
    assert {"lift_localizer_msgs", "std_srvs", "diagnostic_msgs"} <= _deps(pkg, "exec_depend", "depend")

    cmake = (MSG_DIR / "CMakeLists.txt").read_text()
    assert re.search(r"project\(\s*lift_localizer_msgs\b", cmake)
    msg_files = sorted(p.name for p in MSG_DIR.glob("*.msg"))
    assert msg_files == ["Keypoints.msg"]
    for name in msg_files:  # every interface file is generated
        assert f":msg/{name}" in cmake, f"{name} is not in rosidl_generate_interfaces"
    # Packages that the messages name are declared in package.xml and passed to rosidl.
    used = {t.split("/")[0] for p in MSG_DIR.glob("*.msg") for t in _msg_fields(p).values() if "/" in t}
    assert used == {"std_msgs"}
    assert used <= _deps(msgs, "depend", "build_depend")
    deps_arg = re.search(r"DEPENDENCIES([^)]*)\)", cmake).group(1).split()
    assert used <= set(deps_arg)


def test_installed_message_matches_the_msg_file():
    """A stale build (Keypoints.msg changed, venv not rebuilt) shows here."""
    Keypoints = keypoints_class()
    types = {"float32[]": "sequence<float>", "uint32": "uint32", "std_msgs/Header": "std_msgs/Header"}
    want = {name: types[t] for name, t in _msg_fields(MSG_DIR / "Keypoints.msg").items()}
    assert Keypoints.get_fields_and_field_types() == want


def test_keypoints_round_trip_through_rclpy_serialization():
    Keypoints = keypoints_class()
    from rclpy.serialization import deserialize_message, serialize_message
    from std_msgs.msg import Header

    rng = np.random.default_rng(0)
    n, d = 5, 128
    cols = {k: rng.uniform(0, 640, n).astype(np.float32) for k in ("x", "y", "scale", "orientation", "score")}
    desc = rng.standard_normal((n, d)).astype(np.float32)

    def f32(a):  # numpy -> array('f') through bytes: no per-element Python loop
        return array.array("f", np.ascontiguousarray(a, np.float32).tobytes())

    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 1_700_000_000, 123_456_789
    msg = Keypoints(header=header, descriptor_size=d, descriptors=f32(desc.ravel()),
                    **{k: f32(v) for k, v in cols.items()})

    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 4 * n * (d + 5)
    back = deserialize_message(data, Keypoints)

    assert back.header.frame_id == "camera_optical"
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (1_700_000_000, 123_456_789)
    assert back.descriptor_size == d
    for k, v in cols.items():
        got = np.asarray(getattr(back, k), np.float32)   # array('f') -> numpy via the buffer protocol
        assert got.dtype == np.float32 and got.shape == (n,)
        np.testing.assert_array_equal(got, v)
    got_desc = np.frombuffer(back.descriptors, np.float32).reshape(-1, back.descriptor_size)
    np.testing.assert_array_equal(got_desc, desc)
    assert back == msg


def test_message_imports_with_no_ros_environment():
    """What `make` promises: no sourcing, no AMENT_PREFIX_PATH or LD_LIBRARY_PATH at run time."""
    keypoints_class()
    code = ("from lift_localizer_msgs.msg import Keypoints\n"
            "from rclpy.serialization import serialize_message, deserialize_message\n"
            "m = Keypoints(descriptor_size=128)\n"
            "assert deserialize_message(serialize_message(m), Keypoints) == m\n"
            "print('ok')\n")
    env = {"HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_node_interfaces_from_other_packages_import():
    Trigger = _import_or_skip("std_srvs.srv", "pip install ros-std-srvs").Trigger
    DiagnosticArray = _import_or_skip("diagnostic_msgs.msg", "pip install ros-diagnostic-msgs").DiagnosticArray
    from rclpy.serialization import deserialize_message, serialize_message

    assert Trigger.Response(success=True, message="ok").message == "ok"
    d = DiagnosticArray()
    assert deserialize_message(serialize_message(d), DiagnosticArray) == d
