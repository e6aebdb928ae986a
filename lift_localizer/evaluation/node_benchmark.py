"""``lift-localizer benchmark-node``: the node under a real-time replay, measured from outside.

Starts ``lift_localizer_node`` as ``ros2 run`` would, plays the query bag into it with ``play`` (in
real time by default), and listens to the camera topic, ``/pose``, ``/keypoints`` and
``/diagnostics``. Prints:
- latency from an image's publication (its arrival at this listener) to its /pose;
- the processed-frame rate and how many frames the node received, dropped and localized;
- the accuracy of /pose against the bag's ground truth, beside offline ``Localizer`` runs on
  exactly the frames the node processed (the node must match them).
Replayed stamps are the bag's own, so latency is measured on this listener's clock, not stamps.
"""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..geometry.pose import T_from_tq, pose_error
from ..stack_dump import ask_for_stacks
from .metrics import THRESHOLDS, within


def _header_stamp_ns(cdr: bytes) -> int:
    """Header stamp of a serialized message that starts with std_msgs/Header (all we listen to)."""
    sec, nsec = struct.unpack_from("<iI" if cdr[1] == 1 else ">iI", cdr, 4)
    return sec * 10**9 + nsec


class ChildTimeout(RuntimeError):
    """A child process that did not finish in its time; it has been killed, with its children."""


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group ``proc`` leads (its own, from start_new_session),
    the leader itself or what it started and left behind, and reap the leader."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the group is empty
        pass
    proc.wait()


def run_bounded(cmd: list[str], timeout_s: float, what: str, **popen) -> int:
    """Run ``cmd`` in a process group of its own, at most ``timeout_s`` seconds; its exit code.
    On expiry (or Ctrl-C here) the whole group is killed — a player stuck in DDS teardown, or
    anything it started, must not outlive the benchmark — and ChildTimeout names ``what``. Before
    an expired child is killed, it is asked to write its threads' stacks to its stderr
    (``stack_dump``), so that where it was stuck is not lost with it."""
    proc = subprocess.Popen(cmd, start_new_session=True, **popen)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        ask_for_stacks(proc)
        _kill_group(proc)
        raise ChildTimeout(f"{what} did not finish within {timeout_s:.0f} s; killed it "
                           f"(process group {proc.pid}; its threads' stacks are in its stderr)") from None
    except BaseException:
        _kill_group(proc)
        raise


