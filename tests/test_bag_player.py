"""`play` and `record` over real DDS: a subscriber in this process hears `python -m lift_localizer play`,
and `record` writes what a publisher here sends. Each run uses a ROS domain of this test process."""
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")

from conftest import shared_path
from geometry_msgs.msg import (
    Point,
    Pose,
    PoseStamped,
    PoseWithCovariance,
    PoseWithCovarianceStamped,
    Quaternion,
)
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, Writer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from lift_localizer.cli import main
from lift_localizer.geometry.camera import Camera
from lift_localizer.bags.writer import write_bag
from lift_localizer.mapping.frames import Frame
from lift_localizer.ros.bag_player import BagPlayer, PlayOptions, to_rclpy
from lift_localizer.ros.interfaces import default_typestore, ensure_type
from lift_localizer.synthetic import room_sequence

REPO = Path(__file__).resolve().parents[1]
# Offset from tests/ros_harness.py's choice, so that this module never shares a domain with the node tests.
DOMAIN = 1 + (os.getpid() + 100) % 200
ENV = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_LOCALHOST_ONLY")}
ENV.update(ROS_DOMAIN_ID=str(DOMAIN), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
SPACING_NS = 250_000_000   # between the frames of the small bag
N_FRAMES = 8


def cli(*argv, timeout=60):
    return subprocess.run([sys.executable, "-m", "lift_localizer", *map(str, argv)], env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, check=False)


class Listener:
    """A node on a context of its own (default Fast DDS transports, like a node started by hand), its
    executor spinning on a thread; keeps what arrives with the arrival time."""

    def __init__(self, subscriptions: dict[str, type]) -> None:
        self.context = rclpy.Context()
        saved = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
        try:
            rclpy.init(context=self.context, domain_id=DOMAIN)
        finally:
            os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE") if saved is None else os.environ.update(
                ROS_AUTOMATIC_DISCOVERY_RANGE=saved)
        self.node = rclpy.create_node("test_listener", context=self.context)
        self.received: dict[str, list] = defaultdict(list)
        for topic, cls in subscriptions.items():
            self.node.create_subscription(cls, topic, lambda m, t=topic: self.received[t].append((time.perf_counter(), m)),
                                          RELIABLE)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self.context.ok():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._stop.set()
        self.thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()


def ctrl_c(proc: subprocess.Popen) -> tuple[str, str]:
    """Interrupt a play/record subprocess as a user would and collect its output."""
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=20)


@contextlib.contextmanager
def listening(subscriptions):
    listener = Listener(subscriptions)
    try:
        yield listener
    finally:
        listener.close()


def bag_messages(path):
    """topic → [raw CDR bytes] in bag order."""
    reader = Reader(path)
    reader.open()
    try:
        out = defaultdict(list)
        for conn, _, raw in reader.messages():
            out[conn.topic].append(bytes(raw))
        return out
    finally:
        reader.close()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("play")
    K, views, _ = room_sequence(N_FRAMES, 0, image_size=(120, 160))
    cam = Camera(160, 120, K)
    frames = [Frame(str(i), cam, T, stamp_ns=10**18 + i * SPACING_NS, loader=lambda im=im: im)
              for i, (im, T) in enumerate(views)]
    write_bag(root / "bag", frames)
    return root, frames


@pytest.fixture(scope="module")
def played(small):
    """The small bag played at rate 5 while this process listens and the player records two topics."""
    root, _ = small
    topics = {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo, "/ground_truth/pose": PoseStamped}
    with listening(topics) as listener:
        proc = cli("play", root / "bag", "--rate", 5, "--wait-for-subscribers", "--start-delay", 0.2, "--record-out", root / "recorded",
                   "--record-topics", "/camera/image_raw", "/ground_truth/pose", "--record-grace", 0.3)
        time.sleep(0.3)
    return proc, listener.received, root / "recorded"


def test_play_delivers_every_message_unchanged(small, played):
    _, frames = small
    proc, received, _ = played
    assert proc.returncode == 0, proc.stderr
    assert "DDS teardown" not in proc.stderr  # torn down in order, in time, without an error
    assert {t: len(v) for t, v in received.items()} == {
        "/camera/image_raw": N_FRAMES, "/camera/camera_info": N_FRAMES, "/ground_truth/pose": N_FRAMES}
    for f, (_, img), (_, info), (_, pose) in zip(frames, received["/camera/image_raw"], received["/camera/camera_info"],
                                                  received["/ground_truth/pose"]):
        stamp = img.header.stamp.sec * 10**9 + img.header.stamp.nanosec
        assert stamp == f.stamp_ns and img.encoding == "mono8"
        np.testing.assert_array_equal(np.frombuffer(img.data, np.uint8).reshape(img.height, img.width), f.image())
        np.testing.assert_allclose(np.asarray(info.k).reshape(3, 3), f.camera.K)
        p = pose.pose.position
        np.testing.assert_allclose([p.x, p.y, p.z], f.T_map_camera[:3, 3])


