"""Retrieval limited to an area around a prior position: the candidates, their exact scoring (NetVLAD)
and votes (descriptor votes), the localizer's fallbacks, and when a prior stops holding."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lift_localizer.localization.localizer import LocalizationResult
from lift_localizer.localization.prior import PosePrior
from lift_localizer.localization.vote_retrieval import VoteRetrieval
from lift_localizer.reasons import Failure, Reason
from lift_localizer.retrieval.area import COLD_START, LIMITED, NONE_NEAR, OFF, AreaIndex, AreaUse
from lift_localizer.retrieval.index import build_index
from lift_localizer.retrieval.retriever import NetVLADRetrieval, best_of


def test_candidates_are_the_centres_within_the_radius():
    centres = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [0, 2.5, 0], [10, 10, 10]])
    area = AreaIndex(centres)
    use = area.candidates(np.array([0.5, 0, 0]), 1.0)
    assert use.mode == LIMITED and use.ids.tolist() == [0, 1]
    assert "2 of 5 map images within 1 m" in use.describe("initialpose") and "(initialpose)" in use.describe("initialpose")
    # The boundary is inside: a centre exactly at the radius is a candidate.
    assert area.within(np.zeros(3), 2.5).tolist() == [0, 1, 3]
    assert area.candidates(np.zeros(3), 0.0).mode == OFF and area.candidates(np.zeros(3), 0.0).ids is None
    cold = area.candidates(None, 1.0)
    assert cold.mode == COLD_START and cold.ids is None and "cold start" in cold.describe("no prior yet")
    far = area.candidates(np.array([100.0, 0, 0]), 1.0)
    assert far.mode == NONE_NEAR and far.ids is None and "no map image within 1 m" in far.describe()
    with pytest.raises(ValueError, match="3 finite numbers"):
        area.candidates(np.array([np.nan, 0, 0]), 1.0)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        AreaIndex(np.zeros((4, 2)))


def test_best_of_ranks_by_score_and_keeps_all_when_fewer_than_k():
    ids, scores = np.array([7, 3, 9, 4]), np.array([0.1, 0.9, 0.5, 0.9])
    top, s = best_of(ids, scores, 2)
    assert top.tolist() == [3, 4] and s.tolist() == [0.9, 0.9]
    top, _ = best_of(ids, scores, 10)
    assert top.tolist() == [3, 4, 9, 7]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_netvlad_candidates_are_scored_exactly(kind):
    rng = np.random.default_rng(0)
    db = rng.normal(size=(500, 32)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    query = db[17] + 0.3 * rng.normal(size=32).astype(np.float32)
    retrieval = object.__new__(NetVLADRetrieval)   # the index without a NetVLAD: its descriptor is given
    retrieval.index, _ = build_index(db, kind)
    retrieval.describe = lambda descriptors: query
    candidates = np.sort(rng.choice(500, 60, replace=False))
    top, scores = retrieval.top_k(np.ones((5, 128)), 10, candidates)
    exact = candidates[np.argsort(-(db[candidates] @ query), kind="stable")[:10]]
    assert top.tolist() == exact.tolist()
    np.testing.assert_allclose(scores, db[top] @ query, rtol=1e-5)
    # Fewer candidates than k: all of them, best first.
    top, _ = retrieval.top_k(np.ones((5, 128)), 10, candidates[:4])
    assert sorted(top.tolist()) == candidates[:4].tolist()
    # Without candidates: the whole map, where the nearest image wins.
    assert retrieval.top_k(np.ones((5, 128)), 1)[0][0] == 17


def test_votes_come_only_from_the_candidates():
    rng = np.random.default_rng(1)
    desc = [rng.normal(size=(30, 16)).astype(np.float32) for _ in range(6)]
    images = [SimpleNamespace() for _ in desc]
    map_ = SimpleNamespace(images=images, features_name="sift",
                           read_observations=lambda i: SimpleNamespace(descriptors=desc[i], point3D_ids=np.arange(30)))
    votes = VoteRetrieval(map_)
    query = desc[2][:20] + 0.01
    assert votes.top_k(query, 3)[0][0] == 2
    top, counts = votes.top_k(query, 3, np.array([0, 4, 5]))
    assert set(top.tolist()) <= {0, 4, 5} and len(top) > 0 and counts.sum() == 20
    assert votes.top_k(query, 3, np.array([], np.int64))[0].size == 0


def result(success: bool, position=(0.0, 0.0, 0.0), mode: str = LIMITED) -> LocalizationResult:
    T = np.eye(4)
    T[:3, 3] = position
    return LocalizationResult(success, None if success else Failure(Reason.TOO_FEW_MATCHES, "3"),
                              T_map_camera=T if success else None, area=AreaUse(mode, np.arange(3), 1.0, 10))


def test_the_prior_follows_accepted_poses_and_ages_on_image_stamps():
    prior = PosePrior(timeout_s=5.0, max_failures=3)
    assert prior.take(0.0) == (None, "no prior yet")
    prior.update(result(True, (1, 2, 3)), 10.0)
    position, source = prior.take(12.0)
    assert position.tolist() == [1, 2, 3] and source == "the last accepted pose"
    position, why = prior.take(15.5)
    assert position is None and "5.5 s old" in why
    # Given without a stamp (initialpose): it ages from the first query after it.
    prior.set(np.array([4.0, 5, 6]), None, "initialpose")
    assert prior.take(100.0)[0].tolist() == [4, 5, 6] and prior.take(104.0)[1] == "initialpose"
    assert prior.take(106.0)[0] is None
    # Stamps that go back (a bag played again) drop it.
    prior.update(result(True), 50.0)
    position, why = prior.take(49.0)
    assert position is None and "went back" in why
    # No stamps at all (image folders): no age test.
    prior.update(result(True), None)
    assert prior.take(None)[0] is not None and prior.take(1e9)[0] is not None


def test_repeated_area_limited_failures_drop_the_prior():
    prior = PosePrior(timeout_s=0.0, max_failures=3)
    prior.update(result(True, (1, 0, 0)), 0.0)
    for _ in range(2):
        prior.update(result(False), 1.0)
        assert prior.take(1.0)[0] is not None
    # A whole-map query (none near the prior) that fails does not count: the prior did not limit it.
    prior.update(result(False, mode=NONE_NEAR), 1.0)
    assert prior.take(1.0)[0] is not None
    prior.update(result(False), 1.0)
    position, why = prior.take(1.0)
    assert position is None and why == "3 area-limited queries failed in a row"
    # A success in between starts the count again; max_failures 0 never drops it.
    never = PosePrior(timeout_s=0.0, max_failures=0)
    never.update(result(True), 0.0)
    for _ in range(10):
        never.update(result(False), 1.0)
    assert never.take(1.0)[0] is not None
    # A pose accepted by the localizer but not taken (the node's jump gate held it) changes nothing.
    held = PosePrior()
    held.update(result(True, (1, 0, 0)), 0.0)
    held.update(result(True, (9, 0, 0)), 0.1, accepted=False)
    assert held.take(0.2)[0].tolist() == [1, 0, 0] and held.failures == 0


# ---------------------------------------------------------------- the localizer on a real (synthetic) map


@pytest.fixture(scope="module")
def room_lift(tmp_path_factory):
    pytest.importorskip("pycolmap")
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.build import build_map
    from lift_localizer.mapping.frames import Frame
    from lift_localizer.synthetic import room_sequence

    K, mapping, query = room_sequence(10, 2, image_size=(240, 320))
    cam = Camera(320, 240, K)
    frames = [Frame(f"map_{i}", cam, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
    out = tmp_path_factory.mktemp("area") / "room"
    build_map(frames, out, ("lift",), {"max_keypoints": 300}, log=lambda m: None)
    return out, cam, query


@pytest.mark.parametrize("retrieval", ["netvlad", "vote"])
def test_the_localizer_retrieves_within_the_radius_and_falls_back_to_the_whole_map(room_lift, retrieval):
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.io import load_map

    out, cam, query = room_lift
    localizer = Localizer(load_map(out), {"max_keypoints": 300, "retrieval": retrieval})
    image, T = query[0]
    q = localizer.extract(image, cam)
    centres = np.array([im.T_map_camera[:3, 3] for im in localizer.map.images])
    distance = np.linalg.norm(centres - T[:3, 3], axis=1)
    assert localizer.localize_features(q, cam, prior=T[:3, 3]).area.mode == OFF   # no radius: the prior is unused
    # A radius that holds the 3 nearest map images: fewer than top_k, so those three are retrieved.
    localizer.conf["retrieval_radius_m"] = float(np.sort(distance)[2]) + 1e-6
    r = localizer.localize_features(q, cam, prior=T[:3, 3])
    assert r.area.mode == LIMITED and sorted(r.area.ids.tolist()) == sorted(np.argsort(distance)[:3].tolist())
    names = {localizer.names[i] for i in r.area.ids}
    assert r.retrieved and set(r.retrieved) <= names
    if retrieval == "netvlad":
        assert set(r.retrieved) == names
    assert r.success, r.reason
    # No map image near the prior: the whole map, and the result says so.
    far = localizer.localize_features(q, cam, prior=T[:3, 3] + 1000.0)
    assert far.area.mode == NONE_NEAR and far.success and len(far.retrieved) > 3
    cold = localizer.localize_features(q, cam)
    assert cold.area.mode == COLD_START and cold.success
    assert "retrieve" in cold.timings


def test_localize_frames_uses_the_previous_accepted_pose_as_the_prior(room_lift):
    from lift_localizer.evaluation.replay import area_counts, localize_frames
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.frames import Frame
    from lift_localizer.mapping.io import load_map

    out, cam, query = room_lift
    localizer = Localizer(load_map(out), {"max_keypoints": 300, "retrieval_radius_m": 100.0})
    frames = [Frame(f"q{i}", cam, None, stamp_ns=i * 10**8, loader=lambda im=im: im)
              for i, (im, _) in enumerate(query * 2)]
    outcomes = localize_frames(localizer, frames)
    modes = [o.result.area.mode for o in outcomes]
    assert modes[0] == COLD_START and all(m == LIMITED for m in modes[1:]), modes
    assert area_counts(outcomes) == {COLD_START: 1, LIMITED: len(frames) - 1}
    assert all(o.reason is None for o in outcomes)


def test_benchmark_scale_measures_each_size_with_and_without_the_radius(tmp_path):
    import json

    from conftest import run_cli

    out = tmp_path / "scale.json"
    code, stdout, stderr = run_cli("benchmark-scale", "--sizes", 30, "--json", out, "--features", "sift",
                                   "--queries", 3, "--mapping-views", 10, "--query-views", 3, "--width", 320,
                                   "--height", 240, "--max-keypoints", 300, "--retrieval-radius", 5, "--work", tmp_path)
    assert code == 0, stderr
    whole, limited = json.loads(out.read_text())
    assert whole["images"] == limited["images"] == 30
    assert whole["retrieval_radius_m"] == 0 and whole["area"] == {OFF: 3} and 0 <= whole["localized"] <= 3
    # The room is 6 m across and its copies lie farther apart than that: after the first query (a cold
    # start) the previous pose limits retrieval to the real room's images.
    assert limited["retrieval_radius_m"] == 5 and limited["area"][COLD_START] == 1 and limited["area"][LIMITED] == 2
    assert "retrieve ms" in stdout
    # The first query's true position as its prior (a user's initialpose): no cold start.
    code, stdout, stderr = run_cli("benchmark-scale", "--sizes", 30, "--json", out, "--features", "sift",
                                   "--queries", 3, "--mapping-views", 10, "--query-views", 3, "--width", 320,
                                   "--height", 240, "--max-keypoints", 300, "--retrieval-radius", 5, "--initial-prior",
                                   "--work", tmp_path)
    assert code == 0, stderr
    assert json.loads(out.read_text())[1]["area"] == {LIMITED: 3}
