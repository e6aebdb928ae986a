"""Sub-commands of ``lift-localizer``: each module adds its parsers and runs them."""
from __future__ import annotations

import argparse
import sys


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def log(message: str) -> None:
    print(message, file=sys.stderr)


def add_bag_topics(p: argparse.ArgumentParser, with_pose: bool) -> None:
    p.add_argument("--image-topic", default=None,
                   help="sensor_msgs/Image or CompressedImage topic (default: /camera/image_raw or "
                        "/camera/image_raw/compressed, or the bag's only image topic)")
    p.add_argument("--camera-info-topic", default="/camera/camera_info", help="(default %(default)s)")
    if with_pose:
        p.add_argument("--pose-topic", default="/ground_truth/pose",
                       help="PoseStamped of T_map_camera per image (default %(default)s)")


def localizer_options(p: argparse.ArgumentParser) -> None:
    from ..localization.absolute_pose import SOLVERS
    from ..localization.localizer import default_conf

    g = p.add_argument_group("localization")
    g.add_argument("--max-keypoints", type=positive_int, default=default_conf["max_keypoints"],
                   help="query keypoint budget (default %(default)s)")
    g.add_argument("--top-k", type=positive_int, default=default_conf["top_k"], help="map images retrieved (default %(default)s)")
    g.add_argument("--solver", choices=SOLVERS, default=None,
                   help="PnP solver (default: pycolmap, else poselib, else opencv — the first installed)")
    g.add_argument("--ransac-threshold", type=positive_float, default=default_conf["ransac_threshold_px"],
                   metavar="PX", help="RANSAC inlier threshold in pixels (default %(default)s)")
    g.add_argument("--min-inliers", type=positive_int, default=default_conf["min_inliers"],
                   help="acceptance: fewest PnP inliers (default %(default)s)")
    g.add_argument("--min-inlier-ratio", type=float, default=default_conf["min_inlier_ratio"],
                   help="acceptance: fewest inliers per 2D-3D match (default %(default)s)")
    from ..backends import BACKENDS
    from ..features.lift import PRESETS

    g.add_argument("--preset", choices=tuple(PRESETS), default=default_conf["preset"],
                   help="LIFT scale space of the queries: default (13 levels), fast (9 levels, ≤ 600 keypoints) "
                        "or paper (the paper's 21 levels at 640×480)")

    g.add_argument("--backend", choices=BACKENDS, default=default_conf["backend"],
                   help="where LIFT's networks run (default %(default)s)")


def localizer_conf(args: argparse.Namespace) -> dict:
    return {"max_keypoints": args.max_keypoints, "top_k": args.top_k, "solver": args.solver, "ransac_threshold_px": args.ransac_threshold,
            "min_inliers": args.min_inliers, "min_inlier_ratio": args.min_inlier_ratio, "preset": args.preset,
            "backend": args.backend}
