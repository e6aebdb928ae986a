"""Collect the evidence for every PnP pose on the mapping halves, never on a query half, to choose
the acceptance tests and to calibrate the covariance (docs/acceptance.md).

For each mapping bag, a map is built from every ``--stride``-th of its images (in stamp order;
2: the even ones) and the others are localized against it: their ground truth is the bag's,
their nearest map image is farther than in the full map, and no map point has seen them.
Negatives: up to ``--negatives`` of those odd images of every other bag are localized against
each half map; every pose they get is false (bags of one scene, named in ``--same-scene``, are
not paired).

Every covisibility cluster's pose is written, not only the first accepted, so that any rule can
be replayed exactly as the localizer applies it: the first cluster that passes wins.

    python tools/acceptance_study.py --bags BAG_DIR... --work DIR --output evidence.csv
    python tools/acceptance_study.py --choose evidence.csv...    # the bounds and the covariance fit

``--choose`` reads the tables and prints: for each test, the loosest bound that refuses none of the
right poses that pass the inlier tests (with a margin: ½ of the lowest coverage, 1.25× the highest
rival ratio), what those bounds refuse among the wrong and the false poses, and how often the
95 % covariance ellipsoid (the model plus the map's floor) holds the right poses, averaged over the
(set, features) pairs; a (scale, decorrelation) on top is proposed only where the best of a grid is
nearer 0.95 by more than 0.05.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lift_localizer.images import to_gray
from lift_localizer.evaluation.metrics import nees
from lift_localizer.geometry.pose import pose_error, pose_error_vector
from lift_localizer.localization.acceptance import PoseEvidence
from lift_localizer.localization.localizer import Localizer
from lift_localizer.localization.map_accuracy import MapAccuracy, map_accuracy
from lift_localizer.bags.reader import read_frames
from lift_localizer.mapping.build import build_map
from lift_localizer.mapping.io import load_map

# Every pose is kept: the tests are replayed from the table.
LOOSE = {"min_inliers": 4, "min_inlier_ratio": 0.0, "min_coverage": None, "max_rival_ratio": None,
         "covariance_scale": 1.0, "covariance_decorrelation": 0.0, "covariance_floor": False}
EVIDENCE = [f.name for f in fields(PoseEvidence)]
FEATURES = ("lift", "sift")


def rows_for(localizer: Localizer, features, camera, gt: np.ndarray | None, accuracy: MapAccuracy) -> list[dict]:
    out = []
    for k, r in enumerate(localizer.cluster_results(features, camera, {})):
        row = {"cluster": k, "matches": r.num_matches}
        if r.evidence is not None:
            row.update({f: getattr(r.evidence, f) for f in EVIDENCE})
            if gt is not None:
                t, rot = pose_error(r.T_map_camera, gt)
                e = pose_error_vector(r.T_map_camera, gt)
                row.update(t_err=t, r_err=rot, nees=nees(r.T_map_camera, r.covariance, gt),
                           error=" ".join(f"{v:.6g}" for v in e),
                           covariance=" ".join(f"{v:.6g}" for v in r.covariance.ravel()),
                           floor=" ".join(f"{v:.6g}" for v in accuracy.at(r.T_map_camera[:3, 3])))
        out.append(row)
    return out


def _num(r: dict, k: str) -> float:
    return float(r[k]) if r.get(k) not in ("", None) else float("nan")


def is_wrong(r: dict) -> bool:
    """A pose of another scene, or one beyond (0.25 m, 5°) or 3 % of the scene's depth (2 cm at 0.65 m)."""
    return r["negative"] == "1" or _num(r, "t_err") > min(0.25, 0.03 * _num(r, "depth")) or _num(r, "r_err") > 5


