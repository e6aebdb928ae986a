"""The node's worker without ROS: maps that fail and then load, warm-up per camera size, exceptions
inside a frame, the stop flag between stages (the node drives the same object, tests/test_node*.py)."""
from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest

from lift_localizer.bags.convert import make_image_fields
from lift_localizer.geometry.camera import Camera
from lift_localizer.localization.localizer import LocalizationResult
from lift_localizer.reasons import Failure, Reason
from lift_localizer.ros.cause_log import CauseLog
from lift_localizer.ros.params import MAX_WARM_UP_SIZES, PARAMS
from lift_localizer.ros.worker import Odom, Worker


class Outlet:
    """The node's side, recorded."""

    def __init__(self) -> None:
        self.poses: list[np.ndarray] = []
        self.keypoints: list = []
        self.broadcasts: list = []
        self.ok = True

    def context_ok(self) -> bool:
        return self.ok

    def odom_at(self, header) -> Odom:
        return Odom(None)

    def publish_keypoints(self, features, header) -> None:
        self.keypoints.append(features)

    def publish_pose(self, T_map_camera, covariance, header) -> None:
        self.poses.append(T_map_camera)

    def broadcast(self, T_map_camera, header, odom) -> None:
        self.broadcasts.append(T_map_camera)


class FakeLocalizer:
    """Counts its calls; ``extract`` runs ``on_extract`` first (to raise, or to close the slot)."""

    def __init__(self, path: str = "/maps/good") -> None:
        self.conf: dict = {}
        self.map = SimpleNamespace(path=path, images=["a", "b"], point_ids=[1, 2, 3], features_name="lift")
        self.retrieval, self.retrieval_note = object(), ""
        self.warmed_at: list[tuple[int, int]] = []
        self.localized = 0
        self.on_extract = lambda: None

    def warm_up(self, camera) -> float:
        self.warmed_at.append((camera.width, camera.height))
        return 0.01

    def extract(self, image, camera):
        self.on_extract()
        return "features"

    def localize_features(self, features, camera, prior=None) -> LocalizationResult:
        self.localized += 1
        return LocalizationResult(True, None, T_map_camera=np.eye(4), covariance=np.eye(6) * 1e-4)


def camera(width: int = 8, height: int = 6) -> Camera:
    return Camera(width, height, np.array([[5.0, 0, width / 2], [0, 5.0, height / 2], [0, 0, 1]]))


def frame(worker: Worker, width: int = 8, height: int = 6) -> tuple:
    """What the node's image callback stores in the slot."""
    header = SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="camera")
    msg = SimpleNamespace(header=header, **make_image_fields(np.zeros((height, width), np.uint8), "mono8"))
    now = time.monotonic()
    return msg, False, now, worker.gate.admit(now, 0.0)


@pytest.fixture
def worker():
    params = {p.name: p.default for p in PARAMS}
    params["warm_up"] = True
    return Worker(params, Outlet(), CauseLog(logging.getLogger("test_worker")))


def test_a_map_that_fails_to_load_then_a_good_one(worker, monkeypatch):
    from lift_localizer.localization import localizer
    from lift_localizer.mapping import io

    def load_map(path, features=None):
        if str(path) == "/maps/broken":
            raise io.MapError(f"{path}: map.json is missing")
        return str(path)

    monkeypatch.setattr(io, "load_map", load_map)
    monkeypatch.setattr(localizer, "Localizer", lambda m, conf: FakeLocalizer(m))
    worker.load_map()
    assert worker.localizer is None and worker.stats.map_status == "no map: set the map_path parameter"

    worker.set_params({"map_path": "/maps/broken"})
    assert worker.reload.is_set()
    worker.load_map()
    assert worker.localizer is None and not worker.reload.is_set()
    assert worker.stats.map_status == "map not loaded: /maps/broken: map.json is missing"

    worker.set_params({"map_path": "/maps/good"})
    worker.load_map()
    assert worker.localizer.map.path == "/maps/good" and worker.stats.map_ok
    assert worker.stats.map_status == "/maps/good: 2 images, 3 points, lift features"

    # An option that needs no reload reaches the loaded localizer at once.
    worker.set_params({"top_k": 3})
    assert not worker.reload.is_set() and worker.localizer.conf["top_k"] == 3


