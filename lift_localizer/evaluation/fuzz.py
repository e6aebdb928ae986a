"""Hostile input, thrown at the node and the command line; a table of what each did.

    python tools/fuzz.py [--only node|cli] [--json OUT.json]

Builds a small synthetic map and its bags, then:
- **node**: starts ``lift_localizer_node`` (a subprocess, a private ROS domain) and publishes bad
  images, bad CameraInfo, hundreds of distinct bad images, alternating camera sizes, and maps that
  are broken in every way the map loader refuses. After each it checks that the process lives, that
  its worker still localizes a good frame, and its peak memory; at the end a Ctrl-C during a
  warm-up, whose exit code must be 0.
- **cli**: runs ``extract``, ``localize`` and ``play`` in subprocesses on crafted images, maps and
  bags: the exit code must be one the command documents (0, 1 or 2), stderr free of tracebacks.

An outcome passes when nothing crashed, no traceback was printed and the peak resident memory
stayed under ``--max-memory-mb`` (2000). Exit code 1 when any did not.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MAX_MEMORY_MB = 2000
# The node's worker localizes a good frame within this after each hostile input (2 cores, a busy machine).
PROBE_TIMEOUT_S = 60.0


@dataclass
class Outcome:
    group: str
    case: str
    outcome: str
    peak_mb: float
    ok: bool


# ---------------------------------------------------------------- crafted inputs


def png_claiming(width: int, height: int) -> bytes:
    """A grey PNG of zeros, compressed as it streams: a few hundred kB that decode to width × height bytes."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z, row = zlib.compressobj(9), b"\0" * (width + 1)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _poke(path: Path, offset: int, fmt: str, value) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def _edit_meta(m: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads((m / "map.json").read_text())
    change(meta)
    (m / "map.json").write_text(json.dumps(meta))


def _nan_point(m: Path) -> None:
    import h5py

    with h5py.File(m / "points.h5", "a") as f:
        xyz = f["xyz"][()]
        xyz[0, 0] = np.nan
        f["xyz"][...] = xyz


def _link_out(m: Path) -> None:
    outside = m.parent / f"{m.name}-outside.h5"
    shutil.copy(m / "features.h5", outside)
    (m / "features.h5").unlink()
    (m / "features.h5").symlink_to(outside)


# name → how a copy of a good map is damaged
MAP_DAMAGE: dict[str, Callable[[Path], None]] = {
    'map.json "features": "lift"': lambda m: _edit_meta(m, lambda d: d.update(features="lift")),
    'map.json format_version "1"': lambda m: _edit_meta(m, lambda d: d.update(format_version="1")),
    "map.json not JSON": lambda m: (m / "map.json").write_text("{not json"),
    "retrieval.model outside the map": lambda m: _edit_meta(
        m, lambda d: d["retrieval"].update(model="/etc/passwd")),
    "global.index: 4 header bytes changed": lambda m: _poke(m / "global.index", 37, "<I", 0x10),
    "global.index: count 2^40": lambda m: _poke(m / "global.index", 8, "<q", 1 << 40),
    "global.index garbage": lambda m: (m / "global.index").write_bytes(os.urandom(5000)),
    "global.index truncated": lambda m: (m / "global.index").write_bytes((m / "global.index").read_bytes()[:100]),
    "global.h5 truncated": lambda m: (m / "global.h5").write_bytes((m / "global.h5").read_bytes()[:2000]),
    "features.h5 truncated": lambda m: (m / "features.h5").write_bytes((m / "features.h5").read_bytes()[:5000]),
    "features.h5 a symlink out of the map": _link_out,
    "a NaN 3D point": _nan_point,
}


def make_scene(root: Path) -> tuple[Path, Path, object, list]:
    """A synthetic room: (map, query bag, camera, query views). Where ``root`` holds them from an
    earlier run (``--keep``), the map and bags are used again (build-map writes a map whole or not at
    all; a bag is complete once its metadata.yaml is written)."""
    from ..geometry.camera import Camera
    from ..bags.writer import write_bag
    from ..mapping.frames import posed_frames
    from ..synthetic import room_sequence

    K, mapping, query = room_sequence(10, 4, image_size=(240, 320))
    cam = Camera(320, 240, K)
    if all((root / name / "metadata.yaml").is_file() for name in ("mapping", "query")) and \
            (root / "map" / "map.json").is_file():
        return root / "map", root / "query", cam, query
    for name, views, t0 in (("mapping", mapping, 10**18), ("query", query, 2 * 10**18)):
        write_bag(fresh(root / name), posed_frames(views, cam, t0))
    # As a user runs it (a subprocess): the command line sits above this module.
    built = subprocess.run([sys.executable, "-m", "lift_localizer", "build-map", "--bag", str(root / "mapping"),
                            "--output", str(root / "map"), "--features", "lift", "--max-keypoints", "300"],
                           capture_output=True, text=True, timeout=600)
    if built.returncode != 0:
        raise RuntimeError(f"the synthetic map could not be built: {built.stderr[-2000:]}")
    return root / "map", root / "query", cam, query