def replay(rows: list[dict], accepts, name: str) -> dict:
    """Print (and return) what a rule accepts applied as the localizer applies it: per held-out image,
    the first of its cluster poses (in the localizer's order) that ``accepts`` passes, or none."""
    first: dict[tuple, dict | None] = {}
    for r in sorted(rows, key=lambda r: int(r["cluster"])):
        key = (r["table"], r["set"], r["features"], r["query"], r["negative"])
        if first.get(key) is None:
            first[key] = r if accepts(r) else None
    pos = [(k, r) for k, r in first.items() if k[-1] != "1"]
    neg = [(k, r) for k, r in first.items() if k[-1] == "1"]
    took = [r for _, r in pos if r is not None]
    far = [r for r in took if _num(r, "t_err") > 0.25 or _num(r, "r_err") > 5]
    beyond = [f"{r['set']} {r['features']} {100 * _num(r, 't_err'):.1f} cm / {_num(r, 'r_err'):.1f}°" for r in took
              if is_wrong(r) and r not in far]
    false = sum(r is not None for _, r in neg)
    print(f"  replayed, {name} accepts {len(took)} of {len(pos)} held-out images ({len(far)} beyond (0.25 m, 5°); "
          f"beyond 3 % of the depth: {', '.join(beyond) or 'none'}) and {false} of {len(neg)} of other scenes")
    return {"accepted": len(took), "images": len(pos), "far": len(far), "beyond_depth": len(beyond),
            "negatives_accepted": false, "negatives": len(neg)}


