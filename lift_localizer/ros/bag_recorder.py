"""Record topics into a rosbag2 bag (sqlite3 or mcap), like ``ros2 bag record``: rclpy subscribes,
``rosbags`` writes.

Subscriptions are raw (``raw=True``): the CDR bytes DDS delivered go into the bag untouched, so
every type whose rclpy class is installed records at no conversion cost. The bag's type
definitions come from rosbags' Kilted typestore, and for types it does not know (this project's
lift_localizer_msgs/msg/Keypoints) from their ``.msg`` files (``interfaces.ensure_type``).

A topic is subscribed once a publisher of it is on the graph, with that publisher's reliability
and durability (a best-effort subscriber would lose large images; a reliable one would not match
a best-effort publisher). The bag is written under a hidden temporary name next to the output and
renamed when it is closed, so an interrupted recording never leaves a bag that looks complete.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .interfaces import default_typestore, ensure_type, message_class, normalize

STORAGES = ("sqlite3", "mcap")
POLL_S = 0.25  # how often the graph is searched for topics not subscribed yet


class RecordError(ValueError):
    """A recording that cannot start or finish; the message names the problem."""


@dataclass
class RecordRequest:
    output: Path
    topics: list[str]
    types: dict[str, str] = field(default_factory=dict)  # topic → type given by the user
    storage: str = "sqlite3"

    @property
    def partial(self) -> Path:
        """Where the bag is written until it is complete."""
        return self.output.parent / f".{self.output.name}.partial"


@dataclass
class RecordResult:
    output: Path
    counts: Counter = field(default_factory=Counter)    # topic → messages written
    types: dict[str, str] = field(default_factory=dict)  # topic → type, of the subscribed topics
    skipped: dict[str, str] = field(default_factory=dict)  # topic → why it could not be recorded
    absent: list[str] = field(default_factory=list)        # topics no publisher of which appeared
    wall_s: float = 0.0

    @property
    def unseen(self) -> list[str]:
        return [t for t in self.types if not self.counts[t]]


def parse_topics(specs: list[str]) -> tuple[list[str], dict[str, str]]:
    """``/topic`` or ``/topic=pkg/msg/Type`` → topics, and the types given."""
    topics, types = [], {}
    for spec in specs:
        topic, _, msgtype = spec.partition("=")
        topics.append(topic)
        if msgtype:
            types[topic] = normalize(msgtype)
    return topics, types


def check_request(request: RecordRequest) -> None:
    """RecordError for what would fail later: an existing output, a given type not installed."""
    out = request.output
    if request.storage not in STORAGES:
        raise RecordError(f"storage {request.storage!r} is not one of {', '.join(STORAGES)}")
    if out.exists():
        raise RecordError(f"{out} exists already; recording never overwrites a bag")
    if request.partial.exists():
        raise RecordError(f"{request.partial} exists (left by an interrupted recording?); remove it first")
    if not out.parent.is_dir():
        raise RecordError(f"{out.parent}: no such folder")
    if not request.topics:
        raise RecordError("no topics to record")
    for topic, msgtype in request.types.items():
        try:
            message_class(msgtype)
            ensure_type(default_typestore(), msgtype)
        except (ImportError, LookupError) as e:
            raise RecordError(f"{topic}: {e}") from None


def _subscription_qos(publishers):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    offered = [p.qos_profile for p in publishers]
    reliable = bool(offered) and all(q.reliability == ReliabilityPolicy.RELIABLE for q in offered)
    latched = bool(offered) and all(q.durability == DurabilityPolicy.TRANSIENT_LOCAL for q in offered)
    return QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


class BagRecorder:
    """Subscribes ``request.topics`` on ``node`` as their publishers appear and writes what arrives.
    Spin the node's executor to record; ``finish()`` once it has stopped spinning."""

    def __init__(self, node, request: RecordRequest) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        check_request(request)
        self.node, self.request = node, request
        self.result = RecordResult(request.output)
        self.typestore = default_typestore()
        request.partial.mkdir()
        plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[request.storage]
        self.writer = Writer(request.partial / request.output.name, version=8, storage_plugin=plugin)
        self.writer.open()
        self.subscriptions: dict[str, object] = {}
        self.started = time.perf_counter()
        self.timer = node.create_timer(POLL_S, self.poll)
        self.poll()

    def poll(self) -> None:
        """Subscribe the wanted topics that have a publisher now."""
        graph = dict(self.node.get_topic_names_and_types())
        for topic in self.request.topics:
            if topic in self.result.types or topic in self.result.skipped or topic not in graph:
                continue
            publishers = self.node.get_publishers_info_by_topic(topic)
            if not publishers:
                continue  # only subscribers so far: no QoS to match yet
            offered = [normalize(t) for t in graph[topic]]
            msgtype = self.request.types.get(topic) or offered[0]
            if msgtype not in offered or len(offered) > 1:
                self._skip(topic, f"published as {', '.join(offered)}" +
                           (f", not {msgtype}" if msgtype not in offered else "; give one as TOPIC=TYPE"))
                continue
            self._subscribe(topic, msgtype, publishers)

    def _skip(self, topic: str, reason: str) -> None:
        self.result.skipped[topic] = reason
        print(f"warning: not recording {topic}: {reason}", file=sys.stderr)

    def _subscribe(self, topic: str, msgtype: str, publishers) -> None:
        try:
            cls = message_class(msgtype)
            ensure_type(self.typestore, msgtype)
        except (ImportError, LookupError) as e:
            self._skip(topic, str(e))
            return
        conn = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        clock = self.node.get_clock()
        counts = self.result.counts

        def write(raw: bytes) -> None:
            self.writer.write(conn, clock.now().nanoseconds, raw)
            counts[topic] += 1

        self.subscriptions[topic] = self.node.create_subscription(cls, topic, write, _subscription_qos(publishers),
                                                                  raw=True)
        self.result.types[topic] = msgtype

    def matched(self, topics: list[str]) -> bool:
        """Whether each of ``topics`` is subscribed and matched with a publisher."""
        subs = [self.subscriptions.get(t) for t in topics]
        return all(s is not None and s.get_publisher_count() > 0 for s in subs)

    def finish(self) -> RecordResult:
        """Close the bag and give it its name. The executor must have stopped spinning."""
        self._unsubscribe()
        self.writer.close()
        os.rename(self.request.partial / self.request.output.name, self.request.output)
        self.request.partial.rmdir()
        self.result.wall_s = time.perf_counter() - self.started
        self.result.absent = [t for t in self.request.topics if t not in self.result.types and t not in self.result.skipped]
        return self.result

    def _unsubscribe(self) -> None:
        self.node.destroy_timer(self.timer)
        for sub in self.subscriptions.values():
            self.node.destroy_subscription(sub)
        self.subscriptions = {}


