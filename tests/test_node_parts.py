"""The node's parts that need no running ROS graph: parameters, config file, launch file, the
one-slot queue, the broadcast transform, the message conversions."""
from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from lift_localizer.geometry.pose import invert, pose_error
from lift_localizer.ros.frame_gate import FrameGate
from lift_localizer.ros.frame_slot import FrameSlot
from lift_localizer.ros.node_stats import ERROR, OK, WARN, NodeStats
from lift_localizer.ros.params import BY_NAME, PARAMS, check, localizer_conf
from lift_localizer.ros.transforms import (camera_parent_conflict, decide_broadcast, known_frames, parse_frames_yaml,
                                          tf_parents, transform_to_broadcast)

REPO = Path(__file__).resolve().parents[1]


def random_T(rng) -> np.ndarray:
    from lift_localizer.geometry.pose import rodrigues

    T = np.eye(4)
    T[:3, :3] = rodrigues(rng.normal(size=3))
    T[:3, 3] = rng.normal(size=3)
    return T


def test_config_file_lists_every_parameter_with_an_acceptable_value():
    config = yaml.safe_load((REPO / "config" / "localizer.yaml").read_text())
    values = config["lift_localizer"]["ros__parameters"]
    assert set(values) == set(BY_NAME)
    for name, value in values.items():
        assert check(name, value) is None, name
        assert type(value) is type(BY_NAME[name].default), f"{name}: ROS would refuse the type"
    from lift_localizer.localization.localizer import default_conf

    assert set(localizer_conf(values)) <= set(default_conf)
    assert localizer_conf(values)["precision"] is None and localizer_conf({**values, "precision": "fp16"})["precision"] == "fp16"


@pytest.mark.parametrize("name,value,why", [
    ("top_k", 0, "outside"), ("top_k", 2.5, "integer"), ("ratio", "x", "number"), ("publish_tf", 1, "true or false"),
    ("retrieval", "bogus", "choose one of"), ("precision", "fp8", "choose one of"), ("backend", "tensorrt", "not available"), ("device", "tpu", "cpu or cuda"),
    ("nope", 1, "unknown parameter"),
])
def test_bad_values_are_refused_with_a_reason(name, value, why):
    assert why in check(name, value)


def test_good_values_pass():
    assert check("top_k", 5) is None and check("device", "cuda:1") is None and check("max_rate_hz", 0.0) is None
    assert localizer_conf({**{p.name: p.default for p in PARAMS}, "max_position_std": 0.0})["max_position_std"] is None


def test_launch_file_declares_the_contracted_arguments_and_the_installed_executable():
    tree = ast.parse((REPO / "launch" / "localize.launch.py").read_text())
    declared = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"map", "params_file", "image", "camera_info", "backend"} <= declared
    calls = {kw.arg: kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
             and getattr(node.func, "id", "") == "Node" for kw in node.keywords}
    assert calls["package"].value == "lift_localizer" and calls["name"].value == "lift_localizer"
    setup = (REPO / "setup.py").read_text()
    assert f'"{calls["executable"].value} = lift_localizer.ros.node:main"' in setup
    overridden = {k.value for d in ast.walk(calls["parameters"]) if isinstance(d, ast.Dict) for k in d.keys}
    assert overridden <= set(BY_NAME)
    imported = {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"launch", "launch_ros"}, "public launch API only"


def test_setup_installs_launch_and_config_into_share():
    text = (REPO / "setup.py").read_text()
    assert '*share("config")' in text and '*share("launch")' in text


def test_frame_slot_keeps_the_newest_and_counts_the_dropped():
    slot = FrameSlot()
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert slot.pending == 1
    assert slot.take(0) == 3 and slot.dropped == 2 and slot.take(0.01) is None
    # The frame taken stays pending until the worker is done with it, beside a newer one waiting.
    assert slot.pending == 1
    slot.put(4)
    assert slot.pending == 2
    slot.done()
    assert slot.pending == 1 and slot.take(0) == 4 and slot.pending == 1
    slot.done()
    assert slot.pending == 0
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take(5)))
    worker.start()
    time.sleep(0.05)
    slot.put("late")
    worker.join(2)
    assert got == ["late"]
    slot.close()
    t = time.monotonic()
    assert slot.take(5) is None and time.monotonic() - t < 1