def stop_group(proc: subprocess.Popen, grace_s: float) -> str | None:
    """Ctrl-C for the process group ``proc`` leads, SIGKILL if the leader is still there after
    ``grace_s`` seconds (after asking it for its threads' stacks, as ``run_bounded`` does); a
    message saying so then, else None. Whatever else of the group is left once the leader has gone
    is killed too."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(grace_s)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            ask_for_stacks(proc)
            _kill_group(proc)
            return (f"it did not stop within {grace_s:g} s of Ctrl-C; killed it (process group {proc.pid}; "
                    "its threads' stacks are at the end of its log)")
    _kill_group(proc)
    return None


def node_idle(diag: dict[str, str]) -> bool:
    """Whether the node's ``/diagnostics`` say that no frame it received is waiting in its slot or
    running in its worker (``frames_pending``)."""
    try:
        return int(diag["frames_pending"]) == 0
    except (KeyError, ValueError):
        return False


def _recall_row(err: np.ndarray) -> str:
    return "  ".join(f"({t:g} m,{r:g}°) {np.mean(within(err, (t, r))):.3f}" for t, r in THRESHOLDS)


def run(args) -> int:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from ..localization.localizer import Localizer
    from ..bags.reader import BagError, bag_topics, pick_image_topic, read_frames
    from ..mapping.io import MapError, load_map
    from ..ros.params import BY_NAME, PARAMS, localizer_conf

    # The bag and the map are checked here, before a node is started for them.
    try:
        frames = read_frames(args.bag, args.image_topic, args.camera_info_topic, pose_topic=args.ground_truth_topic)
        image_topic = pick_image_topic(bag_topics(args.bag), args.image_topic, Path(args.bag))
        the_map = load_map(args.map)
    except (BagError, MapError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    truth = {f.stamp_ns: f.T_map_camera for f in frames if f.T_map_camera is not None}
    if not truth:
        print(f"error: {args.bag}: no image has a ground-truth pose on {args.ground_truth_topic} "
              "(benchmark-node scores /pose against it)", file=sys.stderr)
        return 2
    compressed = image_topic.endswith("/compressed")
    base_topic = image_topic[: -len("/compressed")] if compressed else image_topic
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env = dict(os.environ)
    params = {"map_path": str(args.map), "max_keypoints": args.max_keypoints, "top_k": args.top_k,
              "qos_reliability": args.qos, "image_transport": "compressed" if compressed else "raw"}
    node_cmd = [sys.executable, "-m", "lift_localizer.ros.node", "--ros-args", "-r", "__node:=lift_localizer",
                "-r", f"image:={base_topic}", "-r", f"camera_info:={args.camera_info_topic}"]
    for k, v in params.items():
        node_cmd += ["-p", f"{k}:={v}"]
    fd, log_name = tempfile.mkstemp(prefix="lift_node_", suffix=".log")
    log = Path(log_name)
    # A group of its own: stopped (and if need be killed) as a whole, whatever ends the benchmark.
    with os.fdopen(fd, "w") as log_file:
        node_proc = subprocess.Popen(node_cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    listener, replayed = None, False
    try:
        rclpy.init()
        listener = rclpy.create_node("lift_localizer_benchmark")
        lock = threading.Lock()
        seen_image, seen_pose, processed, poses, diag = {}, {}, set(), {}, {}
        diag_at = [0.0]   # when the last /diagnostics arrived (time.monotonic)

        def on_image(raw: bytes) -> None:
            with lock:
                seen_image.setdefault(_header_stamp_ns(raw), time.monotonic())

        def on_pose(msg) -> None:
            s = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            p, q = msg.pose.pose.position, msg.pose.pose.orientation
            with lock:
                seen_pose[s] = time.monotonic()
                poses[s] = T_from_tq(np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))

        def on_keypoints(raw: bytes) -> None:
            with lock:
                processed.add(_header_stamp_ns(raw))

        def on_diagnostics(msg) -> None:
            for status in msg.status:
                if status.name.startswith("lift_localizer"):
                    with lock:
                        diag.clear()
                        diag.update({kv.key: kv.value for kv in status.values})
                        diag_at[0] = time.monotonic()

        from sensor_msgs.msg import CompressedImage, Image
        from ..ros.interfaces import message_class

        listen_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT if args.qos == "best_effort"
                                else ReliabilityPolicy.RELIABLE)
        image_type = CompressedImage if compressed else Image
        listener.create_subscription(image_type, image_topic, on_image, listen_qos, raw=True)
        listener.create_subscription(PoseWithCovarianceStamped, "/pose", on_pose, 50)
        listener.create_subscription(message_class("lift_localizer_msgs/msg/Keypoints"), "/keypoints", on_keypoints, 50,
                                     raw=True)
        listener.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        spin = threading.Thread(target=lambda: rclpy.spin(listener), daemon=True)
        spin.start()
        deadline = time.monotonic() + 120
        # "map not loaded" is final: the node retries only on a parameter change.
        while "images" not in diag.get("map", "") and not diag.get("map", "").startswith("map not loaded") \
                and time.monotonic() < deadline:
            if node_proc.poll() is not None:
                print(log.read_text()[-3000:], file=sys.stderr)
                return 2
            time.sleep(0.1)
        if "images" not in diag.get("map", ""):
            print(f"error: the node did not load the map: {diag.get('map')}\n{log.read_text()[-2000:]}", file=sys.stderr)
            return 2
        play = [sys.executable, "-m", "lift_localizer", "play", str(args.bag), "--rate", str(args.rate), "--topics",
                image_topic, args.camera_info_topic, "--wait-for-subscribers", image_topic, args.camera_info_topic]
        span_s = (max(truth) - min(truth)) / 1e9 if truth else 0.0
        # Bounded: a player that never sees the node's subscriptions would otherwise wait forever.
        play_timeout = 120 + span_s / args.rate
        t0 = time.monotonic()
        try:
            code = run_bounded(play, play_timeout, "play", env=env, stdout=subprocess.DEVNULL)
        except ChildTimeout as e:
            print(f"error: {e} (did the node subscribe to {image_topic} and {args.camera_info_topic}?)\n"
                  f"{log.read_text()[-2000:]}", file=sys.stderr)
            return 2
        if code != 0:
            print(f"error: play exited with code {code}", file=sys.stderr)
            return 2
        play_end = time.monotonic()
        play_s = play_end - t0
        # The last frames may still be waiting or running. A fixed wait would cut them off on a slow
        # CPU, so wait until a /diagnostics sent a period after the replay (the last images have
        # arrived by then) shows the node idle, or until --settle runs out.
        period = BY_NAME["diagnostics_period_s"].default
        settle = play_end + args.settle
        while time.monotonic() < settle:
            with lock:
                if diag_at[0] > play_end + period and node_idle(diag):
                    break
            time.sleep(0.2)
        settle_s = time.monotonic() - play_end
        replayed = True
    finally:
        why = stop_group(node_proc, 10)
        if why is not None:
            print(f"warning: the node: {why}; its log: {log}", file=sys.stderr)
        elif not replayed:
            print(f"the node's log: {log}", file=sys.stderr)
        else:
            log.unlink(missing_ok=True)   # nothing went wrong: no file left behind per run
        if listener is not None:
            listener.destroy_node()
        rclpy.try_shutdown()

    with lock:
        idle = node_idle(diag)
        processed_stamps = sorted(s for s in processed if s in truth)
        latency = np.array([seen_pose[s] - seen_image[s] for s in seen_pose if s in seen_image])
    n_bag = len(frames)
    print(f"bag {args.bag}: {n_bag} images over {(frames[-1].stamp_ns - frames[0].stamp_ns) / 1e9:.1f} s, "
          f"played at rate {args.rate:g} in {play_s:.1f} s; node QoS {args.qos}, {args.max_keypoints} keypoints")
    if not idle:
        print(f"warning: the node was still busy {args.settle:g} s after the replay (--settle); frames it had "
              "received but not yet processed are missing below", file=sys.stderr)
    print(f"node: received {diag.get('frames_in', '?')}, lost on the way (DDS) {diag.get('frames_lost', '?')}, "
          f"dropped (newest wins) {diag.get('frames_dropped', '?')}, "
          f"processed {len(processed_stamps)}, localized {len(poses)}; this listener saw {len(seen_image)} images")
    if processed_stamps:
        bag_hz = args.rate * (n_bag - 1) / max((frames[-1].stamp_ns - frames[0].stamp_ns) / 1e9, 1e-9)
        print(f"processed-frame rate {len(processed_stamps) / play_s:.2f} Hz (bag rate × speed {bag_hz:.2f} Hz)")
    if len(latency):
        print(f"latency image → /pose: median {1000 * np.median(latency):.0f} ms, p90 {1000 * np.percentile(latency, 90):.0f} ms "
              f"(n = {len(latency)})")
    stage_keys = [k for k in diag if k.endswith("_ms_median")]
    print("node stage medians: " + "  ".join(f"{k[:-10]} {diag[k]} ms" for k in stage_keys))

    # The same frames offline, same settings: the node must give the same accuracy.
    localizer = Localizer(the_map, localizer_conf({**{p.name: p.default for p in PARAMS}, **params}))
    by_stamp = {f.stamp_ns: f for f in frames}
    err_node = np.full((len(processed_stamps), 2), np.inf)
    err_off = np.full((len(processed_stamps), 2), np.inf)
    diffs = []
    for i, s in enumerate(processed_stamps):
        f = by_stamp[s]
        r = localizer(f.image(), f.camera)
        if s in poses:
            err_node[i] = pose_error(poses[s], truth[s])
        if r.success:
            err_off[i] = pose_error(r.T_map_camera, truth[s])
            if s in poses:
                diffs.append(pose_error(poses[s], r.T_map_camera))
    print(f"on the {len(processed_stamps)} processed frames (vs {args.ground_truth_topic}):")
    print(f"  node    localized {int(np.isfinite(err_node[:, 0]).sum())}: {_recall_row(err_node)}")
    print(f"  offline localized {int(np.isfinite(err_off[:, 0]).sum())}: {_recall_row(err_off)}")
    if diffs:
        d = np.array(diffs)
        print(f"  node vs offline pose: max {d[:, 0].max() * 100:.3f} cm, {d[:, 1].max():.4f}°")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bag": str(args.bag), "rate": args.rate, "qos": args.qos, "frames": n_bag,
            "received": diag.get("frames_in"), "lost": diag.get("frames_lost"), "dropped": diag.get("frames_dropped"),
            "processed": len(processed_stamps),
            "localized": len(poses), "play_s": play_s, "settle_s": settle_s, "idle": idle,
            "latency_ms": {"median": float(1000 * np.median(latency)), "p90": float(1000 * np.percentile(latency, 90))}
            if len(latency) else None,
            "node_errors": err_node.tolist(), "offline_errors": err_off.tolist()}, indent=1))
    return 0
