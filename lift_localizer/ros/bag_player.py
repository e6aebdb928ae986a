"""Play a rosbag2 bag (sqlite3 or mcap) on its topics with rclpy, like ``ros2 bag play``.

Messages keep their recorded spacing (bag receive times) divided by the rate. A message whose
recorded type definition is the installed one (same RIHS01 hash, or a bag too old to say) is
published as its stored CDR bytes, untouched — what ``ros2 bag play`` does, and the fastest.
When the hashes differ, or with ``convert=True``, the message is deserialized with the bag's own
definition and copied field by field into the installed rclpy class (``to_rclpy``), so fields
both definitions share survive a definition change.

Images of ~1 MB and more: the player selects Fast DDS's LARGE_DATA transports (TCP + shared
memory for data, UDP only for discovery) unless ``FASTDDS_BUILTIN_TRANSPORTS`` is set already.

Teardown is explicit and bounded: the nodes (their publishers and subscriptions first), then the
context's shutdown, then the context itself (where Fast DDS deletes the participant and closes its
TCP channels) run on a thread of their own, in that order, once the bag is played and a recording
is finished. Fast DDS's TCP transport can deadlock there (a channel thread that is never joined);
rather than hang, ``run`` gives up after ``TEARDOWN_S`` and says so in ``PlayResult.teardown_stuck``,
and the command then exits without the interpreter's own teardown (which would wait on it again).
"""
from __future__ import annotations

import array
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..bags.reader import BagError, open_bag
from .bag_recorder import (
    BagRecorder,
    RecordingThread,
    RecordRequest,
    RecordResult,
    check_request,
)
from .interfaces import default_typestore, installed_type_hash, message_class, normalize

TRANSPORTS_ENV = "FASTDDS_BUILTIN_TRANSPORTS"
# A clean teardown takes well under a second (measured); one still running after this is stuck.
TEARDOWN_S = 10.0

# rclpy keeps numeric sequences as array.array with these type codes and fixed arrays as numpy.
_TYPECODES = {"float": "f", "double": "d", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H",
              "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q"}