def test_play_spacing_is_the_recorded_one_over_the_rate(played):
    proc, received, _ = played
    arrivals = np.array([t for t, _ in received["/camera/image_raw"]])
    span, recorded, expected = arrivals[-1] - arrivals[0], (N_FRAMES - 1) * SPACING_NS / 1e9, (N_FRAMES - 1) * SPACING_NS / 5e9
    # Generous bounds (DDS and a busy machine): clearly scaled, clearly not published at once.
    assert 0.5 * expected < span < 0.5 * recorded, (span, expected)
    assert "played 24 messages" in proc.stdout and "(asked 5)" in proc.stdout


def test_record_while_playing_writes_the_played_bytes(small, played):
    root, _ = small
    proc, _, recorded = played
    assert proc.returncode == 0, proc.stderr
    assert f"recorded {2 * N_FRAMES} messages" in proc.stdout
    original, got = bag_messages(root / "bag"), bag_messages(recorded)
    assert set(got) == {"/camera/image_raw", "/ground_truth/pose"}
    for topic in got:
        assert got[topic] == original[topic]
    assert not any(p.name.endswith(".partial") for p in root.iterdir())


def test_large_images_arrive_through_the_converter_and_topic_filter(tmp_path):
    """3.7 MB images (1280×960×3) on an mcap bag, converted field by field, only the image topic."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (960, 1280, 3), dtype=np.uint8) for _ in range(3)]
    cam = Camera(1280, 960, np.array([[900.0, 0, 640], [0, 900, 480], [0, 0, 1]]))
    write_bag(tmp_path / "large", [Frame(str(i), cam, np.eye(4), stamp_ns=10**18 + i * 10**8, loader=lambda im=im: im)
                                   for i, im in enumerate(images)], storage="mcap")
    with listening({"/camera/image_raw": Image, "/camera/camera_info": CameraInfo}) as listener:
        proc = cli("play", tmp_path / "large", "--rate", 2, "--topics", "/camera/image_raw", "--convert",
                   "--wait-for-subscribers", "--start-delay", 0.2)
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr
    assert "(converted)" in proc.stdout
    got = listener.received["/camera/image_raw"]
    assert len(got) == 3 and not listener.received["/camera/camera_info"]
    for want, (_, msg) in zip(images, got):
        assert msg.encoding == "bgr8"
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(960, 1280, 3), want)


def test_real_bag_camera_info_plays(tmp_path):
    bag = shared_path("bags", "tum_fr3_office", "query")
    ts, reader = default_typestore(), Reader(bag)
    reader.open()
    conn = next(c for c in reader.connections if c.topic == "/camera/camera_info")
    want = ts.deserialize_cdr(next(raw for _, _, raw in reader.messages(connections=[conn])), conn.msgtype)
    reader.close()
    with listening({"/camera/camera_info": CameraInfo, "/camera/image_raw": Image}) as listener:
        proc = cli("play", bag, "--topics", "/camera/camera_info", "--rate", 50, "--wait-for-subscribers",
                   "--start-delay", 0.2)
        time.sleep(0.3)
    assert proc.returncode == 0, proc.stderr
    infos = listener.received["/camera/camera_info"]
    assert infos and not listener.received["/camera/image_raw"]
    np.testing.assert_array_equal(np.asarray(infos[0][1].k), want.k)
    assert (infos[0][1].width, infos[0][1].height) == (want.width, want.height)


def test_record_round_trip_and_ctrl_c_finishes_the_bag(tmp_path):
    topics = ["/pose", "/keypoints"]
    try:
        from lift_localizer_msgs.msg import Keypoints
    except ImportError:
        Keypoints = None
    out = tmp_path / "rec"
    with listening({}) as client:
        pose_pub = client.node.create_publisher(PoseStamped, "/pose", RELIABLE)
        kp_pub = client.node.create_publisher(Keypoints, "/keypoints", RELIABLE) if Keypoints else None
        proc = subprocess.Popen([sys.executable, "-m", "lift_localizer", "record", out, "--topics", *topics],
                                env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 20
            while pose_pub.get_subscription_count() == 0 or (kp_pub and kp_pub.get_subscription_count() == 0):
                assert time.time() < deadline and proc.poll() is None, "the recorder never subscribed"
                time.sleep(0.05)
            assert not out.exists() and (tmp_path / ".rec.partial").is_dir()
            sent = []
            for i in range(10):
                msg = PoseStamped(header=Header(frame_id="map"),
                                  pose=Pose(position=Point(x=float(i), y=0.5 * i, z=-1.0),
                                            orientation=Quaternion(x=0.0, y=0.0, z=np.sin(i / 10), w=np.cos(i / 10))))
                msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + i, 7 * i
                pose_pub.publish(msg)
                sent.append(msg)
                time.sleep(0.02)
            if kp_pub:
                kp = Keypoints(header=Header(frame_id="camera"), descriptor_size=128)
                kp.x = np.arange(5, dtype=np.float32).tolist()
                kp.descriptors = np.linspace(0, 1, 5 * 128, dtype=np.float32).tolist()
                kp_pub.publish(kp)
            time.sleep(0.5)
            stdout, stderr = ctrl_c(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert "recorded" in stdout and "Traceback" not in stderr
    assert out.is_dir() and not (tmp_path / ".rec.partial").exists()
    got = bag_messages(out)
    assert [deserialize_message(raw, PoseStamped) for raw in got["/pose"]] == sent
    # The bag's own definitions are complete: rosbags reads it without the installed interfaces.
    reader = Reader(out)
    reader.open()
    assert {c.topic: c.msgtype for c in reader.connections}["/pose"] == "geometry_msgs/msg/PoseStamped"
    reader.close()
    if kp_pub:
        ts = default_typestore()
        ensure_type(ts, "lift_localizer_msgs/msg/Keypoints")
        (raw,) = got["/keypoints"]
        back = ts.deserialize_cdr(raw, "lift_localizer_msgs/msg/Keypoints")
        assert back.descriptor_size == 128 and back.header.frame_id == "camera"
        np.testing.assert_array_equal(back.descriptors, np.linspace(0, 1, 5 * 128, dtype=np.float32))


@pytest.mark.parametrize("damage", ["missing", "truncated", "not_a_database", "bad_metadata"])
def test_bad_bags_fail_with_exit_2_and_a_message(small, tmp_path, capsys, damage):
    root, _ = small
    bag = tmp_path / "bag"
    if damage != "missing":
        bag.mkdir()
        (bag / "metadata.yaml").write_bytes((root / "bag" / "metadata.yaml").read_bytes())
        db = (root / "bag" / "bag.db3").read_bytes()
        (bag / "bag.db3").write_bytes({"truncated": db[: len(db) // 3], "not_a_database": b"\x07" * 5000}.get(damage, db))
        if damage == "bad_metadata":
            (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [")
    assert main(["play", str(bag)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bag}") and "Traceback" not in err


def test_corruption_found_while_playing_exits_2(small, tmp_path):
    root, _ = small
    db = bytearray((root / "bag" / "bag.db3").read_bytes())
    (tmp_path / "bag").mkdir()
    (tmp_path / "bag" / "metadata.yaml").write_bytes((root / "bag" / "metadata.yaml").read_bytes())
    # A page in the middle: the overflow pages of image blobs, which sqlite reads only when playing.
    mid = len(db) // 2 // 4096 * 4096
    db[mid: mid + 4096] = b"\xff" * 4096
    (tmp_path / "bag" / "bag.db3").write_bytes(bytes(db))
    proc = cli("play", tmp_path / "bag", "--rate", 1000, "--start-delay", 0)
    assert proc.returncode == 2
    assert "corrupt or truncated bag" in proc.stderr and "Traceback" not in proc.stderr


# Fast DDS's TCP transport can deadlock while the participant is torn down; here the same step
# blocks for good, as it then does, by a patch in the player's process.
STUCK_TEARDOWN = """
import sys, threading
import rclpy.context
rclpy.context.Context.try_shutdown = lambda self: threading.Event().wait()
from lift_localizer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_play_exits_with_its_summary_when_dds_teardown_deadlocks(small):
    root, _ = small
    proc = subprocess.Popen([sys.executable, "-c", STUCK_TEARDOWN, "play", str(root / "bag"), "--rate", "50",
                             "--start-delay", "0"], env=ENV, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"play hung in a deadlocked DDS teardown\n{stdout[-1000:]}\n{stderr[-1000:]}")
    assert proc.returncode == 0, stderr
    assert "played 24 messages" in stdout
    assert "warning: DDS teardown did not finish within 10 s" in stderr and "Traceback" not in stderr


