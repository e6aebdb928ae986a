"""The faiss index study (tools/retrieval_benchmark.py) and its synthetic descriptors."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from lift_localizer.retrieval.benchmark import measure
from lift_localizer.retrieval.descriptor_model import (DescriptorModel, fit_seeded, read_real, similarity_stats,
                                                       synthetic_same_place)


def test_the_seeded_model_reproduces_the_similarities_of_the_descriptors_it_is_fitted_to(tmp_path):
    # "Real" descriptors of two maps: loose places, consecutive images of one place.
    rng = np.random.default_rng(3)
    places = rng.normal(size=(40, 64))
    x = places.repeat(2, 0) + 1.2 * rng.normal(size=(80, 64))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    for k in range(2):
        with h5py.File(tmp_path / f"m{k}.h5", "w") as f:
            f["descriptors"] = x[40 * k:40 * (k + 1)].astype(np.float32)
        (tmp_path / f"map{k}").mkdir()
        (tmp_path / f"m{k}.h5").rename(tmp_path / f"map{k}" / "global.h5")
    real, owner = read_real([tmp_path / "map0", tmp_path / "map1"])
    assert real.shape == (80, 64) and owner.tolist() == [0] * 40 + [1] * 40
    model, target = fit_seeded(real, owner)
    got, place, _ = model.sample(5000, seed=5)
    stats = similarity_stats(got, synthetic_same_place(place))
    for key in ("random_pair_cos_median", "same_place_cos_median"):
        assert abs(stats[key] - target[key]) < 0.1, (key, stats, target)
    # The clustered model's places are far tighter than these.
    tight, place, _ = DescriptorModel.clustered(64).sample(5000)
    assert similarity_stats(tight, synthetic_same_place(place))["same_place_cos_median"] > target["same_place_cos_median"] + 0.3


def test_read_real_refuses_a_file_without_descriptors(tmp_path):
    with h5py.File(tmp_path / "global.h5", "w") as f:
        f["names"] = np.array([b"a"])
    with pytest.raises(ValueError, match="no \\(N, E\\) float descriptors"):
        read_real([tmp_path])


def test_each_index_is_scored_against_the_exact_search():
    import faiss

    from lift_localizer.retrieval.benchmark import descriptors
    from lift_localizer.retrieval.index import build_index, search

    db, place, queries, query_place = descriptors(DescriptorModel.clustered(32), 3000, 30)
    _, truth = search(build_index(db, "flat")[0], queries, 10)
    faiss.omp_set_num_threads(1)
    (flat,) = measure("flat", "flat", (None,), db, queries, truth, place, query_place)
    assert flat.recall == {1: 1.0, 5: 1.0, 10: 1.0} and flat.nearest_in_top10 == 1.0 and flat.place_at_1 == 1.0
    pq = measure("IVF16,PQ4", "IVF16,PQ4", (1, 16), db, queries, truth, place, query_place)
    assert [r.nprobe for r in pq] == [1, 16] and pq[0].bytes == pq[1].bytes < flat.bytes / 4
    # 4 bytes a vector cannot rank the 50 near-identical images of a place as the exact search does.
    assert pq[1].recall[10] < 1.0
