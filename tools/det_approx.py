"""Time and accuracy of the cheaper DET convolutions against the dense one
(lift_localizer/evaluation/det_approx.py says what is measured; nets/det_separable.py has them).

    python tools/det_approx.py [--image PATH] [--repeat 3] [--weights STEM ...] [--threads 1] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import torch

from lift_localizer.evaluation import det_approx as da
from lift_localizer.features.lift import load_networks
from lift_localizer.nets.det_separable import default_probes
from lift_localizer.nets.presets import PRESETS
from lift_localizer.weights import load_network


def print_timing(title: str, rows: list[dict], width: int) -> None:
    """A timing table: variant, ms, ratio to the dense DET, and what runs where rows say."""
    notes = any("note" in r for r in rows)
    print(f"\nTime of DET over all levels {title}")
    print(f"  {'variant':{width}s} {'ms':>8s} {'× dense':>8s}" + ("  what runs" if notes else ""))
    for r in rows:
        print(f"  {r['variant']:{width}s} {r['ms']:8.1f} {r['ratio_to_dense']:8.3f}" + (f"  {r['note']}" if notes else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/det_approx.py", description=da.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image", default=None, help="grey image (resized to 640×480); default: a synthetic view")
    p.add_argument("--weights", nargs="*", default=[], help="extra DET weights (path stems with a JSON card)")
    p.add_argument("--ranks", default="1,2,3,4,5,6,8")
    p.add_argument("--distinct", default="16,3", help="distinct-filter counts to time")
    p.add_argument("--tolerances", default="0.003,0.01,0.03", help="for the accuracy table's rank choices")
    p.add_argument("--tolerance", type=float, default=0.003, help="for the per-set timing")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--max-keypoints", type=int, default=1000)
    p.add_argument("--preset", choices=tuple(PRESETS), default="paper", help="scale-space levels (default: the paper's 21)")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--threads", type=int, default=None,
                   help="PyTorch and OpenCV threads (default: as they are). On a machine that other jobs keep "
                        "busy, use 1: every multi-threaded op then waits for a time slice (~8 ms here)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    networks = load_networks()
    probes = default_probes(networks["det"].mean, networks["det"].std)
    gray = da.load_gray(args.image)
    levels_conf = {k: v for k, v in PRESETS[args.preset].items() if k != "max_keypoints"}
    levels, inputs = da.level_inputs(gray, networks, levels_conf)
    ranks = [int(r) for r in args.ranks.split(",")]
    print(f"DET at {gray.shape[1]}×{gray.shape[0]}, {len(levels)} levels ({args.preset}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OpenCV {cv2.__version__}")
    out: dict = {"levels": len(levels), "image": args.image}
    extra = {Path(s).name: load_network("det", s).module.eval() for s in args.weights}
    sets = da.filter_sets(networks["det"].module.eval(), extra)
    tolerances = [float(t) for t in args.tolerances.split(",")]
    if not args.skip_timing:
        rows = da.timing_table(inputs, [int(u) for u in args.distinct.split(",")], ranks, args.repeat)
        out["timing"] = rows
        print_timing(f"by route (16 filters holding U distinct ones), median of {args.repeat} interleaved runs",
                      rows, 44)
        rows = da.set_timing(inputs, sets, args.tolerance, args.repeat, probes)
        out["set_timing"] = rows
        print_timing(f"per filter set (det_tolerance {args.tolerance:g}), median of {args.repeat} interleaved runs",
                      rows, 62)
    if not args.skip_accuracy:
        rows = da.accuracy_table(gray, sets, ranks, inputs, args.max_keypoints, tolerances, networks, probes,
                              levels_conf)
        out["accuracy"] = rows
        print("\nAccuracy: score-map error (max |Δ| ÷ range, worst level; probe = the rank picker's synthetic probes),"
              f"\nshare of the exact top-{args.max_keypoints} keypoints found within 0.5 px (and at the same scale)")
        for name in sets:
            sub = [r for r in rows if r["set"] == name]
            print(f"\n  [{name}] {sub[0]['distinct']} distinct filters, {sub[0]['keypoints']} keypoints")
            print(f"  {'rank':>5s} {'terms':>6s} {'score err':>10s} {'probe err':>10s} {'kp 0.5px':>9s} {'+scale':>7s}")
            for r in sub:
                fmt = lambda v, f: "-" if v is None else format(v, f)
                print(f"  {r['rank']!s:>5s} {fmt(r['terms'], 'd'):>6s} {r['score_error']:10.2e} "
                      f"{fmt(r['probe_error'], '.2e'):>10s} {r['kp_within_0.5px']:9.3f} "
                      f"{fmt(r['kp_within_0.5px_same_scale'], '.3f'):>7s}")
            for t, why in sub[-1]["chosen"].items():
                print(f"  det_tolerance {t:g}: {why}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