def test_play_and_record_refuse_bad_requests(small, tmp_path, capsys):
    root, _ = small
    assert main(["play", str(root / "bag"), "--topics", "/nope"]) == 2
    assert "no topic /nope" in capsys.readouterr().err
    assert main(["record", str(root / "bag"), "--topics", "/pose"]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["record", str(tmp_path / "x"), "--topics", "/a=nonexistent_msgs/msg/Thing"]) == 2
    assert "nonexistent_msgs/msg/Thing is not installed" in capsys.readouterr().err


# ------------------------------------------------------------------ conversion, without DDS

def _samples():
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    image = Image(header=header, height=2, width=3, encoding="rgb8", step=9)
    image.data = bytes(range(18))
    compressed = CompressedImage(header=header, format="jpeg")
    compressed.data = bytes([255, 216, 1, 2, 3])
    info = CameraInfo(header=header, height=480, width=640, distortion_model="plumb_bob")
    info.d = [0.1, -0.2, 0.0, 0.0, 0.01]
    info.k = np.arange(9, dtype=np.float64)
    pose = Pose(position=Point(x=1.0, y=2.0, z=3.0), orientation=Quaternion(x=0.0, y=0.0, z=0.6, w=0.8))
    cov = PoseWithCovariance(pose=pose)
    cov.covariance = np.arange(36, dtype=np.float64)
    return [image, compressed, info, PoseStamped(header=header, pose=pose),
            PoseWithCovarianceStamped(header=header, pose=cov)]


