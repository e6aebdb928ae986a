"""Failure reasons: a fixed set, whatever the numbers in the text."""
import copy
import json
import pickle

from lift_localizer.reasons import Failure, Reason, reason_of
from lift_localizer.ros.node_stats import NodeStats


def test_a_failure_is_its_text_and_knows_its_reason():
    f = Failure(Reason.TOO_FEW_INLIERS, "12 < 20")
    assert f == "too few inliers (12 < 20)" and f.startswith(Reason.TOO_FEW_INLIERS) and f"{f}" == f
    assert f"{Reason.RIVAL}" == "a rival pose is nearly as well supported" == str(Reason.RIVAL)
    assert Failure(Reason.PNP_FAILED) == Reason.PNP_FAILED == "RANSAC found no pose"
    for again in (copy.copy(f), pickle.loads(pickle.dumps(f))):
        assert again == f and again.reason is Reason.TOO_FEW_INLIERS and again.detail == "12 < 20"
    assert json.loads(json.dumps({"reason": f})) == {"reason": "too few inliers (12 < 20)"}


def test_text_maps_back_onto_the_fixed_set():
    assert reason_of("too few inliers (3 < 20)") is Reason.TOO_FEW_INLIERS
    assert reason_of("RANSAC found no pose") is Reason.PNP_FAILED
    assert reason_of("something else entirely (42)") is Reason.OTHER and reason_of(None) is None


def test_stats_keep_one_counter_per_reason_however_many_distinct_messages():
    stats = NodeStats()
    for n in range(300):
        stats.failure(Failure(Reason.BAD_IMAGE, f"image data has {n} bytes"), counter="bad")
        stats.failure(f"made-up reason {n} (n)")
    values = dict(stats.report(0)[2])
    keys = [k for k in values if k.startswith("failures:")]
    assert sorted(keys) == ["failures: other", "failures: unreadable image"]
    assert values["failures: unreadable image"] == values["failures: other"] == "300"
    assert values["last_failure"] == "made-up reason 299 (n)"
