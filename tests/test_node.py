"""The ROS 2 node over real DDS: started as `ros2 run` would, fed images, answering with poses."""
from __future__ import annotations

import array
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import NODE_KEYPOINTS
from ros_harness import Client, NodeProcess, diagnostics_values, wait_for

from lift_localizer.cli import main
from lift_localizer.geometry.camera import Camera
from lift_localizer.geometry.pose import T_from_tq, pose_error
from lift_localizer.bags.convert import make_image_fields

pytest.importorskip("pycolmap")
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

Keypoints = pytest.importorskip("lift_localizer_msgs.msg", reason="lift_localizer_msgs is not built (make does it)").Keypoints
KEYPOINTS = NODE_KEYPOINTS


def camera_info(cam: Camera) -> CameraInfo:
    msg = CameraInfo(width=cam.width, height=cam.height, distortion_model="plumb_bob")
    msg.k = cam.K.ravel().tolist()
    msg.d = [0.0] * 5
    msg.header.frame_id = "camera"
    return msg


def image_msg(image: np.ndarray, stamp_ns: int) -> Image:
    msg = Image(**make_image_fields(image, "mono8" if image.ndim == 2 else "bgr8"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = "camera"
    return msg


def stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def set_params(client: Client, **values):
    types = {bool: (ParameterType.PARAMETER_BOOL, "bool_value"), int: (ParameterType.PARAMETER_INTEGER, "integer_value"),
             float: (ParameterType.PARAMETER_DOUBLE, "double_value"), str: (ParameterType.PARAMETER_STRING, "string_value")}
    params = []
    for name, v in values.items():
        kind, field = types[type(v)]
        params.append(Parameter(name=name, value=ParameterValue(type=kind, **{field: v})))
    return client.call(SetParameters, "/lift_localizer/set_parameters", SetParameters.Request(parameters=params)).results


@contextmanager
def started(room_scene, log: Path, domain_offset: int = 0, client_name: str = "test_client"):
    """The node on the scene's map (reliable QoS, images on /cam/...) and a client listening to it:
    (node, client, pubs, poses, keypoints, diagnostics), once the map is loaded and images can flow."""
    root, cam, query = room_scene
    node = NodeProcess("--params-file", "config/localizer.yaml", "-p", f"map_path:={root / 'map'}",
                       "-p", f"max_keypoints:={KEYPOINTS}", "-p", "qos_reliability:=reliable",
                       "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info",
                       log=log, domain_offset=domain_offset)
    client = Client(client_name, domain_offset=domain_offset)
    try:
        poses = client.collect(PoseWithCovarianceStamped, "/pose")
        keypoints = client.collect(Keypoints, "/keypoints")
        diagnostics = client.collect(DiagnosticArray, "/diagnostics")
        pubs = {"image": client.publisher(Image, "/cam/image_raw"),
                "info": client.publisher(CameraInfo, "/cam/camera_info")}
        wait_for(lambda: diagnostics and "images" in diagnostics_values(diagnostics[-1])["map"], 60, "the map to load",
                 node)
        wait_for(lambda: pubs["image"].get_subscription_count() > 0 and poses is not None, 20, "the node's subscription")
        yield node, client, pubs, poses, keypoints, diagnostics
    finally:
        client.close()
        node.stop()


@pytest.fixture(scope="module")
def running(room_scene, tmp_path_factory):
    with started(room_scene, tmp_path_factory.mktemp("log") / "node.log") as r:
        yield r


def processed(diagnostics) -> int:
    return int(diagnostics_values(diagnostics[-1])["frames_processed"]) if diagnostics else 0


def send_and_wait(running, msg, counter="frames_processed", timeout=60):
    node, client, pubs, poses, keypoints, diagnostics = running
    before = int(diagnostics_values(diagnostics[-1])[counter])
    pubs["image"].publish(msg)
    wait_for(lambda: int(diagnostics_values(diagnostics[-1])[counter]) > before, timeout, f"{counter} to grow", node)


def test_image_before_camera_info_is_skipped_with_the_reason(running, room_scene):
    node, client, pubs, poses, *_ = running
    _, cam, query = room_scene
    send_and_wait(running, image_msg(query[0][0], 5 * 10**11), "frames_skipped_no_camera_info")
    assert not poses
    wait_for(lambda: "waiting for camera_info on /cam/camera_info" in node.output(), 5, "the log line", node)


def test_poses_keypoints_and_diagnostics(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    pubs["info"].publish(camera_info(cam))
    wait_for(lambda: "camera 320×240" in node.output(), 10, "camera_info to be taken", node)
    # Before any frame of that size: the warm-up the first frame would otherwise pay for.
    wait_for(lambda: "warmed up at 320×240 in" in node.output(), 60, "the warm-up", node)
    wait_for(lambda: diagnostics_values(diagnostics[-1])["warm_up"].startswith("320×240 in "), 5, "warm-up diagnostics")
    truth = {}
    for i, (image, T) in enumerate(query):
        stamp = 3 * 10**11 + i * 10**8
        truth[stamp] = T
        send_and_wait(running, image_msg(image, stamp))
    wait_for(lambda: len(keypoints) >= len(query), 10, "keypoints")
    assert len(poses) >= len(query) - 1, node.output()[-2000:]
    for msg in poses:
        assert msg.header.frame_id == "map" and stamp_ns(msg.header) in truth
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        dt, dr = pose_error(T_from_tq(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])),
                            truth[stamp_ns(msg.header)])
        assert dt < 0.1 and dr < 2.0   # the bounds of test_map_cli: 320×240 renders, untrained LIFT
        cov = np.asarray(msg.pose.covariance).reshape(6, 6)
        assert np.allclose(cov, cov.T) and np.all(np.linalg.eigvalsh(cov) > 0) and np.all(np.isfinite(cov))
    kp = keypoints[-1]
    n = len(kp.x)
    assert 0 < n <= KEYPOINTS and kp.descriptor_size == 128 and len(kp.descriptors) == n * 128
    assert isinstance(kp.x, array.array) and len(kp.scale) == len(kp.orientation) == len(kp.score) == n
    assert np.all(np.isfinite(np.frombuffer(kp.descriptors, np.float32)))
    wait_for(lambda: int(diagnostics_values(diagnostics[-1])["frames_localized"]) >= len(poses), 5, "diagnostics")
    values = diagnostics_values(diagnostics[-1])
    for key in ("frames_in", "frames_lost", "frames_dropped", "last_failure", "extract_ms_median", "pnp_ms_median",
                "latency_ms_p90"):
        assert key in values
    # the map's image cache: the 10-image room is held whole, and what it holds is counted
    held, capacity = (int(v) for v in values["map_cache_images"].split("/"))
    assert 0 < held <= 10 and capacity >= 10 and float(values["map_cache_mb"]) > 0
    assert float(values["extract_ms_median"]) > 0 and diagnostics[-1].status[0].level == b"\x00"


@pytest.mark.parametrize("broken,why", [
    ({"encoding": "weird16"}, "unsupported image encoding 'weird16'"),
    ({"step": 100}, "step 100 is smaller"),
    ({"height": 0, "width": 0, "step": 0, "data": b""}, "empty image"),
    ({"data": b"\x00" * 100}, "image data has 100 bytes"),
])
def test_malformed_images_are_skipped_and_said(running, room_scene, broken, why):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    msg = image_msg(query[0][0], 4 * 10**11)
    for k, v in broken.items():
        setattr(msg, k, v)
    send_and_wait(running, msg, "bad_messages")
    send_and_wait(running, msg, "bad_messages")
    assert node.alive() and why in diagnostics_values(diagnostics[-1])["last_failure"]
    wait_for(lambda: "image skipped: unreadable image" in node.output(), 5, "the log line", node)


def peak_memory_mb(node) -> float:
    """The node process's peak resident memory (VmHWM), MB."""
    status = Path(f"/proc/{node.proc.pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def test_bad_images_are_counted_by_reason_and_logged_once_whatever_their_numbers(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    logged = node.output().count("image skipped")
    for n in range(20):
        msg = image_msg(query[0][0], 4 * 10**11 + n)
        msg.data = b"\x00" * (100 + n)
        send_and_wait(running, msg, "bad_messages")
    values = diagnostics_values(diagnostics[-1])
    assert "image data has 119 bytes" in values["last_failure"]
    failure_keys = [k for k in values if k.startswith("failures:")]
    assert "failures: unreadable image" in failure_keys and len(failure_keys) <= 3, failure_keys
    # One line per cause per LOG_REPEAT_S (30 s), however many distinct messages: at most one more.
    assert node.output().count("image skipped") <= logged + 1


@pytest.mark.parametrize("change,why", [
    ({"width": 20000, "height": 20000}, "larger than max_image_side = 8192"),
    ({"d": [0.01, 0.0, 0.0]}, "'plumb_bob' with 3 coefficients"),
])
def test_camera_info_refusals_say_why_and_allocate_nothing(running, room_scene, change, why):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    msg = camera_info(cam)
    for k, v in change.items():
        setattr(msg, k, v)
    before = int(diagnostics_values(diagnostics[-1])["bad_messages"])
    pubs["info"].publish(msg)
    wait_for(lambda: int(diagnostics_values(diagnostics[-1])["bad_messages"]) > before, 10, "the refusal", node)
    values = diagnostics_values(diagnostics[-1])
    assert why in values["last_failure"] and "failures: camera_info refused" in values, values
    # Logged (once per cause every 30 s: the first of the two cases says it).
    wait_for(lambda: "camera_info refused (" in node.output(), 5, "the log line", node)
    # The camera it had stays: its frames are still localized.
    send_and_wait(running, image_msg(query[0][0], 12 * 10**11 + len(why)))
    time.sleep(2)   # a warm-up at a claimed size would be under way by now
    assert node.alive() and peak_memory_mb(node) < 2000


def test_alternating_camera_sizes_warm_up_each_size_once(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    small = Camera(160, 120, np.diag([cam.K[0, 0] / 2, cam.K[1, 1] / 2, 1.0]) + np.array([[0, 0, 80], [0, 0, 60], [0, 0, 0]]))
    for _ in range(3):
        for c in (small, cam):
            taken = node.output().count(f"camera {c.width}×{c.height},")
            pubs["info"].publish(camera_info(c))
            wait_for(lambda c=c, n=taken: node.output().count(f"camera {c.width}×{c.height},") > n, 10,
                     f"camera {c.width}×{c.height} to be taken", node)
            time.sleep(1.0)   # the worker looks for a new size at least every 0.5 s
    assert node.output().count("warmed up at 160×120") == 1, node.output()[-3000:]


def test_wrong_size_image_is_refused(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    send_and_wait(running, image_msg(np.zeros((100, 120, 3), np.uint8), 6 * 10**11), "bad_messages")
    wait_for(lambda: "image is 120×100, camera_info says 320×240" in node.output(), 5, "the reason", node)


def test_parameters_are_checked_and_refusals_explained(running):
    node, client, *_ = running
    (r,) = set_params(client, top_k=0)
    assert not r.successful and "top_k" in r.reason
    (r,) = set_params(client, retrieval="bogus")
    assert not r.successful and "netvlad" in r.reason
    from lift_localizer.backends import unavailable

    why = unavailable("tensorrt")
    (r,) = set_params(client, backend="tensorrt")
    # Refused with the reason where TensorRT cannot run; accepted (a reload) where it can.
    assert r.successful == (why is None) and (why is None or why in r.reason)
    (r,) = set_params(client, qos_depth=3)
    assert not r.successful and ("read-only" in r.reason.lower() or "start-up" in r.reason)
    (r,) = set_params(client, ransac_threshold_px=6)
    assert not r.successful   # an integer for a double parameter: rclpy refuses the type
    assert all(r.successful for r in set_params(client, top_k=5, ransac_threshold_px=6.0))


def test_a_bad_map_keeps_the_node_up_and_a_good_one_reloads(running, room_scene, tmp_path):
    node, client, pubs, poses, keypoints, diagnostics = running
    root, cam, query = room_scene
    (bad := tmp_path / "bad").mkdir()
    (bad / "map.json").write_text("{not json")
    (r,) = set_params(client, map_path=str(bad))
    assert r.successful
    wait_for(lambda: "map not loaded" in diagnostics_values(diagnostics[-1])["map"], 20, "the map error", node)
    assert diagnostics[-1].status[0].level == b"\x02"
    send_and_wait(running, image_msg(query[1][0], 7 * 10**11), "frames_skipped_no_map")
    warmed = node.output().count("warmed up at 320×240")
    (r,) = set_params(client, map_path=str(root / "map"))
    wait_for(lambda: "images" in diagnostics_values(diagnostics[-1])["map"], 30, "the map to reload", node)
    # The reloaded localizer is warmed up again (the camera is already known).
    wait_for(lambda: node.output().count("warmed up at 320×240") > warmed, 60, "the warm-up after the reload", node)
    n = len(poses)
    send_and_wait(running, image_msg(query[1][0], 8 * 10**11))
    wait_for(lambda: len(poses) > n, 5, "a pose after the reload", node)


def test_tf_map_to_camera_where_tf2_ros_exists(running, room_scene):
    pytest.importorskip("tf2_ros", reason="tf2_ros is not on PyPI; this runs on a full ROS 2 install")
    from tf2_msgs.msg import TFMessage

    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    tfs = client.collect(TFMessage, "/tf")
    pubs["info"].publish(camera_info(cam))
    send_and_wait(running, image_msg(query[0][0], 9 * 10**11))
    wait_for(lambda: any(t.header.frame_id == "map" and t.child_frame_id == "camera" for m in tfs for t in m.transforms),
             10, "map→camera on /tf (no odom frame exists)", node)


def test_a_pose_jump_in_map_to_odom_is_held_until_a_second_frame_agrees_where_tf2_ros_exists(room_scene, tmp_path):
    tf2_ros = pytest.importorskip("tf2_ros", reason="tf2_ros is not on PyPI; this runs on a full ROS 2 install")
    from tf2_msgs.msg import TFMessage

    from lift_localizer.geometry.pose import invert, make_T
    from lift_localizer.ros.messages import T_from_transform, transform_msg

    _, cam, query = room_scene
    # Where odometry started in the map, and the same 2 m away: what odom→camera says (sent on /tf)
    # makes the node's pose imply one or the other as map→odom.
    A = make_T(np.eye(3), [0.3, -0.2, 0.1])
    B = make_T(np.eye(3), [2.3, -0.2, 0.1])
    # A node of its own: odom→camera in TF must not reach the module's `running` node.
    with started(room_scene, tmp_path / "node.log", domain_offset=150, client_name="tf_client") as r:
        node, client, pubs, poses, keypoints, diagnostics = r
        tfs = client.collect(TFMessage, "/tf")
        odometry = tf2_ros.TransformBroadcaster(client.node)
        # Two subscribers: the node's TF listener and the client's own collector.
        wait_for(lambda: client.node.count_subscribers("/tf") >= 2, 20, "the node's TF listener", node)
        pubs["info"].publish(camera_info(cam))
        wait_for(lambda: "camera 320×240" in node.output(), 10, "camera_info to be taken", node)

        def frame(image, T_map_camera, T_map_odom, stamp) -> bool:
            """Odometry for the image's stamp, then the image: whether a pose came for it."""
            msg = image_msg(image, stamp)
            odometry.sendTransform(transform_msg(invert(T_map_odom) @ T_map_camera, "odom", "camera", msg.header.stamp))
            send_and_wait(r, msg)
            try:
                wait_for(lambda: any(stamp_ns(p.header) == stamp for p in poses), 3, "its pose")
            except AssertionError:
                return False
            return True

        def map_to_odom(stamp):
            return [T_from_transform(t.transform) for m in list(tfs) for t in m.transforms
                    if (t.header.frame_id, t.child_frame_id) == ("map", "odom") and stamp_ns(t.header) == stamp]

        s0 = 20 * 10**9
        # The first fix: any query image that localizes (one may not: see test_poses_keypoints_and_diagnostics).
        first = next((i for i, (im, T) in enumerate(query) if frame(im, T, A, s0 + i * 10**6)), None)
        assert first is not None, node.output()[-3000:]
        image, T = query[first]
        assert not frame(image, T, B, s0 + 10**8), "a 2 m jump of map→odom is held"
        assert not map_to_odom(s0 + 10**8)
        wait_for(lambda: diagnostics_values(diagnostics[-1])["jump_held"] == "1", 5, "jump_held in diagnostics", node)
        assert "pose not published: the pose jumped" in node.output()
        assert frame(image, T, B, s0 + 2 * 10**8), "a second frame agrees: published"
        wait_for(lambda: map_to_odom(s0 + 2 * 10**8), 5, "map→odom of the confirmed frame", node)
        # Broadcast map→odom · odom→camera: the camera, within the bounds of test_poses_keypoints_and_diagnostics.
        dt, dr = pose_error(map_to_odom(s0 + 2 * 10**8)[0] @ invert(B) @ T, T)
        assert dt < 0.1 and dr < 2.0
        wait_for(lambda: diagnostics_values(diagnostics[-1])["jump_confirmed"] == "1", 5, "jump_confirmed", node)

        response = client.call(Trigger, "/lift_localizer/relocalize", Trigger.Request())
        assert response.success and "jump gate" in response.message
        assert frame(image, T, A, s0 + 3 * 10**8), "after ~/relocalize the next frame is taken on its own"


def test_initialpose_limits_retrieval_to_an_area_and_other_frames_are_refused(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    pubs["info"].publish(camera_info(cam))
    initial = client.publisher(PoseWithCovarianceStamped, "/initialpose")
    wait_for(lambda: initial.get_subscription_count() > 0, 20, "the node's initialpose subscription", node)
    assert all(r.successful for r in set_params(client, retrieval_radius_m=50.0))
    try:
        msg = PoseWithCovarianceStamped()
        msg.header.frame_id = "odom"
        initial.publish(msg)
        wait_for(lambda: "initialpose refused: its frame is 'odom', not the map frame 'map'" in node.output(), 10,
                 "the refusal", node)
        image, T = query[2]
        msg.header.frame_id = "map"
        msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = (float(v) for v in T[:3, 3])
        initial.publish(msg)
        wait_for(lambda: "prior from initialpose" in node.output(), 10, "the initialpose to be taken", node)
        send_and_wait(running, image_msg(image, 13 * 10**11))
        values = diagnostics_values(diagnostics[-1])
        assert values["retrieval_area"].startswith("limited: 10 of 10 map images within 50 m") \
            and values["retrieval_area"].endswith("(initialpose)"), values["retrieval_area"]
        assert values["initial_poses"] == "1" and values["initial_poses_refused"] == "1"
        # A 50 m radius holds the whole room: the frame localizes, and its pose is the next prior.
        send_and_wait(running, image_msg(image, 13 * 10**11 + 10**8))
        wait_for(lambda: diagnostics_values(diagnostics[-1])["retrieval_area"].endswith("(the last accepted pose)"),
                 5, "the last pose as the prior", node)
    finally:
        set_params(client, retrieval_radius_m=0.0)


def test_relocalize_lets_through_a_frame_the_rate_limit_would_drop(running, room_scene):
    node, client, pubs, poses, keypoints, diagnostics = running
    _, cam, query = room_scene
    pubs["info"].publish(camera_info(cam))
    assert all(r.successful for r in set_params(client, max_rate_hz=0.01))   # one frame per 100 s
    try:
        def counts():
            v = diagnostics_values(diagnostics[-1])
            return int(v["frames_processed"]), int(v["frames_skipped_rate"]), int(v["frames_in"])

        # The first frame may or may not pass (when was the last?); the one after it is within 100 s.
        before = counts()
        pubs["image"].publish(image_msg(query[1][0], 11 * 10**11))
        wait_for(lambda: counts()[2] > before[2] and counts()[:2] != before[:2], 60, "the first frame", node)
        processed, skipped, _ = counts()
        send_and_wait(running, image_msg(query[1][0], 11 * 10**11 + 1), "frames_skipped_rate")
        assert counts()[0] == processed
        response = client.call(Trigger, "/lift_localizer/relocalize", Trigger.Request())
        assert response.success and "next image is localized at once" in response.message \
            and "rate limit restarts" in response.message
        n = len(poses)
        send_and_wait(running, image_msg(query[1][0], 11 * 10**11 + 2), "frames_processed")
        wait_for(lambda: len(poses) > n, 10, "the relocalized frame's pose", node)
        assert stamp_ns(poses[-1].header) == 11 * 10**11 + 2
        # Handled: the node says nothing is pending (what benchmark-node waits for).
        wait_for(lambda: diagnostics_values(diagnostics[-1]).get("frames_pending") == "0", 10, "no frame pending", node)
        wait_for(lambda: "relocalized: ok" in node.output(), 5, "the log line", node)
        # Only that one: the next frame is held back by the rate limit again.
        send_and_wait(running, image_msg(query[1][0], 11 * 10**11 + 3), "frames_skipped_rate")
    finally:
        set_params(client, max_rate_hz=0.0)


def test_compressed_images(room_scene, tmp_path):
    root, cam, query = room_scene
    node = NodeProcess("-p", f"map_path:={root / 'map'}", "-p", f"max_keypoints:={KEYPOINTS}",
                       "-p", "image_transport:=compressed", "-r", "image:=/cam/image_raw",
                       "-r", "camera_info:=/cam/camera_info", log=tmp_path / "node.log", domain_offset=50)
    # A domain of its own: the module's `running` node (also /lift_localizer, same topics) is still up.
    client = Client("compressed_client", domain_offset=50)
    try:
        poses = client.collect(PoseWithCovarianceStamped, "/pose")
        diagnostics = client.collect(DiagnosticArray, "/diagnostics")
        pub = client.publisher(CompressedImage, "/cam/image_raw/compressed")
        info = client.node.create_publisher(CameraInfo, "/cam/camera_info", 10)
        wait_for(lambda: diagnostics and "images" in diagnostics_values(diagnostics[-1])["map"], 60, "the map", node)
        wait_for(lambda: pub.get_subscription_count() > 0, 20, "the subscription", node)
        truth = {}
        # Best effort by default: repeat until a frame is through, as a camera would.
        for k in range(12):
            i = k % len(query)
            ok, jpeg = cv2.imencode(".jpg", query[i][0], [cv2.IMWRITE_JPEG_QUALITY, 95])
            msg = CompressedImage(format="jpeg", data=jpeg.tobytes())
            msg.header.stamp.sec = 10 + k
            truth[10 + k] = query[i][1]
            info.publish(camera_info(cam))
            pub.publish(msg)
            try:
                wait_for(lambda: poses, 3, "a pose", node)
                break
            except AssertionError:
                continue
        wait_for(lambda: poses, 20, "a pose from a JPEG", node)
        p = poses[0].pose.pose
        dt, _ = pose_error(T_from_tq(np.array([p.position.x, p.position.y, p.position.z]),
                                     np.array([p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w])),
                           truth[poses[0].header.stamp.sec])
        assert dt < 0.1
        assert "conversion by" in node.output() and node.alive()
    finally:
        client.close()
        node.stop()


def test_images_lost_on_the_way_are_counted(tmp_path, monkeypatch):
    """Over UDP alone, loopback loses most ~1 MB best-effort images (their 64 kB fragments overrun the
    socket's buffer): each image either reaches the node (frames_in) or DDS reports it lost
    (frames_lost). A small image at the end goes through and shows the gap before it; the first
    image, if lost, has no gap before it, so one may go uncounted."""
    monkeypatch.setenv("FASTDDS_BUILTIN_TRANSPORTS", "UDPv4")
    # No map: the node counts its images all the same. A domain of its own, beside the module's node.
    node = NodeProcess("-r", "image:=/cam/image_raw", log=tmp_path / "node.log", domain_offset=70)
    client = Client("lossy_client", domain_offset=70)
    try:
        diagnostics = client.collect(DiagnosticArray, "/diagnostics")
        pub = client.publisher(Image, "/cam/image_raw")
        wait_for(lambda: pub.get_subscription_count() > 0 and diagnostics, 60, "the node's subscription", node)
        time.sleep(0.5)   # the node's side of the match too, before the first image
        big = image_msg(np.zeros((480, 640, 3), np.uint8), 0)
        sent = 20
        for k in range(sent - 1):
            pub.publish(big)
            time.sleep(0.03)
        pub.publish(image_msg(np.zeros((8, 8, 3), np.uint8), 0))

        def counted() -> int:
            v = diagnostics_values(diagnostics[-1])
            return int(v["frames_in"]) + int(v["frames_lost"])

        wait_for(lambda: counted() >= sent - 1, 30, "every image to be received or reported lost", node)
        time.sleep(1.5)   # a later report must not count more than was sent
        v = diagnostics_values(diagnostics[-1])
        assert sent - 1 <= counted() <= sent, v
    finally:
        client.close()
        node.stop()


def test_real_bag_replayed_into_the_node_gives_the_offline_accuracy(tmp_path):
    """`benchmark-node`: the node as a subprocess, `play` replaying a real query bag into it, /pose
    and /keypoints heard over DDS, poses against ground truth and against offline runs.

    Real time (`--rate 1`, the bag spans 14 s): with the node's newest-wins slot, three frames are
    processed (the first, one mid-replay, the last) whenever a frame takes under the span, whatever the
    CPU; at `--rate 2` a loaded 2-core runner (7.2 s a frame, beside the other test worker) got two."""
    import json
    import signal
    import subprocess
    import sys

    from conftest import shared_path
    from ros_harness import ros_env

    bags = shared_path("bags", "tum_fr3_office")
    scratch = tmp_path / "tmp"   # where the node's log goes while it runs
    scratch.mkdir()
    assert main(["build-map", "--bag", str(bags / "mapping"), "--output", str(tmp_path / "map"), "--features", "lift",
                 "--max-keypoints", "1000"]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "lift_localizer", "benchmark-node", "--map", str(tmp_path / "map"),
                             "--bag", str(bags / "query"), "--rate", "1", "--max-keypoints", "1000", "--qos",
                             "best_effort", "--json", str(tmp_path / "b.json")],
                            # Its own domain: the module's `running` node (also /lift_localizer) is still up.
                            env={**ros_env(domain_offset=100), "TMPDIR": str(scratch)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        # Ctrl-C, so that benchmark-node stops the node it started (a kill would leave it running).
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"benchmark-node did not finish in 400 s\n{stdout[-2000:]}\n{stderr[-3000:]}")
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0, out.stderr[-8000:]   # room for a stuck player's stack dump
    assert "latency image → /pose: median" in out.stdout and "processed-frame rate" in out.stdout
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["idle"], out.stdout
    assert not list(scratch.glob("lift_node_*.log")), "a successful run leaves no log behind"
    assert result["processed"] >= 3 and result["localized"] >= result["processed"] - 1, out.stdout
    node, offline = np.array(result["node_errors"]), np.array(result["offline_errors"])
    localized = np.isfinite(node[:, 0])
    assert np.all(node[localized, 0] < 0.05) and np.all(node[localized, 1] < 5)
    np.testing.assert_allclose(node[localized], offline[localized], atol=1e-4)
