"""How localization scales with the map: load time, memory and per-query latency at 1000, 10 000
and 100 000 map images, and whether the real queries are still found among them.

    lift-localizer benchmark-scale --sizes 1000 10000 [--json F] [--map MAP --bag QUERY_BAG]

A real map (by default the demo's synthetic room, built on the fly; or ``--map``) is copied under
rigid transforms up to each size (``scale_map``: real descriptors, perturbed per copy, distinct
poses and points), written with the normal map writer, and measured in a process of its own, so
that sizes do not share memory: the time ``load_map`` and the ``Localizer`` take, the resident
memory after loading and after the queries, the median time of retrieval + matching + PnP per query
(the queries' features are extracted once, beforehand), and the recall at (0.25 m, 2°) of the real
queries against their ground truth. With ``--retrieval-radius M`` each size is measured twice, on the
same map: retrieval from the whole map, then from the map images within M of the previous accepted
pose (``localization.prior``; the copies are the look-alike places far away that it leaves out). The
real queries are localized in turn, over and over: each return from the last to the first is a jump
that a radius covering the motion between frames does not cover, so it costs the failures after
which the prior is dropped (``prior_max_failures``) and a cold start; ``localized`` counts the
accepted poses over all the queries, ``area`` the queries by how retrieval chose its map images.
``--initial-prior`` gives the first query its true position as the prior, as a user's ``initialpose``
would, instead of a cold start. The time per query is given as wall time and as the process's
CPU time (all its threads); ``--threads`` bounds the thread pools of the measured process (torch,
faiss, BLAS), so that the sizes compare without other work on the machine deciding the result. The resident memory includes the extractor's networks, loaded
before the map as a node has them; ``rss_mb_before_load`` is that part.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import h5py
import numpy as np

from ..features.io import read_features, write_features
from ..geometry.camera import Camera
from ..geometry.pose import pose_error
from ..localization.prior import PosePrior
from .scale_map import ReplicatedMap, read_base

# Recall threshold of the table (the long-term visual localization benchmark's finest).
RECALL_M, RECALL_DEG = 0.25, 2.0
QUERIES_FILE = "queries.h5"
CHILD_TIMEOUT_S = 3600
# The synthetic room's keypoint budget, the demo's (its views are small).
ROOM_MAX_KEYPOINTS = 1000


def resident_mb() -> float:
    """This process's resident memory now, in MB (psutil where installed, else /proc)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 1e6
    except ImportError:
        pass
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    return float("nan")


# ---------------------------------------------------------------- the real map and its queries


def _demo_scene(work: Path, args: argparse.Namespace, log) -> tuple[Path, list, dict]:
    """The demo's synthetic room: a map of its mapping views and its query views with their poses."""
    from ..mapping.build import build_map
    from ..mapping.frames import posed_frames
    from ..synthetic import room_sequence

    size = (args.height, args.width)
    K, mapping, query = room_sequence(args.mapping_views, args.query_views, image_size=size)
    camera = Camera(size[1], size[0], K)
    build_map(posed_frames(mapping, camera, 10**18), work / "base", (args.features,),
              {"max_keypoints": args.max_keypoints}, source="synthetic room", log=log)
    queries = posed_frames(query, camera, 2 * 10**18)
    return work / "base", queries, {f.name: f.T_map_camera for f in queries}


def _bag_queries(args: argparse.Namespace) -> tuple[list, dict]:
    from ..bags.reader import read_frames

    topics = {"image_topic": args.image_topic, "camera_info_topic": args.camera_info_topic}
    queries = read_frames(args.bag, **topics)   # what the localizer sees: no ground truth
    truth = read_frames(args.bag, pose_topic=args.pose_topic, **topics)
    return queries, {f.name: f.T_map_camera for f in truth if f.T_map_camera is not None}


def extract_queries(map_dir: Path, frames: list, truths: dict, conf: dict, out: Path) -> int:
    """The queries' features, extracted once with the map's extractor, with camera and true pose
    (as attributes) in ``out``; returns how many have a ground truth."""
    from ..localization.localizer import Localizer
    from ..mapping.io import load_map

    with load_map(map_dir) as m:
        localizer = Localizer(m, {**conf, "covariance_floor": False})
        count = 0
        with h5py.File(out, "w") as f:
            for frame in frames:
                if frame.name not in truths or frame.error:
                    continue
                q = localizer.extract(frame.image(), frame.camera)
                write_features(f, f"q{count}", q, {"camera": json.dumps(frame.camera.to_dict()),
                                                    "T_map_camera": np.asarray(truths[frame.name], np.float64)})
                count += 1
    return count


# ---------------------------------------------------------------- one size, in a process of its own