def test_broadcast_map_to_odom_when_odometry_knows_the_camera():
    rng = np.random.default_rng(0)
    T_map_camera, T_odom_camera = random_T(rng), random_T(rng)
    parent, child, T = transform_to_broadcast(T_map_camera, T_odom_camera, "map", "odom", "cam")
    assert (parent, child) == ("map", "odom")
    dt, dr = pose_error(T @ T_odom_camera, T_map_camera)   # map→odom→camera composes to the pose
    assert dt < 1e-9 and dr < 1e-6
    assert transform_to_broadcast(T_map_camera, None, "map", "odom", "cam")[:2] == ("map", "cam")
    assert np.allclose(invert(invert(T_map_camera)), T_map_camera)


def test_rate_limit_drops_frames_until_relocalize_lets_the_next_through():
    gate = FrameGate()
    rate = 0.5   # one frame every 2 s
    first = gate.admit(100.0, rate)
    assert first is not None and gate.starting(first) is False
    assert gate.admit(100.5, rate) is None and gate.admit(101.0, rate) is None   # the rate limit drops them
    reply = gate.relocalize()
    assert "next image is localized at once" in reply and "rate limit restarts" in reply
    ticket = gate.admit(101.2, rate)   # 1.2 s after the last frame: through, because of the relocalize
    assert ticket is not None and ticket > first
    assert gate.starting(ticket) is True and gate.starting(ticket) is False   # answered once
    # Only that frame: the rate limit holds again, counted from the relocalized frame.
    assert gate.admit(101.5, rate) is None and gate.admit(103.3, rate) is not None
    # No rate limit: every frame is admitted; a relocalize is answered by the next frame the worker starts.
    assert all(gate.admit(200.0 + i * 1e-3, 0.0) is not None for i in range(3))
    gate.relocalize()
    a, b = gate.admit(201.0, 0.0), gate.admit(201.001, 0.0)
    assert gate.starting(b) is True and gate.starting(a) is False   # b replaced a in the one-slot queue


def test_relocalize_forgets_the_rate_clock():
    gate = FrameGate()
    assert gate.admit(10.0, 1.0) is not None
    gate.relocalize()
    assert gate.admit(10.1, 1.0) is not None   # the bypass
    gate.relocalize()
    gate.relocalize()   # twice: still one frame through at once, then the rate limit from it
    assert gate.admit(10.2, 1.0) is not None and gate.admit(10.3, 1.0) is None


# What tf2's Buffer.all_frames_as_yaml() returns (its frame lines end with a space).
FRAMES_YAML = "".join(f"{child}: \n  parent: '{parent}'\n  broadcaster: 'default_authority'\n  rate: 10000.000\n"
                      "  most_recent_transform: 0.000000\n  oldest_transform: 0.000000\n  buffer_length: 0.000\n"
                      for child, parent in (("base_link", "odom"), ("camera", "base_link")))


def test_frames_yaml_of_tf2_is_read_as_parents():
    assert parse_frames_yaml(FRAMES_YAML) == {"base_link": "odom", "camera": "base_link"}
    assert parse_frames_yaml("[]") == {} and parse_frames_yaml("") == {}
    assert known_frames(parse_frames_yaml(FRAMES_YAML)) == {"odom", "base_link", "camera"}

    class Buffer:
        def all_frames_as_yaml(self):
            return FRAMES_YAML

    assert tf_parents(Buffer()) == {"base_link": "odom", "camera": "base_link"}


def test_no_map_to_camera_when_the_camera_has_a_parent_already():
    T = random_T(np.random.default_rng(1))
    # A URDF gives the camera a parent and no odometry runs (odom_frame empty, or odom unknown to TF).
    for odom in ("", "odom"):
        transform, why = decide_broadcast(T, None, "map", odom, "camera", {"camera": "base_link"})
        assert transform is None
        assert "already has the parent base_link" in why and "odom_frame" in why and "base_link" in why
    # The suggestion is the root of the camera's tree, below the map.
    why = camera_parent_conflict({"camera": "base_link", "base_link": "odom", "odom": "map"}, "map", "camera")
    assert "root of its tree (odom" in why
    # No parent, or the node's own earlier map→camera: map→camera.
    for parents in ({}, {"camera": "map"}, {"other": "base_link"}):
        transform, why = decide_broadcast(T, None, "map", "", "camera", parents)
        assert why is None and transform[:2] == ("map", "camera") and np.array_equal(transform[2], T)
    # odom→camera known: map→odom, whatever the camera's parent.
    transform, why = decide_broadcast(T, np.eye(4), "map", "odom", "camera", {"camera": "base_link", "base_link": "odom"})
    assert why is None and transform[:2] == ("map", "odom")


