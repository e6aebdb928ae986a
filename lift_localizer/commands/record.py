"""``lift-localizer record``: live ROS 2 topics into a rosbag2 bag (rclpy, rosbags); ``play --record-out``
records with the same request and summary.

rclpy is imported only when the command runs, so the rest of the CLI works without ROS.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import fail, log, positive_float

if TYPE_CHECKING:
    from ..ros.bag_recorder import RecordRequest, RecordResult


def add(sub) -> None:
    p = sub.add_parser(
        "record", help="record topics into a rosbag2 bag (like ros2 bag record)",
        description="Subscribe to the topics (each once a publisher of it appears, with its QoS) and write "
                    "what arrives to a new rosbag2 bag until Ctrl-C, SIGTERM or --duration. Types come from "
                    "the graph, or as TOPIC=pkg/msg/Type. The bag is written under a hidden .NAME.partial "
                    "folder and renamed when complete.")
    p.add_argument("output", type=Path, metavar="OUTPUT_BAG", help="bag folder to create (must not exist)")
    p.add_argument("--topics", nargs="+", required=True, metavar="TOPIC[=TYPE]",
                   help="topics to record, each with its type (pkg/msg/Type) where the graph may not know it yet")
    p.add_argument("--duration", type=positive_float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="(default %(default)s)")
    p.set_defaults(func=run_record)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An Event set by Ctrl-C or SIGTERM, so that both end with a finished bag and a summary; a
    second one exits at once (a recording then stays under its .partial name)."""
    stop = threading.Event()

    def handle(signum, _frame) -> None:
        if stop.is_set():
            log("interrupted again: exiting without finishing")
            os._exit(128 + signum)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def ros_missing() -> str | None:
    """Why play and record cannot run here (no rclpy), else None."""
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        return f"this command needs rclpy (a ROS 2 install, or the ros-rclpy wheels): {e}"
    return None


def record_request(output: Path, specs: list[str], storage: str) -> RecordRequest:
    from ..ros.bag_recorder import RecordRequest, parse_topics

    topics, types = parse_topics(specs)
    return RecordRequest(output, topics, types, storage)


def print_record(result: RecordResult) -> None:
    total = sum(result.counts.values())
    print(f"recorded {total} messages in {result.wall_s:.1f} s -> {result.output}")
    for topic, msgtype in result.types.items():
        print(f"  {topic}  {msgtype}  {result.counts[topic]}")
    for topic, why in result.skipped.items():
        log(f"not recorded: {topic}: {why}")
    if result.absent:
        log(f"note: no publisher appeared on {', '.join(result.absent)}")
    if result.unseen:
        log(f"note: no message arrived on {', '.join(result.unseen)}")


def run_record(args: argparse.Namespace) -> int:
    from ..ros.bag_recorder import RecordError, record

    if (missing := ros_missing()) is not None:
        return fail(missing)
    request = record_request(args.output, args.topics, args.storage)
    try:
        with stop_on_signals() as stop:
            result = record(request, stop, args.duration)
    except (RecordError, OSError) as e:
        return fail(str(e))
    print_record(result)
    return 0