@pytest.mark.parametrize("msg", _samples(), ids=lambda m: type(m).__name__)
def test_to_rclpy_matches_rclpy_deserialization(msg):
    raw = serialize_message(msg)
    cls = type(msg)
    typename = f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"
    converted = to_rclpy(default_typestore().deserialize_cdr(raw, typename), cls)
    assert converted == msg and serialize_message(converted) == raw


def test_a_changed_definition_is_converted_by_field_name(tmp_path):
    """A bag whose PoseStamped header still has ROS 1's `seq`: its hash differs from the installed
    type's, so the player converts it, dropping `seq` and keeping the rest."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    old = ("std_msgs/Header header\ngeometry_msgs/Pose pose\n" + "=" * 80 + "\nMSG: std_msgs/Header\n"
           "uint32 seq\nbuiltin_interfaces/Time stamp\nstring frame_id\n" + "=" * 80 + "\nMSG: builtin_interfaces/Time\n"
           "int32 sec\nuint32 nanosec\n" + "=" * 80 + "\nMSG: geometry_msgs/Pose\ngeometry_msgs/Point position\n"
           "geometry_msgs/Quaternion orientation\n" + "=" * 80 + "\nMSG: geometry_msgs/Point\nfloat64 x\nfloat64 y\n"
           "float64 z\n" + "=" * 80 + "\nMSG: geometry_msgs/Quaternion\nfloat64 x\nfloat64 y\nfloat64 z\nfloat64 w\n")
    ts = get_typestore(Stores.EMPTY)
    ts.register(get_types_from_msg(old, "geometry_msgs/msg/PoseStamped"))
    T = ts.types
    msg = T["geometry_msgs/msg/PoseStamped"](
        header=T["std_msgs/msg/Header"](seq=7, stamp=T["builtin_interfaces/msg/Time"](sec=5, nanosec=6), frame_id="map"),
        pose=T["geometry_msgs/msg/Pose"](position=T["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=3.0),
                                         orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)))
    with Writer(tmp_path / "old", version=8) as w:
        conn = w.add_connection("/pose", "geometry_msgs/msg/PoseStamped", msgdef=old,
                                rihs01=ts.hash_rihs01("geometry_msgs/msg/PoseStamped"))
        w.write(conn, 1, ts.serialize_cdr(msg, "geometry_msgs/msg/PoseStamped"))
    player = BagPlayer(tmp_path / "old", PlayOptions())
    try:
        assert player.result.converted == ["/pose"]
        (conn, _, raw), = list(player._messages())
        out = player._payload(conn, raw, player.topics["/pose"])
    finally:
        player.close()
    assert isinstance(out, PoseStamped) and out.header.frame_id == "map"
    assert (out.header.stamp.sec, out.header.stamp.nanosec, out.pose.position.z) == (5, 6, 3.0)


def test_loop_plays_until_ctrl_c_and_summarizes(small):
    root, _ = small
    # --wait-for-subscribers waits for one on every topic it plays.
    with listening({"/camera/image_raw": Image, "/camera/camera_info": CameraInfo,
                    "/ground_truth/pose": PoseStamped}) as listener:
        proc = subprocess.Popen([sys.executable, "-m", "lift_localizer", "play", str(root / "bag"), "--loop", "--rate",
                                 "20", "--wait-for-subscribers", "--start-delay", "0"], env=ENV, cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # Interrupt once more than two passes have arrived, however long the start-up takes on a
            # loaded machine (a fixed sleep made this depend on the load).
            deadline = time.monotonic() + 120
            while len(listener.received["/camera/image_raw"]) <= 2 * N_FRAMES and time.monotonic() < deadline \
                    and proc.poll() is None:
                time.sleep(0.05)
            stdout, stderr = ctrl_c(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout and "Traceback" not in stderr
    loops = int(stdout.split(" loops")[0].rsplit(" ", 1)[1])
    assert loops >= 2
