"""``lift-localizer build-map``: a map directory from a mapping bag or a posed image folder."""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from pathlib import Path

from . import (add_bag_topics, add_network_options, add_precision_option, fail, log, network_problem,
               network_weights, positive_int, ratio_value)


def add(sub) -> None:
    from ..features.extractors import EXTRACTORS
    from ..mapping.options import default_conf
    from ..nets.presets import PRESETS

    p = sub.add_parser(
        "build-map", help="build a map from posed images (rosbag2, COLMAP, TUM, KITTI, NeRF)",
        description="Extract features from every posed image, match neighbouring images, keep the matches "
                    "the known poses agree with, triangulate the points with pycolmap (poses fixed) and "
                    "write the map directory (COLMAP model, features.h5, points.h5, map.json). The map is "
                    "written to a temporary folder and moved into place only when complete.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, metavar="MAPPING_BAG",
                     help="rosbag2 folder with images, camera_info and poses")
    src.add_argument("--folder", type=Path, metavar="DIR",
                     help="posed image folder: transforms.json (NeRF), a COLMAP model, KITTI poses.txt + "
                          "calib.txt, or TUM groundtruth.txt + rgb/")
    p.add_argument("--format", choices=("auto", "colmap", "tum", "kitti", "nerf"), default="auto",
                   help="format of --folder (default: detected)")
    p.add_argument("--intrinsics", default=None, metavar="FX,FY,CX,CY",
                   help="pinhole intrinsics for formats that have none (TUM)")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="MAP_DIR",
                   help="map directory to write (replaced, once the new map is complete, if it exists)")
    add_bag_topics(p, with_pose=True)
    p.add_argument("--features", nargs="+", choices=EXTRACTORS, default=["lift"],
                   help="feature sets; the first is the map's own, the others are stored beside it "
                        "(MAP_DIR/alt/NAME) for side-by-side evaluation (default: lift)")
    p.add_argument("--max-keypoints", type=positive_int, default=default_conf["max_keypoints"], metavar="N",
                   help="keypoint budget per map image")
    p.add_argument("--upright", action="store_true",
                   help="LIFT without ORI (every keypoint upright): better for cameras that do not roll; "
                        "localization against the map follows it")
    add_precision_option(p)
    p.add_argument("--preset", choices=tuple(PRESETS), default=default_conf["preset"],
                   help="LIFT's scale space of the map's images (its levels; the keypoint budget is --max-keypoints): "
                        "default (13 levels), fast (9) or paper (the paper's 21 at 640×480); localize the map with the "
                        "same --preset")
    # Localization against the map loads the same shipped weights (the map records their hashes); other
    # weights are given to evaluate and localize by the same options.
    add_network_options(p)
    p.add_argument("--neighbours", type=positive_int, default=default_conf["num_neighbours"], metavar="N",
                   help="images each image is matched with, nearest by pose (default %(default)s)")
    p.add_argument("--ratio", type=ratio_value, default=default_conf["ratio"], metavar="R",
                   help="ratio test of the image-pair matching: a keypoint's nearest descriptor in the other image "
                        "closer than R × its second nearest (1: off)")
    p.add_argument("--guided-matching", action="store_true",
                   help="match each image pair under its known poses: a keypoint's nearest descriptor (and the ratio "
                        "test) sought only among the partner's keypoints near its epipolar line, instead of matching "
                        "first and dropping what the poses reject")
    p.add_argument("--refine-keypoints", action="store_true",
                   help="align each track's keypoints photometrically (on the original pixels) before "
                        "triangulating: the map's reprojection error falls, localization does not improve "
                        "(docs/evaluation.md, keypoint refinement along tracks)")
    p.add_argument("--sfm", action="store_true",
                   help="ignore/lack poses: reconstruct them with pycolmap's incremental mapper from our "
                        "features first (the map's scale is then arbitrary)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run feature extraction and matching as Ray tasks: on the cluster at ADDRESS (auto, "
                        "ray://HOST:10001, HOST:6379) or, without one, on a Ray started here; the images are read "
                        "and the points triangulated here (needs `pip install ray`; docs/mapping-at-scale.md)")
    p.add_argument("--ray-cpus", type=positive_int, default=None, metavar="N",
                   help="CPUs of the Ray that --ray without ADDRESS starts (default: the CPUs this process may use)")
    p.set_defaults(func=run_build_map)


def load_frames(args: argparse.Namespace, with_poses: bool):
    """Frames from --bag or --folder; errors come back as (None, message)."""
    from ..geometry.camera import CameraError
    from ..bags.reader import BagError, read_frames
    from ..mapping.importers import ImportFormatError, load_posed_folder

    try:
        if args.bag is not None:
            return read_frames(args.bag, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                               pose_topic=args.pose_topic if with_poses else None), None
        intrinsics = None
        if args.intrinsics:
            try:
                fx, fy, cx, cy = (float(v) for v in args.intrinsics.split(","))
            except ValueError:
                return None, f"--intrinsics {args.intrinsics!r}: expected four numbers FX,FY,CX,CY"
            intrinsics = (fx, fy, cx, cy)
        return load_posed_folder(args.folder, args.format, intrinsics), None
    except (BagError, ImportFormatError, CameraError, OSError) as e:
        return None, str(e)
    except ValueError as e:
        return None, f"{args.bag or args.folder}: {e}"