_DTYPES = {"float": np.float32, "double": np.float64, "int8": np.int8, "uint8": np.uint8, "int16": np.int16,
           "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64}


def use_large_data_transports() -> None:
    """Select Fast DDS's LARGE_DATA transports unless the user chose; must run before rclpy.init."""
    os.environ.setdefault(TRANSPORTS_ENV, "LARGE_DATA")


# ---------------------------------------------------------------- rosbags message → rclpy message

def _scalar(value, typename: str):
    if typename in ("float", "double", "long double"):
        return float(value)
    if typename == "boolean":
        return bool(value)
    if typename == "octet":
        return bytes([value]) if isinstance(value, (int, np.integer)) else bytes(value)
    if typename in ("char", "wchar"):
        return chr(value) if isinstance(value, (int, np.integer)) else str(value)
    return int(value)


def _field_value(value, slot):
    from rosidl_parser.definition import (
        AbstractNestedType,
        Array,
        BasicType,
        NamespacedType,
    )

    if isinstance(slot, NamespacedType):
        return to_rclpy(value, message_class("/".join([*slot.namespaces, slot.name])))
    if isinstance(slot, AbstractNestedType):
        elem = slot.value_type
        if isinstance(elem, BasicType) and elem.typename in _TYPECODES:
            # One C-level copy: image data never goes through a Python loop.
            values = np.ascontiguousarray(value, dtype=_DTYPES[elem.typename])
            return values if isinstance(slot, Array) else array.array(_TYPECODES[elem.typename], values.tobytes())
        return [_field_value(v, elem) for v in value]
    if isinstance(slot, BasicType):
        return _scalar(value, slot.typename)
    return str(value)  # string, wstring, bounded or not


def to_rclpy(msg, cls: type):
    """Copy a message with the same field names (a rosbags message, any object) into rclpy class
    ``cls``, recursively. Fields ``msg`` lacks keep their defaults; fields only ``msg`` has are dropped."""
    out = cls()
    for name, slot in zip(cls.get_fields_and_field_types(), cls.SLOT_TYPES):
        if hasattr(msg, name):
            setattr(out, name, _field_value(getattr(msg, name), slot))
    return out


# ---------------------------------------------------------------- playing

@dataclass
class PlayOptions:
    rate: float = 1.0
    loop: bool = False
    topics: list[str] | None = None      # None: every topic of the bag
    start_delay: float = 0.5             # seconds between creating the publishers and the first message
    wait_for: list[str] | None = None    # wait for a subscriber on each of these ([]: every played topic)
    qos: str = "reliable"                # or "sensor" (best effort, depth 5)
    convert: bool = False                # convert every message through to_rclpy


@dataclass
class PlayResult:
    counts: Counter = field(default_factory=Counter)    # topic → messages published
    types: dict[str, str] = field(default_factory=dict)  # topic → type, of the topics played
    skipped: dict[str, str] = field(default_factory=dict)  # topic → why it was not played
    converted: list[str] = field(default_factory=list)   # topics published through to_rclpy
    wall_s: float = 0.0      # first to last publish
    bag_s: float = 0.0       # bag time covered by the published messages
    loops: int = 0           # complete passes over the bag
    interrupted: bool = False
    unacked: list[str] = field(default_factory=list)  # topics a reliable subscriber had not acknowledged at the end
    teardown_stuck: bool = False  # DDS teardown did not finish within TEARDOWN_S (left running)

    @property
    def achieved_rate(self) -> float | None:
        return self.bag_s / self.wall_s if self.wall_s > 0 else None


@dataclass
class _Topic:
    name: str
    msgtype: str
    cls: type
    convert: bool
    publisher: object = None


def _qos(kind: str, msgtype: str):
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    if msgtype == "sensor_msgs/msg/CameraInfo":
        # Latched: a node started after the first frame still gets the intrinsics. Reliable +
        # transient local matches every subscriber, best effort or volatile ones included.
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    if kind == "sensor":
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _bag_typestores(connections) -> Callable:
    """connection → typestore holding the bag's own definition of its type (else Kilted's)."""
    from rosbags.interfaces import MessageDefinitionFormat
    from rosbags.typesys import (
        Stores,
        get_types_from_idl,
        get_types_from_msg,
        get_typestore,
    )

    fallback, stores = default_typestore(), {}
    for c in connections:
        text = getattr(c.msgdef, "data", "")
        if not text:
            continue
        try:
            parse = get_types_from_idl if c.msgdef.format == MessageDefinitionFormat.IDL else get_types_from_msg
            store = get_typestore(Stores.EMPTY)
            store.register(parse(text) if parse is get_types_from_idl else parse(text, c.msgtype))
            stores[c.id] = store
        except Exception as e:  # noqa: BLE001 -- rosbags' parser errors have no common base; the fallback still works
            print(f"warning: {c.topic}: the bag's definition of {c.msgtype} does not parse ({e}); "
                  f"using the installed one", file=sys.stderr)
    return lambda c: stores.get(c.id, fallback)


class BagPlayer:
    """Publishers for a bag's topics on ``node``; ``play()`` publishes the messages in time."""

    def __init__(self, bag: str | Path, options: PlayOptions) -> None:
        self.bag = Path(bag)
        self.options = options
        self.reader = open_bag(self.bag)   # BagError for a missing or unreadable bag, before any DDS
        try:
            self._plan()
        except BaseException:
            self.reader.close()
            raise

    def _plan(self) -> None:
        present = {c.topic: normalize(c.msgtype) for c in self.reader.connections}
        wanted = list(present) if self.options.topics is None else self.options.topics
        missing = [t for t in wanted if t not in present]
        if missing:
            raise BagError(f"{self.bag}: no topic {', '.join(missing)} (topics: {', '.join(present) or 'none'})")
        self.result = PlayResult()
        self.topics: dict[str, _Topic] = {}
        for topic in wanted:
            msgtype = present[topic]
            try:
                cls = message_class(msgtype)
            except ImportError as e:
                self.result.skipped[topic] = str(e)
                continue
            installed = installed_type_hash(msgtype)
            digests = {c.digest for c in self.reader.connections if c.topic == topic}
            differs = any(d.startswith("RIHS01_") and installed and d != installed for d in digests)
            self.topics[topic] = _Topic(topic, msgtype, cls, self.options.convert or differs)
        unknown = [t for t in self.options.wait_for or [] if t not in self.topics]
        if unknown:
            raise BagError(f"{self.bag}: cannot wait for subscribers on {', '.join(unknown)}: not played")
        if not self.topics:
            raise BagError(f"{self.bag}: nothing to play: " + "; ".join(f"{t}: {r}" for t, r in self.result.skipped.items()))
        self.connections = [c for c in self.reader.connections if c.topic in self.topics]
        self.total = sum(c.msgcount for c in self.connections)
        self.result.types = {t.name: t.msgtype for t in self.topics.values()}
        self.result.converted = [t.name for t in self.topics.values() if t.convert]
        self._typestore_of = _bag_typestores(self.connections) if self.result.converted else None

    def create_publishers(self, node) -> None:
        for t in self.topics.values():
            t.publisher = node.create_publisher(t.cls, t.name, _qos(self.options.qos, t.msgtype))

    def _messages(self):
        """The bag's messages in time order; a read error becomes a BagError naming the bag."""
        it = self.reader.messages(connections=self.connections)
        n = 0
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001 -- sqlite3, mcap and rosbags errors alike mean a damaged bag
                raise BagError(f"{self.bag}: corrupt or truncated bag: reading failed after {n} "
                               f"messages ({type(e).__name__}: {e})") from None
            n += 1
            yield conn, t, raw

    def _payload(self, conn, raw, topic: _Topic):
        if not topic.convert:
            return raw if isinstance(raw, bytes) else bytes(raw)
        msg = self._typestore_of(conn).deserialize_cdr(raw, conn.msgtype)
        return to_rclpy(msg, topic.cls)

    def wait_for_subscribers(self, stop: threading.Event, recorded: list[str]) -> None:
        """Until each topic of ``options.wait_for`` (all played topics if empty) has a subscriber
        besides this process's own recorder (on the ``recorded`` topics), or ``stop``."""
        topics = self.options.wait_for or list(self.topics)

        def waiting() -> list[str]:
            return [t for t in topics if self.topics[t].publisher.get_subscription_count() <= (t in recorded)]

        if waiting():
            print(f"waiting for subscribers on {', '.join(waiting())} (Ctrl-C to stop)", file=sys.stderr)
        while waiting():
            if stop.wait(0.05):
                return

    def play(self, stop: threading.Event, progress=None) -> PlayResult:
        """Publish until the bag ends (every pass with ``loop``) or ``stop`` is set.
        ``progress``: a tqdm-like object updated per message."""
        res = self.result
        if not stop.wait(self.options.start_delay):
            self._first_wall = None
            while self._play_pass(stop, res, progress):
                res.loops += 1
                if not self.options.loop:
                    break
        res.interrupted = stop.is_set()
        if not res.interrupted:
            res.unacked = self._wait_for_acks()
        return res

    def _wait_for_acks(self, timeout_s: float = 5.0) -> list[str]:
        """Wait until reliable subscribers have every message: leaving at once would destroy the
        writers with the last large images still in flight (measured: 1 of 3 3.7 MB images arrived).
        The last acknowledgement can take until Fast DDS's next periodic heartbeat (~3 s here)."""
        from rclpy.duration import Duration

        deadline = time.perf_counter() + timeout_s
        late = []
        for t in self.topics.values():
            left = max(0.0, deadline - time.perf_counter())
            if not t.publisher.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9))):
                late.append(t.name)
        return late

    def _play_pass(self, stop: threading.Event, res: PlayResult, progress) -> bool:
        """One pass over the bag; False if it was stopped or had no message."""
        t0_bag = t0_wall = None
        bag_before = res.bag_s
        for conn, t, raw in self._messages():
            if t0_bag is None:
                t0_bag, t0_wall = t, time.perf_counter()
                self._first_wall = self._first_wall or t0_wall
            # The message is read before waiting for its time, so reading hides in the wait.
            delay = t0_wall + (t - t0_bag) / self.options.rate / 1e9 - time.perf_counter()
            if stop.wait(delay) if delay > 0 else stop.is_set():
                return False
            topic = self.topics[conn.topic]
            try:
                payload = self._payload(conn, raw, topic)
            except Exception as e:  # noqa: BLE001 -- one undecodable message must not end the replay
                print(f"warning: {conn.topic}: message at {t} not converted ({type(e).__name__}: {e})",
                      file=sys.stderr)
                continue
            topic.publisher.publish(payload)
            res.counts[conn.topic] += 1
            res.wall_s = time.perf_counter() - self._first_wall
            res.bag_s = bag_before + (t - t0_bag) / 1e9
            if progress is not None:
                progress.update(1)
        return t0_bag is not None

    def close(self) -> None:
        self.reader.close()