def choose(tables: list[str], min_inliers: int = 20, min_ratio: float = 0.03) -> dict:
    from lift_localizer.evaluation.metrics import CHI2_6DOF_95
    from lift_localizer.localization.absolute_pose import calibrate_covariance

    # One held-out image is localized against a different map in each table: the table is part of its key.
    rows = [{**r, "table": t} for t in tables for r in csv.DictReader(open(t)) if r.get("inliers")]
    passing = [r for r in rows if _num(r, "inliers") >= min_inliers and _num(r, "inliers") / _num(r, "matches") >= min_ratio]
    right = [r for r in passing if not is_wrong(r)]
    wrong = [r for r in rows if is_wrong(r)]
    def rival_ratio(r: dict) -> float:
        return _num(r, "rival_inliers") / _num(r, "inliers")

    cov = [_num(r, "coverage") for r in right]
    rival = [rival_ratio(r) for r in right]
    bounds = {"min_coverage": round(0.5 * min(cov), 2), "max_rival_ratio": round(1.25 * max(rival), 2)}
    tests = {"coverage": lambda r: _num(r, "coverage") < bounds["min_coverage"],
             "rival": lambda r: rival_ratio(r) > bounds["max_rival_ratio"]}
    print(f"{len(rows)} poses: {len(right)} right ones pass the inlier tests; {len(wrong)} wrong or false")
    print(f"right poses: coverage ≥ {min(cov):.3f}, rival ratio ≤ {max(rival):.3f} → bounds {bounds}")
    for name, refused in tests.items():
        n = sum(map(refused, wrong))
        print(f"  {name} alone refuses {n} of {len(wrong)} wrong or false poses ({n / len(wrong):.2f})")
    either = [any(t(r) for t in tests.values()) for r in wrong]
    print(f"  together {sum(either)} of {len(wrong)}; the inlier tests refuse "
          f"{sum(r not in passing for r in wrong)}; all three leave "
          f"{sum(r in passing and not e for r, e in zip(wrong, either))}")
    # One coverage per (set, features), averaged: the set with the most held-out images must not decide.
    groups: dict[tuple[str, str], list] = {}
    for r in right:
        if r.get("covariance"):
            groups.setdefault((r["set"], r["features"]), []).append(
                (np.array(r["error"].split(), float), np.array(r["covariance"].split(), float).reshape(6, 6),
                 np.diag(np.array(r["floor"].split(), float)) if r.get("floor") else np.zeros((6, 6))))
    def coverage_of(scale: float, dec: float) -> list[float]:
        return [float(np.mean([e @ np.linalg.pinv(calibrate_covariance(C, scale, dec) + F, hermitian=True) @ e
                               <= CHI2_6DOF_95 for e, C, F in g])) for g in groups.values()]

    best = None
    for scale in np.round(np.arange(0.25, 3.01, 0.25), 2):
        for dec in (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0):
            inside = float(np.mean(coverage_of(scale, dec)))
            if best is None or abs(inside - 0.95) < abs(best[2] - 0.95):
                best = (float(scale), dec, inside)
    inlier_ok = {id(r) for r in passing}
    replay(rows, lambda r: id(r) in inlier_ok, "the inlier tests alone")
    replay(rows, lambda r: id(r) in inlier_ok and not any(t(r) for t in tests.values()), "the full rule")
    plain = coverage_of(1.0, 0.0)
    every = [e @ np.linalg.pinv(C + F, hermitian=True) @ e for g in groups.values() for e, C, F in g]
    print(f"covariance, the model plus the map's floor: the 95 % ellipsoid holds "
          f"{np.mean(np.array(every) <= CHI2_6DOF_95):.3f} of the {len(every)} right poses, median NEES "
          f"{np.median(every):.2f}; averaged over {len(groups)} (set, features) {np.mean(plain):.3f}: " +
          ", ".join(f"{k[0]} {k[1]} {v:.2f}" for k, v in zip(groups, plain)))
    print(f"  best of the grid: scale {best[0]}, decorrelation {best[1]}: {best[2]:.3f}")
    # Two fitted numbers are worth keeping only where they change the calibration by more than noise.
    scale, dec = (best[0], best[1]) if abs(np.mean(plain) - 0.95) - abs(best[2] - 0.95) > 0.05 else (1.0, 0.0)
    print(f"  → scale {scale}, decorrelation {dec}")
    return {**bounds, "covariance_scale": float(scale), "covariance_decorrelation": float(dec)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--choose", nargs="+", metavar="TABLE", help="read tables written before and print the bounds")
    ap.add_argument("--bags", nargs="+", help="dataset folders holding mapping/ (a rosbag2)")
    ap.add_argument("--work", help="folder for the maps of the kept images (reused when present)")
    ap.add_argument("--output", help="CSV, one row per cluster pose")
    ap.add_argument("--stride", type=int, default=2, help="every STRIDE-th image makes the map (default 2)")
    ap.add_argument("--max-queries", type=int, default=None, help="held-out images localized, evenly spread")
    ap.add_argument("--negatives", type=int, default=8, help="held-out images of each other bag (default 8)")
    ap.add_argument("--same-scene", nargs="*", default=[], metavar="A,B",
                    help="dataset names of one scene, never paired as negatives (e.g. dino,dino_sparse)")
    args = ap.parse_args(argv)
    if args.choose:
        choose(args.choose)
        return
    if not (args.bags and args.work and args.output):
        ap.error("--bags, --work and --output are needed to write a table (or --choose TABLE...)")
    same = {frozenset(x.split(",")) for x in args.same_scene}
    held: dict[str, tuple[Path, list]] = {}
    for bag in map(Path, args.bags):
        frames = read_frames(bag / "mapping", pose_topic="/ground_truth/pose")
        half = Path(args.work) / bag.name
        if not (half / "map.json").exists():
            build_map(frames[0::args.stride], half, FEATURES, source=f"{bag}/mapping (every {args.stride})",
                      log=lambda m: None)
        rest = [f for i, f in enumerate(frames) if i % args.stride]
        if args.max_queries and len(rest) > args.max_queries:
            rest = [rest[i] for i in np.linspace(0, len(rest) - 1, args.max_queries).round().astype(int)]
        held[bag.name] = (half, rest)
    rows = []
    for name in FEATURES:
        localizers = {s: Localizer(load_map(half, name), LOOSE) for s, (half, _) in held.items()}
        floors = {s: map_accuracy(loc.map) for s, loc in localizers.items()}
        feats = {}
        for s, (_, frames) in held.items():
            ex = localizers[s].extractor
            feats[s] = [(f, ex(to_gray(f.image()))) for f in tqdm(frames, desc=f"{s} {name}", file=sys.stderr)]
            for f, q in feats[s]:
                for row in rows_for(localizers[s], q, f.camera, f.T_map_camera, floors[s]):
                    rows.append({"set": s, "features": name, "query": f.name, "negative": 0, **row})
        for s, loc in localizers.items():
            for other, items in feats.items():
                if other == s or frozenset((s, other)) in same:
                    continue
                pick = np.linspace(0, len(items) - 1, min(args.negatives, len(items))).round().astype(int)
                for j in dict.fromkeys(pick.tolist()):
                    f, q = items[j]
                    for row in rows_for(loc, q, f.camera, None, floors[s]):
                        rows.append({"set": s, "features": name, "query": f"{other}/{f.name}", "negative": 1, **row})
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.output, "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(rows)
    print(f"{len(rows)} poses written to {args.output}")


if __name__ == "__main__":
    main()
