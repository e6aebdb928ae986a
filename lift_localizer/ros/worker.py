"""The node's work, without ROS: loading the map, warming up, and each frame from a stored message to
the pose to publish. rclpy-free: ``node.LocalizerNode`` subscribes, publishes and talks to TF through
an ``Outlet``; everything between runs here, on one thread (``Worker.run``).

Nothing a frame, a map or a parameter carries ends the loop: each problem is counted in ``NodeStats``
and logged once per cause (``cause_log.CauseLog``). ``slot.closed`` is looked at between stages, so
a shutdown waits for at most one stage (one frame's extraction or localization, or one warm-up).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from ..bags.convert import decode_image
from ..images import ImageError
from ..localization.prior import PosePrior
from ..reasons import Failure, Reason, reason_of
from .cause_log import CauseLog
from .frame_gate import FrameGate
from .frame_slot import FrameSlot
from .jump_gate import JumpGate, Verdict
from .node_stats import NodeStats
from .params import BY_NAME, MAX_WARM_UP_SIZES, jump_limits, localizer_conf

# Parameters that change what a map→odom means (another map, other frames) or whether one was
# compared at all: the jump gate's reference is meaningless after them.
CLEARS_JUMP_GATE = frozenset({"map_path", "map_frame", "odom_frame", "camera_frame", "jump_gate"})
# Parameters after which the prior (the last pose, or an initialpose) is of another map.
CLEARS_PRIOR = frozenset({"map_path"})
# How long a ``take`` waits for a frame before the loop looks at the map and the warm-up again.
TAKE_TIMEOUT_S = 0.5


class Odom(NamedTuple):
    """What TF says of odom→camera at an image stamp."""
    T_odom_camera: np.ndarray | None
    # child → parent, where the lookup failed and TF's tree was read to find out why (else None).
    parents: dict[str, str] | None = None
    # odom is in TF but not at this stamp: why no transform may be broadcast for this frame.
    missing: str | None = None


class Outlet(Protocol):
    """What the worker needs from the node. ``header`` is the image message's (``stamp``, ``frame_id``)."""

    def context_ok(self) -> bool:
        """False once the ROS context is gone: an exception then is the shutdown, not an error."""

    def odom_at(self, header: Any) -> Odom:
        """odom→camera at the image stamp, for the jump gate and the map→odom transform."""

    def publish_keypoints(self, features: Any, header: Any) -> None: ...

    def publish_pose(self, T_map_camera: np.ndarray, covariance: np.ndarray, header: Any) -> None: ...

    def broadcast(self, T_map_camera: np.ndarray, header: Any, odom: Odom | None) -> None:
        """The pose into TF; ``odom``: what ``odom_at`` said for this frame, where the jump gate asked already."""