def test_each_camera_size_is_warmed_up_once_per_map_up_to_the_bound(worker, caplog):
    worker.localizer = fake = FakeLocalizer()
    sizes = [(8 + 2 * i, 6) for i in range(MAX_WARM_UP_SIZES + 2)]
    with caplog.at_level(logging.WARNING, "test_worker"):
        for w, h in [sizes[0], sizes[0], sizes[1], sizes[0], *sizes, *sizes]:
            worker.set_camera(camera(w, h))
            worker.warm_up()
    assert fake.warmed_at == sizes[:MAX_WARM_UP_SIZES]
    assert sum("not warmed up" in r.message for r in caplog.records) == 1
    assert worker.stats.warm_up.startswith(f"{sizes[MAX_WARM_UP_SIZES - 1][0]}×6 in ")

    worker.set_params({"warm_up": False})
    worker.localizer = other = FakeLocalizer()
    worker.warmed = set()
    worker.warm_up()
    assert other.warmed_at == []


def test_an_exception_in_extraction_is_counted_and_the_next_frame_is_localized(worker):
    worker.localizer, worker.camera = FakeLocalizer(), camera()
    worker.reload.clear()
    calls = []

    def first_fails():
        calls.append(1)
        if len(calls) == 1:
            worker.slot.put(frame(worker))   # the next frame arrives while this one fails
            raise RuntimeError("CUDA error: an illegal memory access")

    def publish_pose(T_map_camera, covariance, header):
        worker.outlet.poses.append(T_map_camera)
        worker.slot.close()   # the loop ends after this frame

    worker.localizer.on_extract = first_fails
    worker.outlet.publish_pose = publish_pose
    worker.slot.put(frame(worker))
    worker.run()
    assert len(calls) == 2 and len(worker.outlet.poses) == 1
    assert worker.stats.counts["bad"] == 1
    assert "internal error (in the worker: RuntimeError: CUDA error" in worker.stats.last_failure
    assert worker.stats.counts["processed"] == worker.stats.counts["localized"] == 1
    assert len(worker.outlet.broadcasts) == 1 and worker.outlet.keypoints == []


def test_a_stop_during_extraction_ends_the_frame_before_localization(worker):
    worker.localizer, worker.camera = FakeLocalizer(), camera()
    worker.localizer.on_extract = worker.slot.close   # as destroy_node does while a network runs
    worker.process(*frame(worker))
    assert worker.localizer.localized == 0 and worker.outlet.poses == []
    assert worker.stats.counts["processed"] == 0
    worker.run()   # a closed slot: the loop takes nothing and returns at once


def test_an_error_after_the_context_ended_is_shutdown_not_a_failure(worker):
    """The node's context goes first at Ctrl-C; a publish into it then raises."""
    worker.localizer, worker.camera = FakeLocalizer(), camera()
    worker.reload.clear()

    def publish_pose(*args):
        worker.outlet.ok = False
        raise RuntimeError("publisher's context is invalid")

    worker.outlet.publish_pose = publish_pose
    worker.slot.put(frame(worker))
    worker.run()   # returns: the node is going
    assert worker.stats.counts["bad"] == 0 and worker.stats.counts["processed"] == 1


def test_frames_that_cannot_be_localized_say_why(worker):
    worker.reload.clear()
    worker.process(*frame(worker))
    assert worker.stats.counts["skipped_no_map"] == 1
    worker.localizer = FakeLocalizer()
    worker.process(*frame(worker))
    assert worker.stats.counts["skipped_no_camera_info"] == 1
    worker.camera = camera(10, 6)
    worker.process(*frame(worker))
    assert worker.stats.last_failure == str(Failure(Reason.IMAGE_SIZE, "image is 8×6, camera_info says 10×6"))
    assert worker.localizer.localized == 0


def test_the_worker_imports_no_ros():
    """The worker runs (and is tested) where rclpy and the message packages are not installed."""
    import subprocess
    import sys

    code = ("import sys, lift_localizer.ros.worker; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('rclpy', 'sensor_msgs', 'geometry_msgs', 'std_msgs', 'diagnostic_msgs', 'tf2_ros')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
