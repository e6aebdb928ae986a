"""How much of a localization comparison RANSAC's sampling alone makes.

Each query of a bag is extracted once per map and localized with several RANSAC seeds (the
localizer's ``seed`` option, ``--ransac-seed`` on ``evaluate``). Per map it prints the queries within
each threshold for every seed, their range, and how far apart two seeds of the same map can be;
with two maps, each query's hit rate over the seeds, paired (A − B, in queries, with a bootstrap 95 %
interval over the queries). A difference between two single-seed runs that is no larger than one
map's own spread over seeds is not a difference.

    python tools/ransac_seeds.py --maps shipped=MAP_A fast=MAP_B --bag QUERY_BAG [--seeds 10] [--csv F]
    python tools/ransac_seeds.py --pool F1 F2 ...     # several scenes' --csv, pooled per scene-scaled threshold

``--csv`` writes each query's hit rate under both maps at every threshold; the scene-scaled ones are
labelled by their fraction of the scene depth, so that scenes pool as in tools/pooled_comparison.py.
That depth is the first map's, as ``evaluate`` takes it from its first feature set's map.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lift_localizer.bags.reader import read_frames
from lift_localizer.evaluation.metrics import errors, within
from lift_localizer.evaluation.paired import bootstrap_mean_interval
from lift_localizer.evaluation.thresholds import SCENE_FRACTIONS, default_thresholds, scaled_thresholds, scene_depth
from lift_localizer.localization.localizer import Localizer
from lift_localizer.mapping.io import load_map


def seed_errors(map_dir: Path, frames, gts: list[np.ndarray], seeds: list[int]) -> tuple[np.ndarray, float]:
    """(S, N, 2) errors of N queries under S seeds (inf: not localized), and the map's scene depth."""
    localizer = Localizer(load_map(map_dir), {})
    out = np.full((len(seeds), len(frames), 2), np.inf)
    for i, frame in enumerate(tqdm(frames, desc=str(map_dir), unit="img", file=sys.stderr, disable=None)):
        features = localizer.extract(frame.image(), frame.camera)
        for s, seed in enumerate(seeds):
            localizer.conf["seed"] = seed
            result = localizer.localize_features(features, frame.camera)
            out[s, i] = errors([result.T_map_camera if result.success else None], [gts[i]])[0]
    return out, scene_depth(localizer.map)


def paired_line(label: str, rate_a: np.ndarray, rate_b: np.ndarray) -> str:
    """Hit rates (N,) of the same queries under A and B: their sums and the difference's interval, in queries."""
    diff, n = rate_a - rate_b, len(rate_a)
    low, high = bootstrap_mean_interval(diff)
    return f"  {label}: {rate_a.sum():.1f} vs {rate_b.sum():.1f}, {diff.sum():+.1f} [{low * n:+.1f}, {high * n:+.1f}]"


def pool(files: list[Path]) -> int:
    rows = [r for f in files for r in csv.DictReader(f.open())]
    names = [k[len("rate_"):] for k in rows[0] if k.startswith("rate_")]
    print(f"pooled over {len(files)} scenes, per scene-scaled threshold: {names[0]} vs {names[1]}, "
          "hit rates over the seeds summed (in queries), with the bootstrap 95 % interval of the difference")
    for fraction in SCENE_FRACTIONS:
        label = f"{fraction * 100:g} % of D"
        sel = [r for r in rows if r["threshold"] == label]
        a, b = (np.array([float(r[f"rate_{n}"]) for r in sel]) for n in names)
        print(paired_line(f"{label} ({len(sel)} queries)", a, b))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", nargs="+", metavar="NAME=MAP", help="one or two maps, named")
    p.add_argument("--bag", type=Path, metavar="QUERY_BAG")
    p.add_argument("--seeds", type=int, default=10, help="seeds 0 … N−1 (default 10)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="each query's hit rate per threshold (two maps)")
    p.add_argument("--pool", nargs="+", type=Path, metavar="FILE", help="pool several scenes' --csv files")
    args = p.parse_args(argv)
    if args.pool:
        return pool(args.pool)
    if not args.maps or not args.bag:
        p.error("--maps and --bag (or --pool)")
    maps = dict(m.split("=", 1) for m in args.maps)
    if not 1 <= len(maps) <= 2 or args.seeds < 2:
        p.error("one or two maps, and at least two seeds")
    frames = [f for f in read_frames(args.bag, pose_topic="/ground_truth/pose")
              if f.T_map_camera is not None and f.camera is not None]
    gts = [f.T_map_camera for f in frames]
    seeds = list(range(args.seeds))
    runs, depths = {}, []
    for name, map_dir in maps.items():
        runs[name], d = seed_errors(Path(map_dir), frames, gts, seeds)
        depths.append(d)
    depth = depths[0]   # the first map's, as `evaluate` judges every feature set by its first map's thresholds
    thresholds = default_thresholds(depth)
    print(f"{args.bag}: {len(frames)} queries, RANSAC seeds 0–{args.seeds - 1}")
    hits = {name: np.stack([[within(e, t) for e in err] for t in thresholds]) for name, err in runs.items()}
    for name, h in hits.items():                       # h: (thresholds, seeds, queries)
        print(f"[{name}] queries within each threshold, per seed; range; most queries between two seeds")
        for t, per_seed in zip(thresholds, h):
            counts = per_seed.sum(1)
            print(f"  ({t[0]:g} m, {t[1]:g}°): {' '.join(str(c) for c in counts)}   "
                  f"{counts.min()}–{counts.max()}   {counts.max() - counts.min()}")
    if len(hits) == 2:
        (a, ha), (b, hb) = hits.items()
        print(f"[{a} − {b}] each query's hit rate over the seeds, summed (in queries), "
              "with its bootstrap 95 % interval")
        for t, pa, pb in zip(thresholds, ha, hb):
            print(paired_line(f"({t[0]:g} m, {t[1]:g}°)", pa.mean(0), pb.mean(0)))
        if args.csv:
            scaled = dict(zip(scaled_thresholds(depth), SCENE_FRACTIONS))
            with args.csv.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["query", "threshold", f"rate_{a}", f"rate_{b}"])
                for t, pa, pb in zip(thresholds, ha.mean(1), hb.mean(1)):
                    label = f"{scaled[t] * 100:g} % of D" if t in scaled else f"{t[0]:g} m, {t[1]:g} deg"
                    w.writerows([frame.name, label, ra, rb] for frame, ra, rb in zip(frames, pa, pb))
    return 0


if __name__ == "__main__":
    sys.exit(main())
