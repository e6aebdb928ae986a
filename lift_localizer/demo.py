"""The demo: build a map and localize against it, LIFT beside SIFT, and print the errors.

    lift-localizer demo                                   # a room the project renders itself
    lift-localizer demo --bag DATASET      # a real dataset: DATASET/mapping and DATASET/query bags

The synthetic sequence is a box room whose walls, floor and ceiling carry procedurally drawn
textures (no downloaded images), seen by mapping cameras on a circle and query cameras between
them with exact poses. A real dataset folder holds a mapping bag and a query bag.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import time
from pathlib import Path

import cv2

from .evaluation.evaluate import evaluate, print_results
from .geometry.camera import Camera
from .mapping.build import build_map
from .mapping.frames import Frame
from .synthetic import SYNTHETIC_MAX_KEYPOINTS, room_sequence


def synthetic_frames(out: Path, num_mapping: int, num_query: int, image_size: tuple[int, int]):
    K, mapping, query = room_sequence(num_mapping, num_query, image_size=image_size)
    camera = Camera(image_size[1], image_size[0], K)
    (out / "images").mkdir(parents=True, exist_ok=True)

    def frames(kind, views):
        result = []
        for k, (image, T) in enumerate(views):
            name = f"{kind}_{k:02d}.png"
            cv2.imwrite(str(out / "images" / name), image)
            stamp = (1 if kind == "map" else 2) * 10**18 + k * 10**8
            result.append(Frame(name, camera, T, stamp_ns=stamp, loader=lambda im=image: im))
        return result

    return frames("map", mapping), frames("query", query)


def cli_command() -> str:
    """How to run ``lift-localizer`` from the user's shell: the bare name where PATH finds this
    installation's script, else the script's path (relative when under the working directory, as
    ``.venv/bin/lift-localizer`` after ``make``), else ``python -m lift_localizer``."""
    script = Path(sysconfig.get_path("scripts")) / "lift-localizer"
    found = shutil.which("lift-localizer")
    if found and script.exists() and Path(found).resolve() == script.resolve():
        return "lift-localizer"
    if script.exists():
        try:
            return str(script.absolute().relative_to(Path.cwd()))
        except ValueError:
            return str(script.absolute())
    return f"{sys.executable} -m lift_localizer"


def _fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def bag_frames(dataset: Path):
    from .bags.reader import read_frames

    mapping = read_frames(dataset / "mapping", pose_topic="/ground_truth/pose")
    queries = read_frames(dataset / "query")  # what the localizer sees: no ground truth
    truth = read_frames(dataset / "query", pose_topic="/ground_truth/pose")
    return mapping, queries, {f.name: f.T_map_camera for f in truth if f.T_map_camera is not None}


def run(args: argparse.Namespace) -> int:
    out: Path = args.output
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if args.bag:
        if not (args.bag / "mapping").exists() or not (args.bag / "query").exists():
            print(f"error: {args.bag}: expected a dataset folder with mapping/ and query/ bags", file=sys.stderr)
            return 2
        mapping, queries, truths = bag_frames(args.bag)
        what = f"dataset {args.bag}: {len(mapping)} mapping and {len(queries)} query images"
    else:
        size = (args.height, args.width)
        mapping, queries = synthetic_frames(out, args.mapping_views, args.query_views, size)
        truths = {f.name: f.T_map_camera for f in queries}
        # The same sequence as bags, so that build-map / localize / evaluate can be tried on it.
        from .bags.writer import write_bag

        write_bag(_fresh(out / "bags" / "mapping"), mapping)
        write_bag(_fresh(out / "bags" / "query"), queries)
        what = (f"synthetic room rendered by the project: {len(mapping)} mapping and {len(queries)} query "
                f"views at {size[1]}x{size[0]} (images in {out / 'images'}, bags in {out / 'bags'})")
    if args.max_keypoints is None:
        from .localization.options import default_conf

        args.max_keypoints = default_conf["max_keypoints"] if args.bag else SYNTHETIC_MAX_KEYPOINTS
    print(f"demo: {what}; features {' and '.join(args.features)}, up to {args.max_keypoints} keypoints")
    map_dir = out / "map"
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    summary = build_map(mapping, map_dir, tuple(args.features), {"max_keypoints": args.max_keypoints},
                        source=str(args.bag or "synthetic room"), log=log)
    for name, s in summary.items():
        print(f"map [{name}]: {s['images']} images, {s['points']} points, mean track length "
              f"{s['mean_track_length']:.2f}, reprojection error {s['mean_reprojection_error_px']:.2f} px")
    results = evaluate(map_dir, queries, truths, list(args.features), {"max_keypoints": args.max_keypoints},
                       report=out / "report", log=log)
    print("per query: translation error (cm), rotation error (deg), inliers")
    names = [o.frame.name for o in next(iter(results.values()))[1]]
    for k, name in enumerate(names):
        cells = []
        for feat, (s, outcomes) in results.items():
            o = outcomes[k]
            dt, dr = s.errors[k]
            cells.append(f"{feat} " + (f"{dt * 100:7.2f} cm {dr:6.3f} deg {o.result.num_inliers:4d} inl"
                                       if o.reason is None else f"FAILED: {o.reason}"))
            cells[-1] = f"{cells[-1]:<42}"
        print(f"  {name:<22} " + " | ".join(cells))
    print_results(results, log=print)
    print(f"report: open {out / 'report' / 'report.html'} (plots, per-query tables beside it); map in {map_dir}; "
          f"{time.perf_counter() - start:.0f} s in all")
    if not args.bag:
        print(f"the same from the command line: {cli_command()} evaluate --map {map_dir} --bag {out / 'bags' / 'query'}")
    return 0