def run(player: BagPlayer, stop: threading.Event, record: RecordRequest | None = None, record_grace: float = 1.0,
        progress=None, teardown_s: float = TEARDOWN_S) -> tuple[PlayResult, RecordResult | None]:
    """Play ``player``'s bag on a DDS participant of its own; with ``record``, record topics (the
    bag's own and, say, a node's replies to them) from before the first message until
    ``record_grace`` seconds after the last. DDS is torn down before returning, waiting at most
    ``teardown_s`` seconds for it (see the module's docstring)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    if record is not None:
        check_request(record)  # before DDS starts
    use_large_data_transports()
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes, executor, result = [], None, None
    try:
        nodes.append(rclpy.create_node("lift_localizer_player", context=context))
        player.create_publishers(nodes[0])
        recording = None
        if record is not None:
            nodes.append(rclpy.create_node("lift_localizer_recorder", context=context))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(nodes[-1])
            recording = RecordingThread(nodes[-1], executor, record)
        try:
            ours = [t for t in record.topics if t in player.topics] if record is not None else []
            if recording is not None:
                _wait_for_recorder(recording.recorder, ours, stop)
            if player.options.wait_for is not None:
                player.wait_for_subscribers(stop, ours)
            result = player.play(stop, progress)
            if recording is not None:
                stop.wait(record_grace)
        finally:
            recorded = recording.finish() if recording is not None else None
        return result, recorded
    finally:
        finished = teardown(context, nodes, executor, teardown_s)
        if not finished and result is not None:
            result.teardown_stuck = True
        if not finished:
            print(f"warning: DDS teardown did not finish within {teardown_s:g} s (a Fast DDS transport "
                  f"deadlock); left behind", file=sys.stderr)


def teardown(context, nodes: list, executor=None, timeout_s: float = TEARDOWN_S) -> bool:
    """Destroy ``nodes`` (each destroys its publishers and subscriptions before itself), the
    executor, then shut ``context`` down and destroy it, on a daemon thread; True if that finished
    within ``timeout_s``. Left to the garbage collector, the same steps would run at interpreter
    exit in no set order, where a deadlock in them is a process that never ends."""
    def work() -> None:
        try:
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
            for node in reversed(nodes):
                node.destroy_node()
            context.try_shutdown()
            context.destroy()
        except Exception as e:  # noqa: BLE001 -- a failed teardown must not hide the played result
            print(f"warning: DDS teardown failed ({type(e).__name__}: {e})", file=sys.stderr)

    thread = threading.Thread(target=work, name="dds-teardown", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive()


def _wait_for_recorder(recorder: BagRecorder, topics: list[str], stop: threading.Event, timeout_s: float = 5.0) -> None:
    """Until the recorder has matched the player's publishers of the recorded topics, so that the
    recording starts with the bag's first message."""
    deadline = time.perf_counter() + timeout_s
    while not recorder.matched(topics) and time.perf_counter() < deadline:
        if stop.wait(0.02):
            return
