"""The node under what should never happen: exceptions from its own stages, shutdown mid-frame."""
from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import Client, NodeProcess, diagnostics_values, private_domain, wait_for  # noqa: E402

from lift_localizer.ros.node import LocalizerNode  # noqa: E402


def until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def in_process():
    """A node in this process (own context and DDS domain), warm-up off."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(private_domain(176)))
    nodes = []

    def make(**params):
        overrides = [Parameter("warm_up", value=False)] + [Parameter(k, value=v) for k, v in params.items()]
        nodes.append(LocalizerNode(context=context, parameter_overrides=overrides))
        return nodes[-1]

    yield make
    for n in nodes:
        n.destroy_node()
    context.try_shutdown()


def test_the_worker_survives_any_exception_and_loads_the_next_map(in_process, monkeypatch):
    from lift_localizer.mapping import io

    tried = []

    def load_map(path, features=None):
        tried.append(str(path))
        raise TypeError("string indices must be integers")   # what a map.json of the wrong shape once raised

    monkeypatch.setattr(io, "load_map", load_map)
    node = in_process(map_path="/maps/first")
    assert until(lambda: node.stats.map_status.startswith("map not loaded")), node.stats.map_status
    assert "TypeError: string indices must be integers" in node.stats.map_status
    assert node._worker.is_alive()
    node.set_parameters([Parameter("map_path", value="/maps/second")])
    assert until(lambda: tried == ["/maps/first", "/maps/second"]), tried

    # Any stage, not only the map: an exception is counted and the worker goes on.
    real, calls = node._warm_up, []
    monkeypatch.setattr(node, "_warm_up", lambda: calls.append(1) or (real() if len(calls) > 1 else 1 / 0))
    assert until(lambda: len(calls) >= 3) and node._worker.is_alive()
    assert "internal error (in the worker: ZeroDivisionError" in node.stats.last_failure
    values = dict(node.stats.report(0)[2])
    assert values["failures: internal error"] == "1"


def test_an_rmw_without_message_lost_events_gets_the_images_and_says_so(in_process, monkeypatch):
    import lift_localizer.ros.node as node_module

    class Unsupported(node_module.SubscriptionEventCallbacks):   # whichever module this rclpy has it in
        def create_event_handlers(self, *args):
            raise node_module.UnsupportedEventTypeError("message lost is not supported by this RMW")

    monkeypatch.setattr(node_module, "SubscriptionEventCallbacks", Unsupported)
    node = in_process()
    assert until(lambda: node.get_subscriptions_info_by_topic(node.resolve_topic_name("image"))), \
        "no image subscription"
    assert dict(node.stats.report(0)[2])["frames_lost"] == "not reported by this RMW"


def test_a_frame_ending_after_the_context_is_no_error_and_shutdown_is_idempotent(in_process):
    """SIGINT ends the context first; the worker's frame then publishes into it (RCLError: publisher's
    context is invalid). That is shutdown, not an error to count and log."""
    from sensor_msgs.msg import Image
    from test_jump_gate import FakeLocalizer

    from lift_localizer.geometry.camera import Camera
    from lift_localizer.bags.convert import make_image_fields

    node = in_process()
    assert until(lambda: node.stats.map_status.startswith("no map:"))
    node._localizer, node._camera = FakeLocalizer(), Camera(8, 6, np.array([[5.0, 0, 4], [0, 5.0, 3], [0, 0, 1]]))
    node.context.try_shutdown()
    msg = Image(**make_image_fields(np.zeros((6, 8), np.uint8), "mono8"))
    node.slot.put((msg, False, time.monotonic(), node.gate.admit(time.monotonic(), 0.0)))
    assert until(lambda: not node._worker.is_alive())   # the publish failed: it knows the node is going
    assert node.stats.counts["bad"] == 0, node.stats.last_failure
    node.destroy_node()
    node.destroy_node()


def test_sigint_during_a_warm_up_stops_cleanly(room_scene, tmp_path):
    """Ctrl-C while a network runs in the worker: the process must not be finalised under it (which
    aborts it, exit -6, where the stage outlasts a fixed wait: the shutdown now waits for the stage)."""
    from sensor_msgs.msg import CameraInfo

    node = NodeProcess("-p", f"map_path:={room_scene[0] / 'map'}", "-p", "max_keypoints:=300", "-p", "diagnostics_period_s:=0.1",
                       "-p", "qos_reliability:=reliable", log=tmp_path / "node.log", domain_offset=60)
    client = Client("sigint_client", domain_offset=60)
    try:
        from diagnostic_msgs.msg import DiagnosticArray

        diagnostics = client.collect(DiagnosticArray, "/diagnostics")
        info = client.publisher(CameraInfo, "/camera_info")
        wait_for(lambda: diagnostics and "images" in diagnostics_values(diagnostics[-1])["map"], 60, "the map", node)
        wait_for(lambda: info.get_subscription_count() > 0, 20, "the subscription", node)
        # The largest camera max_image_side allows (warmed up at the extractor's working size).
        msg = CameraInfo(width=8192, height=8192, distortion_model="plumb_bob", d=[0.0] * 5,
                         k=[4000.0, 0, 4096, 0, 4000.0, 4096, 0, 0, 1])
        info.publish(msg)
        wait_for(lambda: diagnostics_values(diagnostics[-1])["warm_up"].startswith("running"), 30, "the warm-up", node)
        node.proc.send_signal(signal.SIGINT)
        try:
            code = node.proc.wait(120)
        except subprocess.TimeoutExpired:
            pytest.fail("the node did not stop within 120 s of SIGINT\n" + node.output()[-3000:])
        out = node.output()
        assert code == 0, f"exit code {code}\n{out[-3000:]}"
        assert "terminate called" not in out and "Traceback" not in out and "RCLError" not in out, out[-3000:]
    finally:
        client.close()
        node.stop()
