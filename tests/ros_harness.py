"""Test helpers over real DDS: a private ROS domain, the node as a subprocess, a client node that
publishes and collects on a background executor."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def private_domain(offset: int = 0) -> str:
    """A ROS_DOMAIN_ID of this test process (1..200), so parallel runs on one host never cross;
    ``offset`` gives a test its own domain beside a module's long-lived node."""
    return str(1 + (os.getpid() + offset) % 200)


def ros_env(domain_offset: int = 0) -> dict[str, str]:
    env = dict(os.environ, ROS_DOMAIN_ID=private_domain(domain_offset), PYTHONUNBUFFERED="1",
               FASTDDS_BUILTIN_TRANSPORTS=os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"))
    env.pop("ROS_LOCALHOST_ONLY", None)
    return env


def node_command(*ros_args: str) -> list[str]:
    """What `ros2 run lift_localizer lift_localizer_node --ros-args ...` runs."""
    script = Path(sys.executable).parent / "lift_localizer_node"
    exe = [str(script)] if script.exists() else ([shutil.which("lift_localizer_node")] if shutil.which(
        "lift_localizer_node") else [sys.executable, "-m", "lift_localizer.ros.node"])
    return [*exe, "--ros-args", "-r", "__node:=lift_localizer", *ros_args]


class NodeProcess:
    def __init__(self, *ros_args: str, log: Path, domain_offset: int = 0) -> None:
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(node_command(*ros_args), env=ros_env(domain_offset), stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=REPO)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(2)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Client:
    """A node in this process with its own context and executor thread; collects what it hears."""

    def __init__(self, name: str = "test_client", domain_offset: int = 0) -> None:
        os.environ.update(ROS_DOMAIN_ID=private_domain(domain_offset),
                          FASTDDS_BUILTIN_TRANSPORTS=os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA"))
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:   # noqa: BLE001 — shutting down
                return

    def collect(self, msg_type, topic: str, reliable: bool = True) -> list:
        self.received[topic] = []
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)

        def store(msg, topic=topic):
            with self._lock:
                self.received[topic].append(msg)

        self.node.create_subscription(msg_type, topic, store, qos)
        return self.received[topic]

    def publisher(self, msg_type, topic: str):
        return self.node.create_publisher(msg_type, topic, QoSProfile(depth=10))

    def call(self, srv_type, name: str, request, timeout: float = 20.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=timeout), f"service {name} did not appear"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert future.done(), f"service {name} did not answer"
        return future.result()

    def close(self) -> None:
        self.context.try_shutdown()
        self._thread.join(timeout=2)
        self.executor.shutdown()


def wait_for(predicate, timeout: float, what: str, proc: NodeProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and not proc.alive():
            raise AssertionError(f"the node exited while waiting for {what}:\n{proc.output()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f"\nnode output:\n{proc.output()[-3000:]}" if proc else ""))


def diagnostics_values(msg) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[0].values}
