"""``lift-localizer play``: a rosbag2 bag's messages published on their live ROS 2 topics (rclpy, rosbags).

rclpy is imported only when the command runs, so the rest of the CLI works without ROS.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import fail, log, non_negative_float, positive_float
from .record import print_record, record_request, ros_missing, stop_on_signals


def add(sub) -> None:
    p = sub.add_parser(
        "play", help="publish a bag's messages on their topics with their recorded timing (like ros2 bag play)",
        description="Publish the messages of a rosbag2 bag (sqlite3 or mcap) on their topics with rclpy, spaced "
                    "as recorded divided by --rate. Messages go out as their stored CDR bytes when the bag's type "
                    "definition is the installed one, else converted field by field into the installed type. "
                    "Uses Fast DDS's LARGE_DATA transports unless FASTDDS_BUILTIN_TRANSPORTS is set. "
                    "With --record-out, records topics (e.g. the localizer's /pose and /keypoints) from before "
                    "the first message until --record-grace seconds after the last. Exit code 2 for a missing, "
                    "corrupt or truncated bag. Topics whose type is not a message of an installed ROS interface "
                    "package are skipped with a warning (nothing named by a bag is imported otherwise). If DDS "
                    "does not shut down within 10 s (a Fast DDS transport deadlock), play says so and exits "
                    "anyway.")
    p.add_argument("bag", type=Path, metavar="BAG", help="bag folder (or its .db3/.mcap file)")
    p.add_argument("--rate", "-r", type=positive_float, default=1.0, metavar="R",
                   help="speed factor (default %(default)s)")
    p.add_argument("--loop", "-l", action="store_true", help="play again and again until Ctrl-C")
    p.add_argument("--topics", nargs="+", default=None, metavar="TOPIC", help="play only these (default: all)")
    p.add_argument("--start-delay", type=non_negative_float, default=0.5, metavar="S",
                   help="seconds between creating the publishers and the first message, for subscribers to "
                        "discover them (default %(default)s)")
    p.add_argument("--wait-for-subscribers", nargs="*", default=None, metavar="TOPIC",
                   help="before playing, wait until each of these topics (all played topics if none named) "
                        "has a subscriber; then --start-delay")
    p.add_argument("--qos", choices=("reliable", "sensor"), default="reliable",
                   help="reliable depth 10 (default; matches best-effort subscribers too), or sensor: best effort "
                        "depth 5. CameraInfo topics are always reliable and transient local (latched)")
    p.add_argument("--convert", action="store_true",
                   help="deserialize every message and convert it field by field, even when its recorded "
                        "definition is the installed one (slower; to check a bag)")
    g = p.add_argument_group("recording while playing")
    g.add_argument("--record-out", type=Path, default=None, metavar="BAG", help="bag to write (must not exist)")
    g.add_argument("--record-topics", nargs="+", default=None, metavar="TOPIC[=TYPE]",
                   help="topics to record (required with --record-out)")
    g.add_argument("--record-grace", type=non_negative_float, default=2.0, metavar="S",
                   help="keep recording this long after the last message (default %(default)s)")
    g.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3", help="(default %(default)s)")
    p.set_defaults(func=run_play)


def run_play(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..bags.reader import BagError
    from ..ros.bag_player import BagPlayer, PlayOptions, run
    from ..ros.bag_recorder import RecordError

    if (missing := ros_missing()) is not None:
        return fail(missing)
    if (args.record_out is None) != (args.record_topics is None):
        return fail("--record-out and --record-topics go together")
    options = PlayOptions(rate=args.rate, loop=args.loop, topics=args.topics, start_delay=args.start_delay,
                          wait_for=args.wait_for_subscribers, qos=args.qos, convert=args.convert)
    record = None if args.record_out is None else record_request(args.record_out, args.record_topics, args.storage)
    try:
        player = BagPlayer(args.bag, options)
    except BagError as e:
        return fail(str(e))
    try:
        for topic, why in player.result.skipped.items():
            log(f"warning: not playing {topic}: {why}")
        bar = tqdm(total=None if args.loop else player.total, desc="play", unit="msg", file=sys.stderr, disable=None)
        with stop_on_signals() as stop, bar:
            result, recorded = run(player, stop, record, args.record_grace, bar)
    except (BagError, RecordError, OSError) as e:
        return fail(str(e))
    finally:
        player.close()
    achieved, n = result.achieved_rate, sum(result.counts.values())
    per_s = f" ({n / result.wall_s:.0f} msg/s)" if result.wall_s > 0 else ""
    print(f"played {n} messages of {args.bag} in {result.wall_s:.2f} s{per_s}: bag time "
          f"{result.bag_s:.2f} s, rate {'n/a' if achieved is None else f'{achieved:.2f}'} (asked {args.rate:g})"
          + (f", {result.loops} loops" if args.loop else "") + (" — interrupted" if result.interrupted else ""))
    for topic, msgtype in result.types.items():
        how = " (converted)" if topic in result.converted else ""
        print(f"  {topic}  {msgtype}  {result.counts[topic]}{how}")
    if result.unacked:
        log(f"warning: a reliable subscriber had not acknowledged every message of {', '.join(result.unacked)}")
    if recorded is not None:
        print_record(recorded)
    if result.teardown_stuck:
        # The stuck DDS thread holds locks that the interpreter's exit (Fast DDS's static
        # destructors) would wait on again: leave now, the bag and any recording being complete.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
