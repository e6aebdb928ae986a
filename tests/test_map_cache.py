"""Maps loaded in bounded memory: an image's keypoints are read when retrieval returns it and kept in
a bounded cache; localization gives the same poses whatever the bound, and a corrupt image is
refused when it is first read, failing that query only."""
import json
import shutil

import h5py
import numpy as np
import pytest
from conftest import NODE_KEYPOINTS, run_cli

from lift_localizer.localization.localizer import Localizer, conf_from
from lift_localizer.mapping.image_cache import ImageCache, Observations
from lift_localizer.mapping.io import Map, MapError, MapImage, load_map
from lift_localizer.reasons import Reason


def _entry(n: int) -> Observations:
    return Observations(np.zeros((n, 2), np.float32), np.zeros((n, 128), np.float32), np.zeros(n, np.int64))


def test_cache_keeps_the_most_recently_used_images_within_its_bound():
    reads = []
    cache = ImageCache(lambda i: reads.append(i) or _entry(i + 1), capacity=3)
    for i in [0, 1, 2, 0, 3, 4, 0, 5]:
        cache.get(i)
        assert len(cache) <= 3
        assert cache.nbytes == sum(e.nbytes for e in cache._entries.values())
    assert reads == [0, 1, 2, 3, 4, 5]            # 0 was used again each time before it became the oldest
    assert list(cache._entries) == [4, 0, 5]
    cache.resize(1)
    assert list(cache._entries) == [5] and cache.nbytes == _entry(6).nbytes
    with pytest.raises(ValueError):
        cache.resize(0)


def test_points_are_found_by_id_in_any_order():
    ids = np.array([7, 3, 11, 5])
    xyz = np.arange(12, dtype=np.float64).reshape(4, 3)
    m = Map(None, {"features": {"name": "sift"}}, [], ids, xyz)
    assert np.array_equal(m.points_xyz(np.array([5, 7, 11])), xyz[[3, 0, 2]])
    assert np.array_equal(m.rows(np.array([3, 4]))[1], [True, False])
    with pytest.raises(KeyError):
        m.points_xyz(np.array([4]))


@pytest.fixture(scope="module")
def queries(room_scene):
    """The room's query features, extracted once, with their cameras."""
    root, cam, views = room_scene
    localizer = Localizer(load_map(root / "map"), {"max_keypoints": NODE_KEYPOINTS})
    return [localizer.extract(image, cam) for image, _ in views], cam


def test_a_small_cache_localizes_with_the_same_poses_as_a_full_one(room_scene, queries):
    root = room_scene[0]
    features, cam = queries
    full = Localizer(load_map(root / "map"), {"max_keypoints": NODE_KEYPOINTS})
    small_map = load_map(root / "map", cache_images=2)
    small = Localizer(small_map, {"max_keypoints": NODE_KEYPOINTS, "map_cache_images": 2})
    assert len(full.map.images) == 10 and len(full.map.cache) == 10   # the default holds the whole map
    localized = 0
    for q in features:
        a, b = full.localize_features(q, cam), small.localize_features(q, cam)
        assert len(small_map.cache) <= 2 and small_map.cache.misses > 2
        assert a.success == b.success and a.retrieved == b.retrieved and a.num_inliers == b.num_inliers
        if a.success:
            localized += 1
            assert np.array_equal(a.T_map_camera, b.T_map_camera) and np.array_equal(a.covariance, b.covariance)
    assert localized >= 3
    assert small_map.cache.nbytes == sum(e.nbytes for e in small_map.cache._entries.values())


def test_the_cache_bound_is_a_localizer_option_and_a_node_parameter():
    from lift_localizer.ros.params import BY_NAME, check

    assert conf_from({"map_cache_images": 5, "top_k": 3}) == {"map_cache_images": 5, "top_k": 3}
    assert check("map_cache_images", 0) is not None and check("map_cache_images", 50) is None
    assert BY_NAME["map_cache_images"].default == conf_from({"map_cache_images": 1000})["map_cache_images"]


def test_a_corrupt_image_is_refused_when_first_read_and_fails_only_its_query(room_scene, queries, tmp_path):
    root = room_scene[0]
    features, cam = queries
    conf = {"max_keypoints": NODE_KEYPOINTS, "top_k": 3, "covariance_floor": False}
    clean = Localizer(load_map(root / "map"), conf)
    before = [clean.localize_features(q, cam) for q in features]
    victim = before[0].retrieved[0]
    copy = shutil.copytree(root / "map", tmp_path / "map")
    with h5py.File(copy / "features.h5", "a") as f:
        n = len(f[victim]["scores"])
        del f[victim]["descriptors"]
        f[victim].create_dataset("descriptors", data=np.zeros((n, 64), np.float32))
    m = load_map(copy)   # nothing of the image is read yet
    index = [im.name for im in m.images].index(victim)
    with pytest.raises(MapError, match=f"image '{victim}'.*descriptors has shape"):
        m.observations(index)
    localizer = Localizer(m, conf)
    result = localizer.localize_features(features[0], cam)
    assert not result.success and result.reason.reason is Reason.BAD_MAP_IMAGE and victim in result.reason
    # The map's other images still serve: the queries that retrieve only them localize as before.
    others = [k for k, r in enumerate(before) if victim not in r.retrieved and r.success]
    assert others
    for k in others:
        after = localizer.localize_features(features[k], cam)
        assert after.success and np.array_equal(after.T_map_camera, before[k].T_map_camera)
    # A map small enough to be read whole when the localizer starts (the map's accuracy reads every
    # image) is refused at once, as the localize command reports it.
    with pytest.raises(MapError, match="descriptors has shape"):
        Localizer(load_map(copy), {"max_keypoints": NODE_KEYPOINTS})


def test_in_memory_images_give_their_observations():
    from lift_localizer.features.types import Features
    from lift_localizer.geometry.camera import Camera

    f = Features(np.arange(8, dtype=np.float32).reshape(4, 2), np.ones(4, np.float32), np.zeros(4, np.float32),
                 np.ones(4, np.float32), np.eye(4, 128, dtype=np.float32), image_size=(10, 10))
    cam = Camera(10, 10, np.eye(3))
    m = Map(None, {"features": {"name": "sift"}}, [MapImage("a", cam, np.eye(4), f, np.array([-1, 2, -1, 3]))],
            np.array([2, 3]), np.zeros((2, 3)))
    seen = m.observations(0)
    assert np.array_equal(seen.point3D_ids, [2, 3]) and np.array_equal(seen.keypoints, f.keypoints[[1, 3]])


def test_benchmark_scale_writes_one_object_per_size(tmp_path):
    out = tmp_path / "scale.json"
    code, stdout, stderr = run_cli("benchmark-scale", "--sizes", 20, 40, "--json", out, "--features", "sift",
                                   "--queries", 3, "--mapping-views", 10, "--query-views", 3, "--width", 320,
                                   "--height", 240, "--max-keypoints", 300, "--work", tmp_path)
    assert code == 0, stderr
    rows = json.loads(out.read_text())
    assert [r["images"] for r in rows] == [20, 40]
    for r in rows:
        assert {"images", "load_s", "rss_mb_loaded", "rss_mb_after_queries", "latency_ms_median",
                "recall_0.25m_2deg"} <= set(r)
        assert r["load_s"] > 0 and r["rss_mb_after_queries"] > 0 and 0 <= r["recall_0.25m_2deg"] <= 1
    assert "recall" in stdout and list(tmp_path.iterdir()) == [out]   # the maps are removed