def measure(map_dir: Path, queries: Path, conf: dict, num_queries: int, initial_prior: bool = False) -> dict:
    """Load ``map_dir`` and localize ``num_queries`` queries (the file's, in turn); the numbers of the table.
    ``initial_prior``: the first query's prior is its true position, as a user's initialpose gives it."""
    from ..features.extractors import make_extractor
    from ..localization.localizer import Localizer, default_conf, query_extractor_conf
    from ..mapping.io import load_map, read_meta

    # The extractor first, as a node has it before its map: its memory is not the map's.
    features = read_meta(map_dir)["features"]
    full = {**default_conf, **conf}
    extractor = make_extractor(features["name"], query_extractor_conf(features, full))
    rss_before = resident_mb()
    t = time.perf_counter()
    m = load_map(map_dir, cache_images=full["map_cache_images"])
    localizer = Localizer(m, conf, extractor)
    load_s = time.perf_counter() - t
    rss_loaded = resident_mb()
    with h5py.File(queries, "r") as f:
        names = sorted(f, key=lambda n: int(n[1:]))
        cams = [Camera.from_dict(json.loads(f[n].attrs["camera"])) for n in names]
        truths = [np.asarray(f[n].attrs["T_map_camera"]) for n in names]
    feats = [read_features(queries, n) for n in names]
    latencies, cpu, retrieve, correct = [], [], [], []
    prior, areas, localized = PosePrior(timeout_s=0.0), Counter(), 0   # the stored queries have no stamps
    if initial_prior:
        prior.set(truths[0], None, "the first query's true position")
    for k in range(num_queries):
        j = k % len(names)
        t, c = time.perf_counter(), time.process_time()
        result = localizer.localize_features(feats[j], cams[j], prior.take(None)[0])
        latencies.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        prior.update(result, None)
        localized += result.success
        retrieve.append(result.timings.get("retrieve", np.nan))
        areas[result.area.mode if result.area else "none"] += 1
        if k < len(names):
            dt, dr = pose_error(result.T_map_camera, truths[j]) if result.success else (np.inf, np.inf)
            correct.append(dt <= RECALL_M and dr <= RECALL_DEG)
    return {"images": len(m.images), "points": len(m.point_ids), "load_s": load_s,
            "rss_mb_before_load": rss_before, "rss_mb_loaded": rss_loaded, "rss_mb_after_queries": resident_mb(),
            "cache_images": len(m.cache), "cache_mb": m.cache.nbytes / 1e6,
            "latency_ms_median": 1000 * float(np.median(latencies)), "cpu_ms_median": 1000 * float(np.median(cpu)),
            "retrieve_ms_median": 1000 * float(np.nanmedian(retrieve)), "queries": num_queries,
            "retrieval_radius_m": float(localizer.conf["retrieval_radius_m"]), "area": dict(areas),
            "localized": localized,
            "recall_0.25m_2deg": float(np.mean(correct)) if correct else float("nan"),
            "retrieval": localizer.retrieval.name}


def _child(spec: dict) -> dict:
    """``measure`` in a fresh interpreter; its result is the last line of its output."""
    code = ("import json, sys\nfrom lift_localizer.evaluation.benchmark_scale import measure\nfrom pathlib import Path\n"
            "s = json.loads(sys.argv[1])\n"
            "print(json.dumps(measure(Path(s['map']), Path(s['queries']), s['conf'], s['num_queries'], "
            "s['initial_prior'])))")
    env = dict(os.environ)
    if spec.get("threads"):   # torch's, faiss's and BLAS's thread pools
        env.update(OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]))
    p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                       timeout=CHILD_TIMEOUT_S, env=env)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"the measurement of {spec['map']} failed (exit {p.returncode}):\n{p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _defaults() -> dict:
    from ..localization.localizer import default_conf

    return default_conf


def _disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


# ---------------------------------------------------------------- the command


def run(args: argparse.Namespace) -> int:
    if (args.map is None) != (args.bag is None):
        print("error: --map and --bag go together (a real map and its query bag)", file=sys.stderr)
        return 2
    if args.max_keypoints is None:
        args.max_keypoints = ROOM_MAX_KEYPOINTS if args.map is None else _defaults()["max_keypoints"]
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    conf = {**args.localizer_conf, "max_keypoints": args.max_keypoints}
    work = Path(tempfile.mkdtemp(prefix="lift-scale-", dir=args.work))
    try:
        if args.map:
            base_dir = args.map
            frames, truths = _bag_queries(args)
        else:
            base_dir, frames, truths = _demo_scene(work, args, log)
        count = extract_queries(base_dir, frames, truths, conf, work / QUERIES_FILE)
        if count == 0:
            print("error: no query image with a ground-truth pose", file=sys.stderr)
            return 2
        base = read_base(base_dir)
        log(f"real map {base_dir}: {len(base.images)} images, {len(base.ids)} points; {count} real queries")
        rows = []
        for size in args.sizes:
            directory = work / f"map-{size}"
            t = time.perf_counter()
            ReplicatedMap(base, size, args.descriptor_noise, args.seed).write(directory, log)
            written_s, disk = time.perf_counter() - t, _disk_mb(directory)
            # With a radius, the whole map first: the pair compares on one map.
            radii = [0.0, conf["retrieval_radius_m"]] if conf.get("retrieval_radius_m") else [0.0]
            for radius in radii:
                row = _child({"map": str(directory), "queries": str(work / QUERIES_FILE),
                              "conf": {**conf, "retrieval_radius_m": radius},
                              "num_queries": args.queries, "threads": args.threads,
                              "initial_prior": args.initial_prior})
                row.update(write_s=written_s, disk_mb=disk)
                rows.append(row)
                log(_line(row, rows[0]))
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'images':>8} {'points':>10} {'load s':>7} {'RSS MB loaded':>14} {'after queries':>14} "
          f"{'cache MB':>9} {'latency ms':>11} {'× first':>8} {'CPU ms':>7} {'× first':>8} {'recall':>7} "
          f"{'radius':>7} {'retrieve ms':>12}")
    for row in rows:
        print(_line(row, rows[0]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def _line(row: dict, first: dict) -> str:
    return (f"{row['images']:>8} {row['points']:>10} {row['load_s']:>7.2f} {row['rss_mb_loaded']:>14.0f} "
            f"{row['rss_mb_after_queries']:>14.0f} {row['cache_mb']:>9.0f} {row['latency_ms_median']:>11.1f} "
            f"{row['latency_ms_median'] / first['latency_ms_median']:>8.2f} {row['cpu_ms_median']:>7.1f} "
            f"{row['cpu_ms_median'] / first['cpu_ms_median']:>8.2f} {row['recall_0.25m_2deg']:>7.2f} "
            f"{row['retrieval_radius_m']:>7g} {row['retrieve_ms_median']:>12.2f}")