def output_problem(output: Path, source: Path | None = None) -> str | None:
    """Why a map cannot be written to ``output`` (None: it can), found before hours of building:
    a file or a folder that is not a map in the way, the source itself, or a parent folder that
    cannot be written."""
    if output.is_symlink():
        return f"--output {output}: a symbolic link; name the folder itself"
    if output.exists() and not output.is_dir():
        return f"--output {output}: exists and is not a folder"
    if output.is_dir() and any(output.iterdir()) and not (output / "map.json").is_file():
        return f"--output {output}: a folder that is not a map; refusing to replace it (choose a new or empty folder)"
    if source is not None and _within(source, output):
        return f"--output {output}: would replace the source {source}"
    parent = output.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--output {output}: {parent} is not a folder"
    return _unwritable(parent, output)


def _within(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def _unwritable(parent: Path, output: Path) -> str | None:
    """The reason a folder cannot be created in ``parent``, found by creating (and removing) one."""
    try:
        probe = tempfile.mkdtemp(prefix=f".{output.name}.probe-", dir=parent)
    except OSError as e:
        return f"--output {output}: cannot write in {parent} ({e.strerror or e})"
    os.rmdir(probe)
    return None


def ray_problem(args: argparse.Namespace) -> str | None:
    """Why --ray / --ray-cpus cannot be honoured (None: they can, or are not asked for)."""
    if args.ray_cpus is not None and args.ray != "":
        return "--ray-cpus sets the CPUs of the Ray that --ray (without ADDRESS) starts here"
    if args.ray is None:
        return None
    try:
        import ray  # noqa: F401
    except ImportError:
        return "--ray needs Ray, which is not installed here: pip install 'ray>=2.60'"
    from ..mapping.ray_build import RayUnavailable, check_reachable

    try:
        if args.ray:
            check_reachable(args.ray)   # before the bag is read, and in seconds rather than Ray's minutes
    except RayUnavailable as e:
        return str(e)
    return None


def map_conf(args: argparse.Namespace) -> dict:
    """``build.build_map``'s options the command line gives (named as in mapping/options.py)."""
    return {"max_keypoints": args.max_keypoints, "num_neighbours": args.neighbours, "upright": args.upright,
            "preset": args.preset, "precision": args.precision, **network_weights(args), "ratio": args.ratio,
            "refine_keypoints": args.refine_keypoints, "guided_matching": args.guided_matching}


def run_build_map(args: argparse.Namespace) -> int:
    from ..mapping.build import MapBuildError, build_map, extractor_conf
    from ..mapping.executors import ExecutorError

    problem = ray_problem(args) or output_problem(args.output, args.bag or args.folder) or network_problem(args)
    if problem:
        return fail(problem)
    frames, error = load_frames(args, with_poses=not args.sfm)
    if error:
        return fail(error)
    conf = map_conf(args)
    if args.sfm:
        from ..mapping.sfm import SfmError, poses_from_sfm

        try:
            frames = poses_from_sfm(frames, args.features[0], extractor_conf(args.features[0], conf), log=log)
        except SfmError as e:
            return fail(str(e))
    try:
        with _executor(args) as executor:
            summary = build_map(frames, args.output, tuple(dict.fromkeys(args.features)), conf,
                                source=str(args.bag or args.folder), log=log, executor=executor)
    except (MapBuildError, ExecutorError, ValueError) as e:   # ExecutorError: a task failed, Ray unreachable
        return fail(f"no map written: {e}")
    for name, s in summary.items():
        print(f"[{name}] {s['images']} images, {s['points']} points, mean track length "
              f"{s['mean_track_length']:.2f}, mean reprojection error {s['mean_reprojection_error_px']:.2f} px, "
              f"{s['verified_matches']}/{s['raw_matches']} matches kept over {s['matched_pairs']}/{s['pairs']} pairs; "
              f"{s['seconds']['features']:.1f} s features, {s['seconds']['matching']:.1f} s matching, "
              f"{s['seconds']['triangulation']:.1f} s triangulation" + _refinement_line(s))
    print(f"map written to {args.output}" + (" (scale arbitrary: poses from SfM)" if args.sfm else ""))
    return 0


def _refinement_line(s: dict) -> str:
    r = s.get("refinement")
    if r is None:
        return ""
    return (f"; {r['refined']} of {r['observations']} track keypoints refined (median shift {r['median_shift_px']:.2f} px, "
            f"{r['rejected']} left unaligned), {s['seconds']['refinement']:.1f} s")


@contextlib.contextmanager
def _executor(args: argparse.Namespace):
    """None (build_map's own, in this process) or, with --ray, a Ray executor shut down afterwards."""
    if args.ray is None:
        yield None
        return
    from ..mapping.ray_build import ray_executor

    with ray_executor(args.ray or None, args.ray_cpus) as executor:
        yield executor