class RecordingThread:
    """A BagRecorder living on a thread of its own that spins ``executor`` — for recording while the
    main thread plays. The bag is opened, written and closed on this thread (sqlite3 connections
    belong to the thread that made them)."""

    def __init__(self, node, executor, request: RecordRequest) -> None:
        self.node, self.executor, self.request = node, executor, request
        self.recorder: BagRecorder | None = None
        self.result: RecordResult | None = None
        self.error: BaseException | None = None
        self.ready = threading.Event()   # the bag is open (or opening failed)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.thread.start()
        self.ready.wait()
        if self.error is not None:
            self.thread.join()
            raise self.error

    def _run(self) -> None:
        try:
            self.recorder = BagRecorder(self.node, self.request)
            self.ready.set()
            while not self._stop.is_set():
                self.executor.spin_once(timeout_sec=0.1)
            self.result = self.recorder.finish()
        except BaseException as e:  # noqa: BLE001 -- re-raised in the main thread
            self.error = e
        finally:
            self.ready.set()

    def finish(self) -> RecordResult:
        """Stop spinning, close the bag and give it its name."""
        self._stop.set()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result


def record(request: RecordRequest, stop: threading.Event, duration: float | None = None) -> RecordResult:
    """Record until ``stop`` is set or ``duration`` seconds have passed."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    check_request(request)  # before DDS starts
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("lift_localizer_recorder", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        recorder = BagRecorder(node, request)
        deadline = None if duration is None else time.perf_counter() + duration
        while not stop.is_set() and (deadline is None or time.perf_counter() < deadline):
            executor.spin_once(timeout_sec=0.1 if deadline is None else max(0.0, min(0.1, deadline - time.perf_counter())))
        return recorder.finish()
    finally:
        context.try_shutdown()
