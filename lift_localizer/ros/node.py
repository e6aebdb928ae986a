"""The ROS 2 node: camera images in, 6-DoF camera poses out. A thin rclpy layer over ``worker.Worker``,
which loads the map, warms up and localizes each frame without ROS.

Subscribes ``image`` (or ``image/compressed``), ``camera_info`` and ``initialpose`` (a prior that
limits retrieval where ``retrieval_radius_m`` is set, ``worker.Worker.initial_pose``); publishes ``pose``
(PoseWithCovarianceStamped), ``keypoints`` (only while someone listens), ``/diagnostics``, and
TF map→odom or map→camera where tf2_ros is installed (nothing where the camera frame has a parent
already that odom_frame does not lead to: ``transforms.decide_broadcast``); serves ``relocalize``
(std_srvs/Trigger: the next image is localized at once, ``frame_gate.FrameGate``, and published
whatever it jumps). Where TF knows odom→camera, a pose whose map→odom jumps is held until a second
frame agrees with it (``jump_gate.JumpGate``).

The executor only stores the newest frame; one worker thread decodes, localizes and publishes
(through the node's ``worker.Outlet`` methods), so
a slow CPU lowers the rate, never the latency. Nothing a message or a parameter carries stops the
node: each problem is logged once per cause (``cause_log.CauseLog``) and counted.

    ros2 run lift_localizer lift_localizer_node --ros-args -p map_path:=/path/to/map
"""
from __future__ import annotations

import os
import threading
import time
from typing import Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from ..geometry.camera import CameraError, camera_from_camera_info
from ..reasons import Failure, Reason
from ..stack_dump import dump_stacks_on_signal
from . import messages
from ..bags.convert import CONVERTER
from .cause_log import CauseLog
from .node_stats import NodeStats
from .params import BY_NAME, PARAMS, check
from .transforms import decide_broadcast, known_frames, tf_parents
from .worker import Odom, Worker

try:
    from lift_localizer_msgs.msg import Keypoints
except ImportError:   # the interface package is built separately (see README); the node runs without it
    Keypoints = None

try:
    import tf2_ros
except ImportError:   # not on PyPI; present on every full ROS 2 install
    tf2_ros = None

try:
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:   # Humble's rclpy names the module qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError

# How long to wait for odom→camera at the image stamp where odometry runs but is behind the image.
ODOM_WAIT_S = 0.05
def _guarded(callback):
    """An executor callback that logs and counts what it raises instead of ending ``spin``."""
    def run(self, *args):
        try:
            return callback(self, *args)
        except Exception as e:   # noqa: BLE001 — one bad message must not end the node
            self.work.internal_error(f"in {callback.__name__}", e)
    return run


def _descriptor(p) -> ParameterDescriptor:
    d = ParameterDescriptor(description=p.description + (f" ({', '.join(p.choices)})" if p.choices else ""),
                            read_only=p.read_only)
    if isinstance(p.default, bool) or p.low is None:
        return d
    if isinstance(p.default, int):
        d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
    else:
        d.floating_point_range = [FloatingPointRange(from_value=float(p.low), to_value=float(p.high), step=0.0)]
    return d


class LocalizerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("lift_localizer", **kwargs)
        self.stats = NodeStats()
        self.log = CauseLog(self.get_logger())
        self.params = self._declare_parameters()
        self.work = Worker(self.params, self, self.log, self.stats, self.resolve_topic_name("camera_info"))
        self.gate, self.jump_gate, self.slot = self.work.gate, self.work.jump_gate, self.work.slot
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._camera_msg = None
        self._destroyed = False

        p = self.params
        qos = QoSProfile(depth=p["qos_depth"], history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if p["qos_reliability"] == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        compressed = p["image_transport"] == "compressed"
        # As image_transport does: the compressed stream is the (remapped) image topic + /compressed.
        image_topic = self.resolve_topic_name("image") + ("/compressed" if compressed else "")
        image_type = CompressedImage if compressed else Image

        def on_image(msg) -> None:
            self._on_image(msg, compressed)

        # DDS reports images lost on the way (a best-effort sample that never arrived, seen as a gap in
        # the sequence): they never reach _on_image, so without this they would be counted nowhere.
        try:
            self.create_subscription(image_type, image_topic, on_image, qos,
                                     event_callbacks=SubscriptionEventCallbacks(message_lost=self._on_images_lost))
        except UnsupportedEventTypeError:   # an RMW without the event: images, uncounted losses
            self.create_subscription(image_type, image_topic, on_image, qos)
            self.stats.lost_reported = False
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos)
        # RViz's 2D Pose Estimate and nav2 publish it (reliable, depth 10 matches both).
        self.create_subscription(PoseWithCovarianceStamped, "initialpose", self._on_initial_pose, 10)
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
        self.keypoints_pub = self.create_publisher(Keypoints, "keypoints", 10) if Keypoints else None
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/relocalize", self._on_relocalize)
        self.create_timer(p["diagnostics_period_s"], self._publish_diagnostics)

        self.tf_broadcaster = self.tf_buffer = None
        # (odom_frame, camera_frame, stamp, seconds to wait) → T_odom_camera, raising LookupError where it
        # is unknown; None: no odometry to compare with (no jump gate, no map→odom). Replaceable, for
        # tests without tf2_ros.
        self.lookup_odom_camera: Callable[[str, str, object, float], np.ndarray] | None = None
        if tf2_ros is not None:
            self.tf_broadcaster = tf2_ros.TransformBroadcaster(self)
            self.tf_buffer = tf2_ros.Buffer()
            self._tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
            self.lookup_odom_camera = self._tf_odom_camera
        elif p["publish_tf"]:
            self.get_logger().info("tf2_ros is not installed: no TF is broadcast; /pose carries the pose")
        if Keypoints is None:
            self.get_logger().warning("lift_localizer_msgs is not installed: /keypoints is not published")
        self.get_logger().info(f"images on {image_topic} "
                               f"({p['qos_reliability']}, depth {p['qos_depth']}), conversion by {CONVERTER}")

        self._worker = threading.Thread(target=self.work.run, name="lift_localizer_worker", daemon=True)
        self._worker.start()

    # --- parameters -------------------------------------------------------------------------
    def _declare_parameters(self) -> dict:
        values = {}
        for p in PARAMS:
            try:
                value = self.declare_parameter(p.name, p.default, _descriptor(p)).value
                reason = check(p.name, value)
            except (InvalidParameterValueException, InvalidParameterTypeException) as e:
                value, reason = None, str(e)
            if reason is not None:
                # A bad value at start-up cannot be refused to anyone: say so loudly and run with the default.
                self.get_logger().error(f"parameter {p.name}: {reason}; using the default {p.default!r}")
                if self.has_parameter(p.name):
                    self.undeclare_parameter(p.name)
                value = self.declare_parameter(p.name, p.default, _descriptor(p), ignore_override=True).value
            values[p.name] = value
        return values

    def _on_set_parameters(self, params) -> SetParametersResult:
        for param in params:
            reason = check(param.name, param.value)
            if reason is None and BY_NAME[param.name].read_only:
                reason = f"{param.name} is read at start-up only; restart the node to change it"
            if reason is not None:
                self.get_logger().warning(f"refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        self.work.set_params({param.name: param.value for param in params})
        return SetParametersResult(successful=True)

    # --- callbacks (executor thread: store and return) ----------------------------------------
    @_guarded
    def _on_camera_info(self, msg: CameraInfo) -> None:
        last = self._camera_msg
        if last is not None and np.array_equal(msg.k, last.k) and np.array_equal(msg.d, last.d) \
                and (msg.width, msg.height) == (last.width, last.height) \
                and msg.distortion_model == last.distortion_model:
            return
        try:
            max_side = self.params["max_image_side"]
            if max(msg.width, msg.height) > max_side:
                raise CameraError(f"camera size {msg.width}×{msg.height} is larger than max_image_side = {max_side}")
            camera = camera_from_camera_info(msg)
        except (CameraError, ValueError, TypeError) as e:
            failure = Failure(Reason.BAD_CAMERA_INFO, str(e))
            self.stats.failure(failure, counter="bad")
            self.log.cause(Reason.BAD_CAMERA_INFO, f"{failure}; the last accepted camera_info stays in use"
                           if self.work.camera is not None else str(failure))
            return
        self.work.set_camera(camera)
        self._camera_msg = msg
        self.get_logger().info(f"camera {camera.width}×{camera.height}, fx {camera.K[0, 0]:.1f}")

    @_guarded
    def _on_image(self, msg, compressed: bool) -> None:
        self.stats.count("in")
        now = time.monotonic()
        ticket = self.gate.admit(now, self.params["max_rate_hz"])
        if ticket is None:
            self.stats.count("skipped_rate")
            return
        self.slot.put((msg, compressed, now, ticket))

    @_guarded
    def _on_images_lost(self, info) -> None:
        """``info``: rclpy's QoSMessageLostInfo (``total_count_change``: lost since the last event)."""
        self.stats.count("lost", info.total_count_change)

    @_guarded
    def _on_initial_pose(self, msg: PoseWithCovarianceStamped) -> None:
        p = msg.pose.pose.position
        self.work.initial_pose(msg.header.frame_id, np.array([p.x, p.y, p.z]))

    def _on_relocalize(self, request, response):
        self.jump_gate.clear()
        response.message = self.gate.relocalize() + ("; the jump gate forgot its last map→odom, so the next pose "
                                                     "is published whatever it jumps")
        response.success = True
        if self.work.localizer is None:
            response.message += f" (no map is loaded yet: {self.stats.map_status})"
        self.get_logger().info("relocalize requested: the next image is localized at once")
        return response

    # --- the worker's state, and its outlet (worker thread) -----------------------------------
    # The localizer and camera the worker uses, and its warm-up stage: tests put fakes in.
    @property
    def _localizer(self):
        return self.work.localizer

    @_localizer.setter
    def _localizer(self, localizer) -> None:
        self.work.localizer = localizer

    @property
    def _camera(self):
        return self.work.camera

    @_camera.setter
    def _camera(self, camera) -> None:
        self.work.set_camera(camera)

    @property
    def _warm_up(self) -> Callable[[], None]:
        return self.work.warm_up

    @_warm_up.setter
    def _warm_up(self, stage: Callable[[], None]) -> None:
        self.work.warm_up = stage

    def _process(self, msg, compressed: bool, received: float, ticket: int) -> None:
        """One frame as the worker thread handles it."""
        self.work.process(msg, compressed, received, ticket)

    def context_ok(self) -> bool:
        return self.context.ok()

    def publish_keypoints(self, features, header) -> None:
        if self.keypoints_pub is not None and self.keypoints_pub.get_subscription_count() > 0:
            self.keypoints_pub.publish(messages.keypoints_msg(features, header, Keypoints))

    def publish_pose(self, T_map_camera: np.ndarray, covariance: np.ndarray, header) -> None:
        out = type(header)(stamp=header.stamp, frame_id=self.params["map_frame"])
        self.pose_pub.publish(messages.pose_msg(T_map_camera, covariance, out))

    def odom_at(self, header) -> Odom:
        p = self.params
        camera_frame = p["camera_frame"] or header.frame_id
        if self.lookup_odom_camera is None or not p["odom_frame"] or not camera_frame:
            return Odom(None)
        try:
            # Not waiting yet: without odometry a wait would only delay /pose, every frame.
            return Odom(self.lookup_odom_camera(p["odom_frame"], camera_frame, header.stamp, 0.0))
        except LookupError:
            pass
        # What TF knows (its whole tree as YAML, parsed) is read only where odom→camera is missing,
        # not on every frame of a robot with odometry.
        parents = tf_parents(self.tf_buffer) if self.tf_buffer is not None else {}
        if p["odom_frame"] not in known_frames(parents):
            return Odom(None, parents)
        try:
            return Odom(self.lookup_odom_camera(p["odom_frame"], camera_frame, header.stamp, ODOM_WAIT_S))
        except LookupError as e:
            return Odom(None, parents, f"{p['odom_frame']}→{camera_frame} at the image stamp: {e}")

    def _tf_odom_camera(self, odom_frame: str, camera_frame: str, stamp, wait_s: float) -> np.ndarray:
        try:
            tf = self.tf_buffer.lookup_transform(odom_frame, camera_frame, Time.from_msg(stamp),
                                                 timeout=Duration(seconds=wait_s))
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException) as e:
            raise LookupError(str(e)) from e
        return messages.T_from_transform(tf.transform)

    def broadcast(self, T_map_camera: np.ndarray, header, odom: Odom | None) -> None:
        """``odom``: what ``odom_at`` said for this frame, where the jump gate asked already."""
        p = self.params
        if self.tf_broadcaster is None or not p["publish_tf"]:
            return
        camera_frame = p["camera_frame"] or header.frame_id
        if not camera_frame:
            self.log.cause("no camera frame", "no TF: the image has no frame_id and camera_frame is empty")
            return
        T_odom_camera, parents, missing = odom if odom is not None else self.odom_at(header)
        if missing:
            # odom exists but not at this stamp: a map→camera now would give the camera two parents.
            self.log.cause("odom lookup", f"no TF this frame: {missing}")
            return
        if T_odom_camera is None and parents is None:
            parents = tf_parents(self.tf_buffer)
        transform, why_not = decide_broadcast(T_map_camera, T_odom_camera, p["map_frame"], p["odom_frame"],
                                              camera_frame, parents or {})
        if transform is None:
            self.log.once(f"tf: {why_not}", why_not)
            return
        parent, child, T = transform
        self.tf_broadcaster.sendTransform(messages.transform_msg(T, parent, child, header.stamp))

    # --- diagnostics and logging ------------------------------------------------------------
    @_guarded
    def _publish_diagnostics(self) -> None:
        localizer = self.work.localizer
        cache = getattr(getattr(localizer, "map", None), "cache", None)
        level, message, values = self.stats.report(self.slot.dropped, self.jump_gate.counts, cache,
                                                   pending=self.slot.pending)
        status = DiagnosticStatus(level=bytes([level]), name="lift_localizer: localization", message=message,
                                  hardware_id=self.get_fully_qualified_name(),
                                  values=[KeyValue(key=k, value=v) for k, v in values])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(msg)

    def destroy_node(self) -> None:
        """Stop the worker after its current stage, then destroy the node; calling it again does nothing."""
        if self._destroyed:
            return
        self._destroyed = True
        self.slot.close()
        # No timeout: Python finalised under a running network aborts the process. A stage is one
        # frame or one warm-up; a second Ctrl-C interrupts the wait.
        while self._worker.is_alive():
            self._worker.join(timeout=1.0)
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    dump_stacks_on_signal()
    rclpy.init(args=args)
    node = LocalizerNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.destroy_node()
        except KeyboardInterrupt:
            # A second Ctrl-C while the worker ends its stage: leave at once. Unwinding would
            # finalise Python under the running network, which aborts the process.
            os._exit(130)
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