def fresh(path: Path) -> Path:
    """``path``, with whatever an earlier run kept there (``--keep``) removed: each run crafts its
    inputs anew."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    return path


def damaged_map(good: Path, root: Path, damage: str) -> Path:
    m = fresh(root / ("damaged-" + "".join(c if c.isalnum() else "_" for c in damage)))
    shutil.copytree(good, m)
    MAP_DAMAGE[damage](m)
    return m


# ---------------------------------------------------------------- command line


# Runs the command line and, as it exits, writes its own peak resident memory (VmHWM) to a file: a
# child's rusage would also count the memory this process had when it forked.
_MEASURED = """
import atexit, sys
def _peak():
    with open('/proc/self/status') as f, open(sys.argv[1], 'w') as out:
        out.write(next(l.split()[1] for l in f if l.startswith('VmHWM')))
atexit.register(_peak)
from lift_localizer.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_measured(argv: list[str], cwd: Path | None = None, timeout: float = 300) -> tuple[int, str, float]:
    """(exit code, stderr, peak resident MB; NaN where it did not exit normally) of ``lift-localizer
    ARGV`` in a child process; a child past ``timeout`` is killed (-9)."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file, err_file = Path(tmp) / "peak", Path(tmp) / "err"
        with open(err_file, "w") as err:
            p = subprocess.Popen([sys.executable, "-c", _MEASURED, str(peak_file), *argv], stdout=subprocess.DEVNULL,
                                 stderr=err, cwd=cwd, start_new_session=True)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        peak = int(peak_file.read_text()) / 1024 if peak_file.exists() and peak_file.read_text() else float("nan")
        return p.returncode, err_file.read_text(errors="replace"), peak


def _cli_outcome(group: str, case: str, argv: list[str], codes: tuple[int, ...], max_mb: float,
                 cwd: Path | None = None, check: Callable[[str], str | None] | None = None) -> Outcome:
    code, stderr, peak = run_measured(argv, cwd)
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = next((line for line in lines if line.startswith(("error", "warning", "note"))), lines[-1] if lines else "")
    last = re.sub(r"\S*lift_fuzz_[^/\s]*/", "", last)   # the crafted files' folder
    problem = None
    if "Traceback" in stderr:
        problem = "traceback"
    elif code not in codes:
        problem = f"exit {code}, expected {' or '.join(map(str, codes))}"
    elif not peak <= max_mb:
        problem = f"peak {peak:.0f} MB"
    elif check is not None:
        problem = check(stderr)
    text = f"exit {code}: {last[:110]}" + (f"  [{problem}]" if problem else "")
    return Outcome(group, case, text, round(peak) if np.isfinite(peak) else -1, problem is None)


def cli_cases(root: Path, good_map: Path, query: Path, max_mb: float,
              wanted: Callable[[str], bool] = lambda case: True) -> list[Outcome]:
    out = []
    images = fresh(root / "images")
    images.mkdir()
    (images / "bomb.png").write_bytes(png_claiming(20000, 20000))
    (images / "garbage.jpg").write_bytes(os.urandom(4000))
    (images / "empty.png").write_bytes(b"")
    for name in filter(wanted, ("bomb.png", "garbage.jpg", "empty.png")):
        out.append(_cli_outcome("extract", name, ["extract", str(images / name), "--output", str(root / "f.h5")],
                                (1,), max_mb))
    for damage in filter(wanted, MAP_DAMAGE):
        m = damaged_map(good_map, root, damage)
        out.append(_cli_outcome("localize: map", damage, ["localize", "--map", str(m), "--bag", str(query),
                                                          "--output", str(root / "poses.txt")], (0, 2), max_mb))
    for name in filter(wanted, BAG_DAMAGE):
        damage = BAG_DAMAGE[name]
        bag = fresh(root / ("bag-" + "".join(c if c.isalnum() else "_" for c in name)))
        shutil.copytree(query, bag)
        damage(bag)
        out.append(_cli_outcome("localize: bag", name, ["localize", "--map", str(good_map), "--bag", str(bag),
                                                        "--output", str(root / "poses.txt")], (2,), max_mb))
        out.append(_cli_outcome("play", name, ["play", str(bag), "--rate", "50"], (0, 2), max_mb))
    if wanted(EVIL_TYPE):
        out.append(_evil_type_bag(root, max_mb))
    return out


def _truncate_db(bag: Path) -> None:
    db = next(bag.glob("*.db3"), None) or next(bag.glob("*.mcap"))
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])


BAG_DAMAGE: dict[str, Callable[[Path], None]] = {
    "metadata.yaml garbage": lambda b: (b / "metadata.yaml").write_text(": : [unclosed\n\0"),
    "storage file truncated": _truncate_db,
    "storage file garbage": lambda b: [p.write_bytes(os.urandom(4096)) for p in b.iterdir() if p.suffix in (".db3", ".mcap")],
}


EVIL_TYPE = "a topic type naming a package in the working directory"


def _evil_type_bag(root: Path, max_mb: float) -> Outcome:
    """A bag whose topic type names a package in the folder it is played from: playing it must not import it."""
    from rosbags.rosbag2 import Writer

    from ..ros.interfaces import default_typestore

    here = fresh(root / "evil_cwd")
    (here / "evilpkg" / "msg").mkdir(parents=True)
    marker = here / "imported"
    for init in (here / "evilpkg" / "__init__.py", here / "evilpkg" / "msg" / "__init__.py"):
        init.write_text(f"open({str(marker)!r}, 'w').write('code from the bag ran')\nclass Boom: pass\n")
    store = default_typestore()
    with Writer(root / "evil.bag", version=8) as w:
        c = w.add_connection("/boom", "evilpkg/msg/Boom", msgdef="int32 x\n", rihs01="RIHS01_" + "0" * 64)
        w.write(c, 1, b"\0\1\0\0\0\0\0\0")
        s = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        w.write(s, 2, store.serialize_cdr(store.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))

    def check(stderr: str) -> str | None:
        return "the bag's type was imported from the working directory" if marker.exists() else None

    return _cli_outcome("play", EVIL_TYPE,
                        ["play", str(root / "evil.bag"), "--rate", "50"], (0, 2), max_mb, cwd=here, check=check)


# ---------------------------------------------------------------- the node over DDS


class NodeUnderTest:
    """``lift_localizer_node`` on a private ROS domain, and a client in this process that talks to it."""

    def __init__(self, good_map: Path, log: Path) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo, Image

        domain = str(1 + (os.getpid() + 77) % 200)
        env = dict(os.environ, ROS_DOMAIN_ID=domain, PYTHONUNBUFFERED="1")
        self.log = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lift_localizer.ros.node", "--ros-args", "-r", "__node:=lift_localizer",
             "-p", f"map_path:={good_map}", "-p", "max_keypoints:=300", "-p", "qos_reliability:=reliable",
             "-p", "diagnostics_period_s:=0.1"], env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=int(domain))
        self.node = rclpy.create_node("fuzz_client", context=self.context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.diagnostics: list = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, qos)
        self.image = self.node.create_publisher(Image, "image", qos)
        self.info = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:   # noqa: BLE001 — the context ended under it
                return

    def values(self) -> dict[str, str]:
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values} if self.diagnostics else {}

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.alive():
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def peak_mb(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return float("nan")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024

    def output(self) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")

    def set_map(self, path: Path) -> bool:
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        client = self.node.create_client(SetParameters, "/lift_localizer/set_parameters")
        if not client.wait_for_service(timeout_sec=20):
            return False
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path))
        future = client.call_async(SetParameters.Request(parameters=[Parameter(name="map_path", value=value)]))
        return self.wait(future.done, 20) and future.result().results[0].successful

    def close(self) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.context.try_shutdown()
        self._spinner.join(timeout=2)
        self._log.close()
        return self.proc.returncode


def _camera_info(cam, **change):
    from sensor_msgs.msg import CameraInfo

    msg = CameraInfo(width=cam.width, height=cam.height, distortion_model="plumb_bob", d=[0.0] * 5,
                     k=cam.K.ravel().tolist())
    for k, v in change.items():
        setattr(msg, k, v)
    return msg


def _image(array: np.ndarray, stamp: int, **change):
    from sensor_msgs.msg import Image

    from ..bags.convert import make_image_fields

    msg = Image(**make_image_fields(array, "mono8" if array.ndim == 2 else "bgr8"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    for k, v in change.items():
        setattr(msg, k, v)
    return msg


SIGINT_CASE = "SIGINT during a warm-up at 8192×8192"


def node_cases(root: Path, good_map: Path, cam, query: list, max_mb: float,
               wanted: Callable[[str], bool] = lambda case: True) -> list[Outcome]:
    """Each hostile input, then a good frame that the worker must still localize (processed)."""
    node = NodeUnderTest(good_map, root / "node.log")
    out: list[Outcome] = []
    stamp = [10**9]
    good = query[0][0]

    def processed() -> int:
        return int(node.values().get("frames_processed", 0))

    def probe() -> str | None:
        """Why the node does not serve a good frame, or None."""
        node.info.publish(_camera_info(cam))
        before = processed()
        stamp[0] += 10**6
        node.image.publish(_image(good, stamp[0]))
        if not node.wait(lambda: processed() > before, PROBE_TIMEOUT_S):
            return "exited" if not node.alive() else "the worker processed no good frame after it"
        return None

    def record(group: str, case: str, send: Callable[[], None], settle: float = 1.0) -> Outcome | None:
        if not wanted(case):
            return None
        bad_before = int(node.values().get("bad_messages", 0))
        send()
        time.sleep(settle)
        why = probe()
        v = node.values()
        said = v.get("last_failure", "") if int(v.get("bad_messages", 0)) > bad_before else ""
        peak = node.peak_mb()
        if why is None and "Traceback" in node.output():
            why = "traceback in the log"
        if why is None and not peak < max_mb:
            why = f"peak {peak:.0f} MB"
        text = f"{'survived' if why is None else 'FAILED: ' + why}" + (f"; {said[:100]}" if said else "")
        out.append(Outcome(group, case, text, round(peak), why is None))
        return out[-1]

    try:
        if not node.wait(lambda: "images" in node.values().get("map", ""), 120):
            return [Outcome("node", "start", f"the map did not load: {node.output()[-500:]}", 0, False)]
        h, w = good.shape[:2]
        images: dict[str, Callable[[], object]] = {
            "unknown encoding": lambda: _image(good, stamp[0], encoding="weird16"),
            "step below the row size": lambda: _image(good, stamp[0], step=10),
            "data shorter than step × height": lambda: _image(good, stamp[0], data=b"\0" * 100),
            "empty (0×0)": lambda: _image(good, stamp[0], width=0, height=0, step=0, data=b""),
            "claims 20000×20000 with 1 kB": lambda: _image(good, stamp[0], width=20000, height=20000, step=20000,
                                                           data=b"\0" * 1000),
            "claims 9000×1 (over max_image_side)": lambda: _image(np.zeros((1, 9000), np.uint8), stamp[0]),
            "wrong size for camera_info": lambda: _image(np.zeros((h // 2, w // 2), np.uint8), stamp[0]),
            "float encoding 32FC1 (unsupported)": lambda: _image(good, stamp[0], encoding="32FC1"),
        }
        for case, make in images.items():
            record("node: image", case, lambda make=make: node.image.publish(make()))
        infos = {
            "20000×20000": dict(width=20000, height=20000),
            "K = 0": dict(k=[0.0] * 9),
            "K with NaN": dict(k=[float("nan")] * 9),
            "negative focal length": dict(k=[-100.0, 0, 160, 0, -100.0, 120, 0, 0, 1]),
            "plumb_bob with 3 coefficients": dict(d=[0.01, 0.0, 0.0]),
            "unknown distortion model": dict(distortion_model="kannala_brandt", d=[0.1, 0.0, 0.0, 0.0]),
        }
        for case, change in infos.items():
            record("node: camera_info", case, lambda change=change: node.info.publish(_camera_info(cam, **change)))

        def distinct_bad_images() -> None:
            for n in range(300):
                node.image.publish(_image(good, stamp[0] + n, data=b"\0" * (100 + n)))
                time.sleep(0.005)

        if row := record("node: image", "300 distinct bad images", distinct_bad_images, settle=3.0):
            keys = [k for k in node.values() if k.startswith("failures:")]
            row.outcome += f"; {len(keys)} failure keys in /diagnostics"
            row.ok &= len(keys) < 20

        def alternating_sizes() -> None:
            from ..geometry.camera import Camera

            small = Camera(160, 120, np.array([[cam.K[0, 0] / 2, 0, 80], [0, cam.K[1, 1] / 2, 60], [0, 0, 1]]))
            for _ in range(5):
                for c in (small, cam):
                    node.info.publish(_camera_info(c))
                    time.sleep(0.6)

        warmed = node.output().count("warmed up at")
        if row := record("node: camera_info", "alternating sizes ×5", alternating_sizes):
            row.outcome += f"; {node.output().count('warmed up at') - warmed} warm-ups"

        fresh(root / "node_maps").mkdir()
        for damage in filter(wanted, MAP_DAMAGE):
            bad = damaged_map(good_map, root / "node_maps", damage)
            said: list[str] = []

            def swap(bad=bad, said=said) -> None:
                loaded = node.values().get("map", "")
                node.set_map(bad)
                node.wait(lambda: node.values().get("map", "") not in (loaded, "")
                          and not node.values()["map"].startswith("loading"), 30)
                said.append(node.values().get("map", ""))
                node.set_map(good_map)
                node.wait(lambda: "images" in node.values().get("map", "") and str(bad) not in node.values()["map"], 60)

            row = record("node: map", damage, swap, settle=0.2)
            status = re.sub(r"\S*lift_fuzz_[^/\s]*/", "", said[0]) if said else "?"
            row.outcome += f"; map status: {status[:100]}"

        if not wanted(SIGINT_CASE):
            return out
        # Ctrl-C during the largest warm-up the bounds allow.
        node.info.publish(_camera_info(cam, width=8192, height=8192, k=[4000.0, 0, 4096, 0, 4000.0, 4096, 0, 0, 1]))
        node.wait(lambda: node.values().get("warm_up", "").startswith("running"), 60)
        node.proc.send_signal(signal.SIGINT)
        peak, deadline = node.peak_mb(), time.monotonic() + 120
        while node.alive() and time.monotonic() < deadline:   # the warm-up runs on: its peak counts
            peak = max(peak, node.peak_mb()) if np.isfinite(node.peak_mb()) else peak
            time.sleep(0.1)
        code = node.proc.poll()
        text = node.output()
        ok = code == 0 and "terminate called" not in text and "Traceback" not in text
        out.append(Outcome("node: signal", SIGINT_CASE, f"exit {code}", round(peak),
                           ok and peak < max_mb))
    finally:
        node.close()
    return out


# ---------------------------------------------------------------- table


def print_table(rows: list[Outcome]) -> None:
    if not rows:
        print("no input matched")
        return
    width = max(len(r.case) for r in rows)
    group_w = max(len(r.group) for r in rows)
    print(f"{'':2}{'input':<{group_w + width + 3}}  {'peak MB':>7}  outcome")
    for r in rows:
        print(f"{'ok' if r.ok else '!!'}  {r.group:<{group_w}} | {r.case:<{width}}  {r.peak_mb:>7}  {r.outcome}")
    bad = [r for r in rows if not r.ok]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} inputs handled: no crash, no traceback, peak memory "
          f"under the bound" + (f"; FAILED: {', '.join(r.case for r in bad)}" if bad else ""))


def run_cases(only: str | None = None, match: re.Pattern | None = None, max_mb: float = MAX_MEMORY_MB,
              keep: Path | None = None) -> list[Outcome]:
    """The outcome of every input of one half (``only``: "node" or "cli"; None: both) whose name
    ``match`` finds (None: all), the crafted files built in a temporary folder, or in ``keep`` and kept."""
    root = Path(tempfile.mkdtemp(prefix="lift_fuzz_")) if keep is None else keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        good_map, query, cam, views = make_scene(root)
        rows = []

        def wanted(case: str) -> bool:
            return match is None or match.search(case) is not None

        if only in (None, "cli"):
            rows += cli_cases(root, good_map, query, max_mb, wanted)
        if only in (None, "node"):
            rows += node_cases(root, good_map, cam, views, max_mb, wanted)
        return rows
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
