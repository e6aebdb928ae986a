"""The node's worker without ROS: the prior that limits retrieval (the last published pose or an
initialpose), the frames it refuses, when it goes back to a cold start, and what /diagnostics says."""
from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest
from test_worker import Outlet, camera

from lift_localizer.bags.convert import make_image_fields
from lift_localizer.localization.localizer import LocalizationResult
from lift_localizer.reasons import Failure, Reason
from lift_localizer.retrieval.area import AreaIndex
from lift_localizer.ros.cause_log import CauseLog
from lift_localizer.ros.params import PARAMS
from lift_localizer.ros.worker import Worker

# Ten map images one metre apart along x.
CENTRES = np.stack([np.arange(10.0), np.zeros(10), np.zeros(10)], 1)


class AreaLocalizer:
    """Records each query's prior and answers with the area a real localizer would search."""

    def __init__(self) -> None:
        self.conf = {"retrieval_radius_m": 2.0}
        self.map = SimpleNamespace(path="/maps/line", images=list(range(10)), point_ids=[1], features_name="lift")
        self.retrieval, self.retrieval_note = object(), ""
        self.priors: list = []
        self.succeed = True
        self.at = np.array([3.0, 0, 0])   # where a successful query puts the camera

    def warm_up(self, camera) -> float:
        return 0.0

    def extract(self, image, camera):
        return "features"

    def localize_features(self, features, camera, prior=None) -> LocalizationResult:
        self.priors.append(None if prior is None else np.array(prior))
        area = AreaIndex(CENTRES).candidates(prior, self.conf["retrieval_radius_m"])
        if not self.succeed:
            return LocalizationResult(False, Failure(Reason.TOO_FEW_MATCHES, "2"), area=area)
        T = np.eye(4)
        T[:3, 3] = self.at
        return LocalizationResult(True, None, T_map_camera=T, covariance=np.eye(6) * 1e-4, area=area)


@pytest.fixture
def worker():
    params = {p.name: p.default for p in PARAMS}
    params.update(warm_up=False, retrieval_radius_m=2.0, prior_timeout_s=5.0, prior_max_failures=2)
    w = Worker(params, Outlet(), CauseLog(logging.getLogger("test_worker_prior")))
    w.localizer, w.camera = AreaLocalizer(), camera()
    return w


def send(worker: Worker, stamp_s: float) -> None:
    header = SimpleNamespace(stamp=SimpleNamespace(sec=int(stamp_s), nanosec=int(round(stamp_s % 1 * 1e9))),
                             frame_id="camera")
    msg = SimpleNamespace(header=header, **make_image_fields(np.zeros((6, 8), np.uint8), "mono8"))
    now = time.monotonic()
    worker.process(msg, False, now, worker.gate.admit(now, 0.0))


def diagnostics(worker: Worker) -> dict[str, str]:
    return dict(worker.stats.report(0)[2])


def test_initialpose_in_the_map_frame_limits_the_next_query_and_others_are_refused(worker, caplog):
    caplog.set_level(logging.INFO)
    why = worker.initial_pose("odom", np.array([7.0, 0, 0]))
    assert "its frame is 'odom', not the map frame 'map'" in why and "initialpose refused" in caplog.text
    assert worker.initial_pose("map", np.array([np.nan, 0, 0])) is not None
    send(worker, 1.0)
    assert worker.localizer.priors[-1] is None
    values = diagnostics(worker)
    assert values["retrieval_area"] == "whole map: cold start (no prior yet)" and values["initial_poses_refused"] == "2"

    assert worker.initial_pose("/map", np.array([7.0, 0, 0])) is None
    assert "prior from initialpose: (7.00, 0.00, 0.00) in map" in caplog.text
    worker.localizer.succeed = False
    send(worker, 100.0)   # an initialpose ages from the next image, whatever the stamps before it
    assert worker.localizer.priors[-1].tolist() == [7, 0, 0]
    values = diagnostics(worker)
    assert values["retrieval_area"] == "limited: 5 of 10 map images within 2 m of the prior (initialpose)"
    assert values["initial_poses"] == "1" and values["frames_area_limited"] == "1" and values["frames_whole_map"] == "1"


def test_the_last_published_pose_is_the_prior_until_failures_or_age_end_it(worker):
    send(worker, 1.0)
    assert worker.localizer.priors[-1] is None and len(worker.outlet.poses) == 1
    send(worker, 2.0)
    assert worker.localizer.priors[-1].tolist() == [3, 0, 0]
    assert diagnostics(worker)["retrieval_area"].endswith("(the last accepted pose)")
    # prior_max_failures = 2 area-limited failures in a row: a cold start.
    worker.localizer.succeed = False
    send(worker, 3.0)
    send(worker, 4.0)
    send(worker, 5.0)
    assert worker.localizer.priors[-2] is not None and worker.localizer.priors[-1] is None
    assert diagnostics(worker)["retrieval_area"] == \
        "whole map: cold start (2 area-limited queries failed in a row)"
    # Older than prior_timeout_s (5 s of image stamps): a cold start.
    worker.localizer.succeed = True
    send(worker, 6.0)
    send(worker, 11.5)
    assert worker.localizer.priors[-1] is None and "5.5 s old" in diagnostics(worker)["retrieval_area"]
    # A parameter change applies from the next frame; a new map forgets the prior.
    worker.set_params({"prior_timeout_s": 0.0})
    send(worker, 1000.0)
    assert worker.localizer.priors[-1] is not None
    worker.set_params({"map_path": "/maps/other"})
    worker.reload.clear()   # the test keeps its localizer
    send(worker, 1001.0)
    assert worker.localizer.priors[-1] is None and "the map changed" in diagnostics(worker)["retrieval_area"]


def test_an_initialpose_during_a_frame_wins_over_that_frames_pose(worker):
    localizer = worker.localizer
    original = localizer.localize_features

    def meanwhile(features, camera, prior=None):
        worker.initial_pose("map", np.array([9.0, 0, 0]))
        return original(features, camera, prior)

    localizer.localize_features = meanwhile
    send(worker, 1.0)
    localizer.localize_features = original
    send(worker, 2.0)
    assert localizer.priors[-1].tolist() == [9, 0, 0]


def test_no_radius_says_whole_map_and_counts_nothing(worker):
    worker.localizer.conf["retrieval_radius_m"] = 0.0
    send(worker, 1.0)
    send(worker, 2.0)
    values = diagnostics(worker)
    assert values["retrieval_area"] == "whole map (no radius set)"
    assert values["frames_area_limited"] == values["frames_whole_map"] == "0"
