"""Which faiss index a large map wants (run by ``python tools/retrieval_benchmark.py``).

Global descriptors of a 100 000-image map (``descriptor_model``: clustered at random, or seeded from
real NetVLAD descriptors of maps given with ``--real``) in each index kind: exact (flat), HNSW (the
map builder's above ``index.EXACT_UP_TO`` images), IVF-Flat and IVF-PQ at a few ``nprobe``. For each:
build time (training included), memory (the serialised index, what a map stores and loads), the
latency of one query at a time as the localizer asks (wall time, median and p90; and the searching
thread's CPU time, median, which other work on the machine does not inflate), and how much of the exact
search's answer it finds: recall@k = the fraction of flat's top-k among its own top-k (k = 1, 5, 10),
how often flat's nearest image is among its top 10, and how often its first image is of the query's
place (place@1; flat's is what the descriptors allow). Queries are new images of the map's places.
Also the cost of one NetVLAD descriptor from 2000 local descriptors, against the LIFT pipeline's time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .descriptor_model import (DescriptorModel, fit_seeded, read_real, similarity_stats, synthetic_same_place)

KS = (1, 5, 10)
# (name, faiss factory string or the map builder's kind, nprobe values)
KINDS = (("flat", "flat", (None,)), ("hnsw", "hnsw", (None,)),
         ("IVF1024,Flat", "IVF1024,Flat", (8, 32)),
         ("IVF1024,PQ32", "IVF1024,PQ32", (8, 32)),
         ("IVF1024,PQ64", "IVF1024,PQ64", (8, 32)))


@dataclass
class Row:
    name: str
    nprobe: int | None
    build_s: float
    bytes: int
    median_ms: float
    p90_ms: float
    cpu_median_ms: float
    recall: dict[int, float]
    nearest_in_top10: float
    place_at_1: float

    def line(self) -> str:
        kind = self.name + (f" nprobe {self.nprobe}" if self.nprobe else "")
        recall = "  ".join(f"{self.recall[k]:.3f}" for k in KS)
        return (f"{kind:24s} {self.build_s:8.1f} {self.bytes / 2**20:9.1f} {self.median_ms:9.2f} {self.p90_ms:8.2f} "
                f"{self.cpu_median_ms:8.2f}  {recall}  {self.nearest_in_top10:.3f}    {self.place_at_1:.3f}")


HEADER = (f"{'index':24s} {'build s':>8s} {'MiB':>9s} {'median ms':>9s} {'p90 ms':>8s} {'CPU ms':>8s}  "
          f"{'R@1':5s}  {'R@5':5s}  {'R@10':5s}  nearest in top 10  place@1")


def build(spec: str, db: np.ndarray):
    """The index of ``db`` for ``spec``: the map builder's 'flat' or 'hnsw', else a faiss factory string."""
    import faiss

    from .index import build_index

    if spec in ("flat", "hnsw"):
        return build_index(db, spec)[0]
    index = faiss.index_factory(db.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
    # The factory turns on polysemous training (Hamming-filtered search, unused here): 20× the PQ's own.
    if hasattr(index, "do_polysemous_training"):
        index.do_polysemous_training = False
    index.train(db)
    index.add(db)
    return index


def measure(name: str, spec: str, nprobes, db: np.ndarray, queries: np.ndarray, truth: np.ndarray,
            place: np.ndarray, query_place: np.ndarray) -> list[Row]:
    """One row per ``nprobe`` of the index ``spec`` over ``db``; ``truth``: flat's top max(KS) per query;
    ``place``, ``query_place``: the place of each map image and each query."""
    import faiss

    from .index import search

    t = time.perf_counter()
    index = build(spec, db)
    built = time.perf_counter() - t
    size = int(faiss.serialize_index(index).nbytes)
    rows = []
    for nprobe in nprobes:
        if nprobe is not None:
            faiss.extract_index_ivf(index).nprobe = nprobe
        times, cpu, found = [], [], []
        for q in queries:
            t, c = time.perf_counter(), time.thread_time()
            _, ids = search(index, q[None], max(KS))
            times.append(time.perf_counter() - t)
            cpu.append(time.thread_time() - c)
            found.append(ids[0])
        recall = {k: float(np.mean([len(set(truth[i, :k]) & set(f[:k])) / k for i, f in enumerate(found)]))
                  for k in KS}
        nearest = float(np.mean([truth[i, 0] in f for i, f in enumerate(found)]))
        right_place = float(np.mean([len(f) > 0 and place[f[0]] == query_place[i] for i, f in enumerate(found)]))
        rows.append(Row(name, nprobe, built, size, 1e3 * float(np.median(times)),
                        1e3 * float(np.percentile(times, 90)), 1e3 * float(np.median(cpu)), recall, nearest,
                        right_place))
    return rows


def descriptors(model: DescriptorModel, n_images: int,
                n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(map descriptors, their places, queries, theirs): the queries are new images of the map's places."""
    db, place, places = model.sample(n_images, seed=0)
    queries, query_place = model.images(places, n_queries, seed=99)
    return db, place, queries, query_place


def run(n_images: int = 100_000, n_queries: int = 200, real: list[Path] | None = None,
        kinds: tuple = KINDS) -> list[Row]:
    """Print each index kind's build time, memory, query time and recall against the exact search
    over ``n_images`` map images (from the model seeded by the ``real`` maps' descriptors where given),
    then NetVLAD's cost against LIFT's; returns the rows."""
    import faiss

    from .index import build_index, search
    from ..nets.netvlad import NetVLAD

    dim = NetVLAD().out_dim
    clustered = DescriptorModel.clustered(dim)
    model = clustered
    if real:
        descs, owner = read_real(real)
        model, stats = fit_seeded(descs, owner)
        print(f"real NetVLAD descriptors: {len(descs)} images of {len(real)} maps: " + _stats(stats))
        print(f"seeded model: place noise {model.place_noise:g}, image noise {model.image_noise:g} (× the real "
              f"spread per dimension, {model.scale:.3g})")
    for label, m in (("clustered", clustered), *((("seeded", model),) if real else ())):
        x, place, _ = m.sample(min(n_images, 20000), seed=0)
        print(f"{label} model at {len(x)} images: " + _stats(similarity_stats(x, synthetic_same_place(place))))
    db, place, queries, query_place = descriptors(model, n_images, n_queries)
    _, truth = search(build_index(db, "flat")[0], queries, max(KS))
    print(f"{n_images} images × {dim}-D ({'seeded' if real else 'clustered'} model), {n_queries} queries one at a "
          f"time, {faiss.omp_get_max_threads()} faiss threads; recall against flat's top-k")
    print(HEADER)
    rows = []
    for name, spec, nprobes in kinds:
        for row in measure(name, spec, nprobes, db, queries, truth, place, query_place):
            print(row.line(), flush=True)
            rows.append(row)
    netvlad_cost()
    return rows


def _stats(s: dict[str, float]) -> str:
    return (f"cosine of two random images median {s['random_pair_cos_median']:.3f} (p99 {s['random_pair_cos_p99']:.3f}), "
            f"of two images of one place median {s['same_place_cos_median']:.3f}")


def netvlad_cost() -> None:
    """One NetVLAD descriptor from 2000 local descriptors, against LIFT on a 640×480 image."""
    from ..features.lift import Lift
    from ..nets.netvlad import NetVLAD, pad_batch
    from ..synthetic import look_at, render, room

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
    image = render(room(), np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]]),
                   look_at(np.zeros(3), np.array([1.0, 0.1, 2.0])), (480, 640)).astype(np.float32)
    lift = Lift({"max_keypoints": 2000})
    t = time.perf_counter()
    n = len(lift(image))
    lift_s = time.perf_counter() - t
    print(f"NetVLAD descriptor from 2000 local descriptors: {per * 1e3:.1f} ms; LIFT on a 640×480 image "
          f"({n} keypoints) {lift_s:.2f} s in this run: the global descriptor costs {per / lift_s * 100:.2f} % of it")
