"""Retrieval speed and memory on a large synthetic map (run by ``python tools/retrieval_benchmark.py``).

Global descriptors of a 100 000-image map (random unit vectors with clusters, like real ones) in
the index the map builder would choose, queried one at a time as the localizer does; also the cost
of one NetVLAD descriptor from 2000 local descriptors, against the LIFT pipeline's time.
"""
from __future__ import annotations

import time

import numpy as np
import torch


def synthetic_descriptors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 1), dim)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run(n_images: int = 100_000, n_queries: int = 200, top_k: int = 10) -> None:
    """Print each index kind's build time, query time and recall of the exact nearest image among
    ``top_k``, over ``n_images`` map images, then NetVLAD's cost against LIFT's."""
    from .index import build_index, search
    from ..nets.netvlad import NetVLAD, pad_batch

    dim = NetVLAD().out_dim
    db = synthetic_descriptors(n_images, dim)
    queries = db[np.random.default_rng(1).choice(len(db), n_queries)] + 0.05 * np.random.default_rng(2).normal(
        size=(n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact, _ = build_index(db, "flat")
    _, truth = search(exact, queries, 1)
    for kind in ("flat", "hnsw"):
        t = time.perf_counter()
        index, _ = build_index(db, kind)
        built = time.perf_counter() - t
        times, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = search(index, q[None], top_k)
            times.append(time.perf_counter() - t)
            found.append(ids[0])
        hit = np.mean([truth[i, 0] in found[i] for i in range(len(queries))])
        memory = db.nbytes if kind == "flat" else db.nbytes + n_images * 32 * 2 * 4
        print(f"{kind:5s} {n_images} images × {dim}-D: build {built:.1f} s, query median "
              f"{np.median(times) * 1e3:.2f} ms, p90 {np.percentile(times, 90) * 1e3:.2f} ms, "
              f"exact nearest in top-{top_k} {hit:.3f}, memory ≈ {memory / 2**20:.0f} MiB")
    net = NetVLAD().eval()
    net.init_from_kmeans(np.random.default_rng(0).normal(size=(32, 128)).astype(np.float32),
                         np.random.default_rng(1).normal(size=(1000, 128)).astype(np.float32))
    local = [np.random.default_rng(3).normal(size=(2000, 128)).astype(np.float32)]
    with torch.no_grad():
        net(*pad_batch(local))
        t = time.perf_counter()
        for _ in range(20):
            net(*pad_batch(local))
    per = (time.perf_counter() - t) / 20
    from ..features.lift import Lift
    from ..synthetic import look_at, render, room

    image = render(room(), np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]),
                   look_at(np.zeros(3), np.array([1.0, 0.1, 2.0])), (480, 640)).astype(np.float32)
    lift = Lift({"max_keypoints": 2000})
    t = time.perf_counter()
    n = len(lift(image))
    lift_s = time.perf_counter() - t
    print(f"NetVLAD descriptor from 2000 local descriptors: {per * 1e3:.1f} ms; LIFT on a 640×480 image "
          f"({n} keypoints) {lift_s:.2f} s in this run: the global descriptor costs {per / lift_s * 100:.2f} % of it")