class Worker:
    """The map, the warm-up and the frames of one node. ``params``: the node's parameter values by
    name (``ros/params.py``), changed only through ``set_params``."""

    def __init__(self, params: dict[str, Any], outlet: Outlet, log: CauseLog, stats: NodeStats | None = None,
                 camera_info_topic: str = "camera_info") -> None:
        self.params = params
        self.outlet = outlet
        self.log = log
        self.stats = stats if stats is not None else NodeStats()
        self.camera_info_topic = camera_info_topic
        self.lock = threading.Lock()
        self.camera = None
        self.localizer = None
        self.warmed: set[tuple[int, int]] = set()   # (width, height) the loaded localizer was warmed up at
        self.reload = threading.Event()
        self.reload.set()
        self.gate = FrameGate()
        self.jump_gate = JumpGate()
        self.slot = FrameSlot()
        # Where retrieval is limited to (retrieval_radius_m): the last published pose or an initialpose.
        self.prior = PosePrior()
        self._prior_generation = 0   # counts prior changes, so a frame's outcome never replaces a newer prior

    # --- from the node's callbacks (executor thread) ---------------------------------------
    def set_params(self, changes: dict[str, Any]) -> None:
        """Checked parameter values: a reload where one needs it, else the localizer's options at once."""
        with self.lock:
            self.params.update(changes)
            if CLEARS_JUMP_GATE & changes.keys():
                self.jump_gate.clear()
            if CLEARS_PRIOR & changes.keys():
                self._set_prior(None, None, "the map changed")
            if any(BY_NAME[name].reload for name in changes):
                self.reload.set()
            elif self.localizer is not None:
                self.localizer.conf.update(localizer_conf(self.params))
        self.slot.wake()

    def initial_pose(self, frame_id: str, position: np.ndarray) -> str | None:
        """A pose given on ``initialpose`` (RViz's 2D Pose Estimate, nav2): its position becomes the prior
        that limits retrieval, and the jump gate forgets its last map→odom (the next pose may be far from
        it). The prior ages from the next image's stamp, not the message's: RViz stamps with its own
        clock, which need not be the camera's (a bag replayed without sim time). Returns why it is
        refused, or None."""
        map_frame = self.params["map_frame"]
        position = np.asarray(position, np.float64)
        if frame_id.lstrip("/") != map_frame:
            why = f"initialpose refused: its frame is {frame_id!r}, not the map frame {map_frame!r} (map_frame)"
        elif position.shape != (3,) or not np.all(np.isfinite(position)):
            why = f"initialpose refused: position {position.tolist()} is not finite"
        else:
            with self.lock:
                self._set_prior(position, None, "initialpose")
                self.jump_gate.clear()
            self.stats.count("initial_pose")
            where = ", ".join(f"{v:.2f}" for v in position)
            radius = self.params["retrieval_radius_m"]
            self.log.info(f"prior from initialpose: ({where}) in {map_frame}; " +
                          (f"retrieval limited to {radius:g} m around it" if radius > 0 else
                           "retrieval_radius_m is 0, so retrieval still searches the whole map"))
            return None
        self.stats.count("initial_pose_refused")
        self.log.cause("initialpose refused", why)
        return why

    def _set_prior(self, position: np.ndarray | None, stamp_s: float | None, source: str) -> None:
        """Under ``lock``: a new prior, or none (``source`` then says why)."""
        if position is None:
            self.prior.clear(source)
        else:
            self.prior.set(position, stamp_s, source)
        self._prior_generation += 1

    def set_camera(self, camera) -> None:
        with self.lock:
            self.camera = camera

    def internal_error(self, where: str, e: Exception) -> None:
        failure = Failure(Reason.INTERNAL_ERROR, f"{where}: {type(e).__name__}: {e}")
        self.stats.failure(failure, counter="bad")
        self.log.cause(f"internal {where} {type(e).__name__}", f"skipped after an {failure}", error=True)

    # --- the worker thread -------------------------------------------------------------------
    def run(self) -> None:
        """Until the slot closes; each stage ends before the next looks at ``slot.closed``, so that
        shutdown waits for at most one stage and never finalises Python under a running network."""
        while not self.slot.closed:
            try:
                if self.reload.is_set():
                    self.load_map()
                if not self.slot.closed:
                    self.warm_up()
                item = self.slot.take(timeout=TAKE_TIMEOUT_S)
                if item is not None:
                    try:
                        if not self.slot.closed:
                            self.process(*item)
                    finally:
                        self.slot.done()
            except Exception as e:   # noqa: BLE001 — nothing may end the worker: the node would serve no frame again
                if self.slot.closed or not self.outlet.context_ok():
                    return   # shutting down: the context may be gone under a publish
                self.internal_error("in the worker", e)

    def load_map(self) -> None:
        from ..localization.localizer import Localizer
        from ..mapping.io import MapError, load_map

        self.reload.clear()
        self.warmed = set()   # a new localizer (or none) has not been warmed up
        with self.lock:
            values = dict(self.params)
        path = values["map_path"]
        if not path:
            self.localizer = None
            self.stats.set_map(False, "no map: set the map_path parameter")
            self.log.cause(Reason.NO_MAP, "no map: set the map_path parameter", error=True)
            return
        self.stats.set_map(False, f"loading {path}")
        t = time.perf_counter()
        try:
            localizer = Localizer(load_map(Path(path).expanduser(), values["features"] or None),
                                  localizer_conf(values))
        except Exception as e:   # noqa: BLE001 — a map, whatever is wrong with it, must not end the worker
            why = str(e) if isinstance(e, (MapError, OSError)) else f"{type(e).__name__}: {e}"
            self.localizer = None
            self.stats.set_map(False, f"map not loaded: {why}")
            self.log.cause(Reason.NO_MAP, f"map not loaded (fix map_path or the map; the node retries on a "
                                          f"parameter change): {why}", error=True)
            return
        self.localizer = localizer
        m = localizer.map
        retrieval = type(localizer.retrieval).__name__ + (f" ({localizer.retrieval_note})" if localizer.retrieval_note else "")
        status = f"{m.path}: {len(m.images)} images, {len(m.point_ids)} points, {m.features_name} features"
        self.stats.set_map(True, status)
        self.log.info(f"map loaded in {time.perf_counter() - t:.1f} s: {status}; retrieval {retrieval}")

    def warm_up(self) -> None:
        """Once per map and camera size, before the frames: the first frame would pay for it otherwise."""
        with self.lock:
            camera, localizer, wanted = self.camera, self.localizer, self.params["warm_up"]
        if not wanted or camera is None or localizer is None:
            return
        key = (camera.width, camera.height)
        if key in self.warmed:
            return
        size = f"{camera.width}×{camera.height}"
        if len(self.warmed) >= MAX_WARM_UP_SIZES:
            self.log.once("warm-up sizes", f"camera_info changed size {len(self.warmed)} times: {size} and later "
                          "sizes are not warmed up (their first frame pays for the set-up)")
            return
        self.warmed.add(key)
        self.stats.set_warm_up(f"running at {size}")
        try:
            seconds = localizer.warm_up(camera)
        except Exception as e:   # noqa: BLE001 — the frames still run (and say what fails); only the head start is lost
            self.stats.set_warm_up(f"failed at {size}: {type(e).__name__}: {e}")
            self.log.cause("warm-up", f"warm-up at {size} failed: {type(e).__name__}: {e}", error=True)
            return
        self.stats.set_warm_up(f"{size} in {seconds:.2f} s")
        self.log.info(f"warmed up at {size} in {seconds:.2f} s")

    def process(self, msg, compressed: bool, received: float, ticket: int) -> None:
        """One frame (what ``slot`` holds: the message, whether it is a CompressedImage, when it
        arrived by ``time.monotonic``, its ``gate`` ticket): decode, check against the camera,
        extract, localize, then hand what to publish to the outlet."""
        t0 = time.perf_counter()
        try:
            image = decode_image(msg, compressed, self.params["max_image_side"])
        except ImageError as e:
            failure = Failure(Reason.BAD_IMAGE, str(e))
            self.stats.failure(failure, counter="bad")
            self.log.cause(Reason.BAD_IMAGE, f"image skipped: {failure}")
            return
        decode_s = time.perf_counter() - t0
        with self.lock:
            camera, localizer = self.camera, self.localizer
        if localizer is None:
            self.stats.failure(Failure(Reason.NO_MAP, self.stats.map_status), counter="skipped_no_map")
            return
        if camera is None:
            self.stats.failure(Failure(Reason.NO_CAMERA_INFO, "none received yet"), counter="skipped_no_camera_info")
            self.log.cause(Reason.NO_CAMERA_INFO, f"waiting for camera_info on {self.camera_info_topic}; "
                           "images are skipped until it arrives")
            return
        if image.shape[:2] != (camera.height, camera.width):
            failure = Failure(Reason.IMAGE_SIZE, f"image is {image.shape[1]}×{image.shape[0]}, "
                                                 f"camera_info says {camera.width}×{camera.height}")
            self.stats.failure(failure, counter="bad")
            self.log.cause(Reason.IMAGE_SIZE, f"image skipped: {failure}")
            return
        relocalize = self.gate.starting(ticket)
        features = localizer.extract(image, camera)
        if self.slot.closed:
            return
        header = msg.header
        stamp_s = header.stamp.sec + 1e-9 * header.stamp.nanosec
        with self.lock:
            self.prior.timeout_s = self.params["prior_timeout_s"]
            self.prior.max_failures = self.params["prior_max_failures"]
            position, prior_source = self.prior.take(stamp_s)
            generation = self._prior_generation
        result = localizer.localize_features(features, camera, prior=position)
        if self.slot.closed:
            return
        self.stats.retrieval_area(result.area, prior_source)
        self.stats.count("processed")
        if result.features:
            self.outlet.publish_keypoints(result.features, header)
        published = False
        if result.success:
            odom = self.outlet.odom_at(header) if self.params["jump_gate"] else None
            if odom is None or self._passes_jump_gate(result.T_map_camera, odom, header.stamp):
                self.outlet.publish_pose(result.T_map_camera, result.covariance, header)
                self.stats.count("localized")
                self.outlet.broadcast(result.T_map_camera, header, odom)
                published = True
        with self.lock:
            # An initialpose (or a map change) while this frame ran wins over its outcome.
            if generation == self._prior_generation:
                self.prior.update(result, stamp_s, accepted=published)
        if not result.success:
            self.stats.failure(result.reason)
            self.log.cause(reason_of(result.reason), f"not localized: {result.reason}")
        if relocalize:
            self.log.info(f"relocalized: {'ok' if result.success else result.reason}")
        timings = {"decode": decode_s, **result.timings, "total": time.perf_counter() - t0}
        self.stats.processed(timings, time.monotonic() - received)

    def _passes_jump_gate(self, T_map_camera: np.ndarray, odom: Odom, stamp) -> bool:
        """Whether the pose may be published; frames without odom→camera are not gated."""
        if odom.T_odom_camera is None:
            return True
        decision = self.jump_gate.offer(T_map_camera, odom.T_odom_camera, stamp.sec + 1e-9 * stamp.nanosec,
                                        jump_limits(self.params))
        if decision.verdict is Verdict.HOLD:
            self.log.cause("jump held", f"pose not published: {decision.reason}")
        elif decision.verdict is Verdict.CONFIRM:
            self.log.cause("jump confirmed", f"pose jump published: {decision.reason}")
        return decision.publish