def test_camera_parent_read_from_a_real_tf2_buffer():
    tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not on PyPI; this runs on a full ROS 2 install")
    from geometry_msgs.msg import TransformStamped
    from rclpy.time import Time

    buffer = tf2_ros.Buffer()
    assert decide_broadcast(np.eye(4), None, "map", "", "camera", tf_parents(buffer))[0] is not None
    urdf = TransformStamped()
    urdf.header.frame_id, urdf.child_frame_id = "base_link", "camera"
    urdf.transform.rotation.w = 1.0
    buffer.set_transform_static(urdf, "robot_state_publisher")
    assert buffer.can_transform("base_link", "camera", Time())   # the camera's parent, as TF resolves it
    parents = tf_parents(buffer)
    assert parents.get("camera") == "base_link"
    transform, why = decide_broadcast(np.eye(4), None, "map", "", "camera", parents)
    assert transform is None and "odom_frame" in why


def test_stats_levels_and_failure_reasons():
    stats = NodeStats()
    assert stats.report(0)[0] == ERROR
    stats.set_map(True, "m: 3 images")
    assert stats.report(0)[0] == WARN
    stats.count("in")
    stats.count("processed")
    stats.failure("too few inliers (3 < 20)")
    level, message, values = stats.report(4)
    assert level == WARN and "too few inliers" in message
    values = dict(values)
    assert values["frames_dropped"] == "4" and values["failures: too few inliers"] == "1"
    stats.count("processed")
    stats.count("localized")
    stats.processed({"extract": 0.5, "total": 0.7}, 0.8)
    level, _, values = stats.report(4)
    assert level == OK and dict(values)["extract_ms_median"] == "500.0" and dict(values)["latency_ms_p90"] == "800.0"


def test_messages_round_trip():
    pytest.importorskip("geometry_msgs", reason="ROS message wheels are not installed")
    msgs = pytest.importorskip("lift_localizer_msgs.msg", reason="lift_localizer_msgs is not built (make does it)")
    from std_msgs.msg import Header

    from lift_localizer.features.types import Features
    from lift_localizer.ros.messages import features_from_keypoints_msg, keypoints_msg, pose_msg, T_from_transform, transform_msg

    rng = np.random.default_rng(1)
    f = Features(rng.uniform(0, 600, (7, 2)).astype(np.float32), rng.uniform(2, 9, 7).astype(np.float32),
                 rng.uniform(-3, 3, 7).astype(np.float32), rng.uniform(0, 1, 7).astype(np.float32),
                 rng.normal(size=(7, 128)).astype(np.float32), (480, 640))
    back = features_from_keypoints_msg(keypoints_msg(f, Header(frame_id="cam"), msgs.Keypoints))
    for k in ("keypoints", "scales", "orientations", "scores", "descriptors"):
        np.testing.assert_array_equal(back[k], getattr(f, k))
    empty = Features(np.zeros((0, 2), np.float32), *(np.zeros(0, np.float32) for _ in range(3)),
                     np.zeros((0, 128), np.float32), (4, 4))
    assert features_from_keypoints_msg(keypoints_msg(empty, Header(), msgs.Keypoints))["descriptors"].shape == (0, 128)

    T = random_T(rng)
    cov = np.diag(np.arange(1.0, 7.0))
    m = pose_msg(T, cov, Header(frame_id="map"))
    assert np.array_equal(np.asarray(m.pose.covariance).reshape(6, 6), cov)
    tf = transform_msg(T, "map", "cam", m.header.stamp)
    dt, dr = pose_error(T_from_transform(tf.transform), T)
    assert dt < 1e-9 and dr < 1e-6 and tf.child_frame_id == "cam"
