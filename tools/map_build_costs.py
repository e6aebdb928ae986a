"""A map build's costs per unit of work, as one Ray CPU of ``build-map --ray`` runs them (one torch
thread), and what they come to for a larger map on a cluster.

    python tools/map_build_costs.py --bag ../shared/data/bags/kitti_seq1/mapping [--images 100000] [--cpus 64 512]

Measured here, per stage, as CPU time of this process (the figure that does not depend on what else
runs on the machine) and as wall time: reading an image in the driver, one image's extraction, one
pair's matching, the triangulation of the whole bag, pair selection for ``--images`` synthetic poses
along a path; and the features' size in memory. Multiplied: extraction × images and matching × pairs
(pairs per image as measured), divided by the CPUs; the driver's reading and pair selection are not
divided; the triangulation is scaled linearly with the images, which is an assumption (pycolmap's
triangulator with fixed poses works track by track; its bundle adjustment of the points is not linear).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def timed(fn, *args):
    """(result, CPU seconds, wall seconds) of fn(*args)."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn(*args)
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/map_build_costs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--bag", type=Path, required=True, help="a mapping bag (images, camera_info, poses)")
    p.add_argument("--features", default="lift")
    p.add_argument("--max-keypoints", type=int, default=2000)
    p.add_argument("--images", type=int, default=100_000, help="the map size to cost (default %(default)s)")
    p.add_argument("--cpus", type=int, nargs="+", default=[64, 512], help="cluster sizes to cost")
    p.add_argument("--pair-images", type=int, default=10_000,
                   help="synthetic poses to time pair selection on (O(N²): scaled to --images)")
    args = p.parse_args(argv)

    import torch

    from lift_localizer.bags.reader import read_frames
    from lift_localizer.features.extractors import conf_for
    from lift_localizer.geometry.triangulate import triangulate
    from lift_localizer.images import to_gray
    from lift_localizer.mapping.build import usable_frames
    from lift_localizer.mapping.options import default_conf
    from lift_localizer.mapping.pairs import (ExtractorSet, View, collect_matches, extract_image, match_group,
                                              pair_groups, select_pairs)

    torch.set_num_threads(1)   # one Ray CPU's share
    conf = {**default_conf, "max_keypoints": args.max_keypoints}
    frames = usable_frames(read_frames(args.bag, pose_topic="/ground_truth/pose"), log=lambda message: None)
    extractors = ExtractorSet({args.features: conf_for(args.features, {k: conf[k] for k in
                                                                       ("max_keypoints", "upright", "precision")})})
    extractors.built()
    grays, read = zip(*[timed(lambda f=f: to_gray(f.image()))[::2] for f in frames])
    extract_image(extractors, grays[0])   # the first call tunes DET's route for this size: once per worker
    runs = [timed(extract_image, extractors, g) for g in grays]
    features = [r[0][0] for r in runs]
    pairs = select_pairs([f.T_map_camera for f in frames], conf["num_neighbours"], conf["max_view_angle_deg"])
    groups = pair_groups(pairs)
    views = [View(f.camera, f.T_map_camera) for f in frames]
    matched = [timed(match_group, conf, views[i], features[i], [views[j] for j in js], *(features[j] for j in js))
               for i, js in groups]
    pm = collect_matches(groups, [m[0] for m in matched])
    _, tri_cpu, tri_wall = timed(triangulate, [f.name for f in frames], [f.camera for f in frames],
                                 [f.T_map_camera for f in frames], [f.keypoints for f in features], pm.matches,
                                 {"ignore_two_view_tracks": not conf["keep_two_view_tracks"]})
    rng = np.random.default_rng(0)
    path = []
    for k in range(args.pair_images):
        T = np.eye(4)
        T[:3, 3] = [0.5 * k, rng.normal(), 0.0]
        path.append(T)
    _, sel_cpu, sel_wall = timed(select_pairs, path, conf["num_neighbours"], conf["max_view_angle_deg"])

    n, n_pairs = len(frames), len(pairs)
    ext_cpu = float(np.mean([r[1] for r in runs]))
    ext_wall = float(np.mean([r[2] for r in runs]))
    match_cpu = sum(m[1] for m in matched) / n_pairs
    match_wall = sum(m[2] for m in matched) / n_pairs
    feature_mb = float(np.mean([sum(a.nbytes for a in (f.keypoints, f.scales, f.orientations, f.scores,
                                                       f.descriptors)) for f in features])) / 1e6
    # What the driver holds per image while building: the keypoints (the triangulation reads them all)
    # and the verified matches of its pairs; the rest of the features waits on disk (mapping/spool.py).
    keypoints_kb = float(np.mean([f.keypoints.astype(np.float32).nbytes for f in features])) / 1e3
    matches_kb = sum(m.nbytes for m in pm.matches.values()) / n_pairs / 1e3
    h, w = grays[0].shape
    print(f"{args.bag}: {n} images {w}×{h}, {args.features} {args.max_keypoints} keypoints, {n_pairs} pairs "
          f"({n_pairs / n:.2f} per image), torch on 1 thread")
    print(f"  read + decode (driver)  {np.mean(read) * 1e3:8.1f} ms/image")
    print(f"  extraction              {ext_cpu:8.3f} CPU s/image   ({ext_wall:.3f} s wall)")
    print(f"  matching                {match_cpu * 1e3:8.1f} CPU ms/pair   ({match_wall * 1e3:.1f} ms wall)")
    print(f"  triangulation           {tri_cpu:8.3f} CPU s for {n} images ({tri_wall:.3f} s wall)")
    print(f"  pair selection          {sel_cpu:8.2f} CPU s for {args.pair_images} images ({sel_wall:.2f} s wall)")
    print(f"  features (scratch file) {feature_mb:8.2f} MB/image")
    print(f"  held by the driver      {keypoints_kb:8.1f} KB/image of keypoints + {matches_kb:.1f} KB/pair of matches")
    N = args.images
    scale = (N / args.pair_images) ** 2
    print(f"\n{N} images, {N * n_pairs / n:.0f} pairs:")
    print(f"  extraction     {N * ext_cpu / 3600:9.1f} CPU h   matching {N * n_pairs / n * match_cpu / 3600:7.2f} CPU h")
    print(f"  driver: reading {N * np.mean(read) / 60:.1f} min, pair selection {sel_cpu * scale / 60:.1f} min, "
          f"triangulation {tri_cpu * N / n / 60:.1f} min (linear)")
    print(f"  driver memory: keypoints {N * keypoints_kb / 1e6:.1f} GB + matches {N * n_pairs / n * matches_kb / 1e6:.1f} GB; "
          f"scratch file {N * feature_mb / 1e3:.0f} GB on the disk beside the map")
    for cpus in args.cpus:
        tasks_h = (N * ext_cpu + N * n_pairs / n * match_cpu) / cpus / 3600
        driver_h = (N * np.mean(read) + sel_cpu * scale + tri_cpu * N / n) / 3600
        print(f"  {cpus:4d} CPUs: tasks {tasks_h:6.2f} h + driver {driver_h:5.2f} h = {tasks_h + driver_h:6.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
