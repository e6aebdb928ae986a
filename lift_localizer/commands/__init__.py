"""Sub-commands of ``lift-localizer``: each module adds its parsers and runs them."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

from ..backends.names import BACKEND_NAMES, PRECISIONS

# Descriptions often are module docstrings, written for Sphinx: help shows their code as `x`.
_REST = re.compile(r"``(.+?)``|:[a-z]+(?::[a-z]+)?:`~?(.+?)`", re.S)
_BULLET = re.compile(r"^\s*[-*] ")


def plain(text: str) -> str:
    """``x`` and :role:`x` (reST) as `x`."""
    return _REST.sub(lambda m: f"`{m.group(1) or m.group(2)}`", text)


def module_doc(module: str) -> str | None:
    """The docstring of ``module`` (a command's description), read from its source without running it:
    the modules that measure and train import torch, which a command's --help must not."""
    spec = importlib.util.find_spec(module)
    return ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8")), clean=False)


def _shown(default: object) -> str:
    if isinstance(default, (list, tuple)):
        return " ".join(str(v) for v in default)
    return str(default)


class HelpFormatter(argparse.HelpFormatter):
    """Every command's help: reST markup (``x``, :func:`x`) as `x`; descriptions wrapped paragraph by paragraph,
    keeping bullet lists and indented examples as written; every option's default shown, unless its
    help already says what the default is, or there is none (None, False, empty)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for block in re.split(r"\n[ \t]*\n", textwrap.dedent(plain(text)).strip("\n")):
            lines = block.splitlines()
            if all(line[:1] in (" ", "\t") for line in lines):  # an example: as written
                paragraphs.append("\n".join(indent + line for line in lines))
                continue
            # A bullet starts an item and its indented lines continue it; an unindented line after
            # a bullet starts a plain paragraph again.
            items: list[list[str]] = []
            for line in lines:
                ends_bullet = items and _BULLET.match(items[-1][0]) and line[:1] not in (" ", "\t")
                if not items or _BULLET.match(line) or ends_bullet:
                    items.append([line.strip()])
                else:
                    items[-1].append(line.strip())
            paragraphs.append("\n".join(
                textwrap.fill(" ".join(item), width, initial_indent=indent,
                              subsequent_indent=indent + ("  " if _BULLET.match(item[0]) else ""))
                for item in items))
        return "\n\n".join(paragraphs)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return super()._split_lines(plain(text), width)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False or default == argparse.SUPPRESS
                or (isinstance(default, (list, tuple)) and not default) or "default" in text.lower()):
            return text
        return f"{text} (default {_shown(default).replace('%', '%%')})".lstrip()


class Parser(argparse.ArgumentParser):
    """``lift-localizer``'s parsers: the sub-parsers are of this class too (argparse makes them of
    the parent's), so every command gets the same help formatting."""

    def __init__(self, *args, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)


def feature_defaults() -> dict:
    """The keypoint budget, back end and torch device that every command defaults to: the
    localizer's (the node's too), so that maps, extracted features and queries agree unless told."""
    from ..localization.options import default_conf

    return {k: default_conf[k] for k in ("max_keypoints", "backend", "device", "precision")}


def add_lift_options(p: argparse.ArgumentParser | argparse._ArgumentGroup, keypoints_help: str) -> None:
    """--max-keypoints, --backend, --device and --precision, with the defaults of ``feature_defaults``."""
    defaults = feature_defaults()
    p.add_argument("--max-keypoints", type=positive_int, default=defaults["max_keypoints"], metavar="N",
                   help=keypoints_help)
    p.add_argument("--backend", choices=BACKEND_NAMES, default=defaults["backend"],
                   help="where LIFT's networks run: auto (on the CPU torch for DET and ONNX Runtime for ORI and "
                        "DESC where onnxruntime is installed, else torch; on a GPU TensorRT where it is installed, "
                        "else torch), torch, onnx (needs onnxruntime) or tensorrt (needs TensorRT and a CUDA GPU)")
    p.add_argument("--device", default=defaults["device"],
                   help="torch device of the torch back end (and of auto's choice): cpu, cuda or cuda:N")
    add_precision_option(p, defaults["precision"])


def add_network_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--det, --ori and --desc: LIFT's networks' weights by name or path stem (conf ``weights``)."""
    p.add_argument("--det", default=None, metavar="STEM",
                   help="LIFT's DET weights: a name in lift_localizer/weights or a path stem, e.g. your own "
                        "training's or the analytic |LoG| start (`initial-weights`) (default: the shipped det)")
    p.add_argument("--ori", default=None, metavar="STEM",
                   help="LIFT's ORI weights: ori_fast (strided, 2.4× less time on a CPU; docs/benchmarks.md), another "
                        "name in lift_localizer/weights or a path stem (default: the shipped ori)")
    p.add_argument("--desc", default=None, metavar="STEM",
                   help="LIFT's DESC weights: desc_fast (strided, 5× less time on a CPU), desc_thin (2.5× less), "
                        "another name in lift_localizer/weights or a path stem (default: the shipped desc)")


def network_weights(args: argparse.Namespace) -> dict[str, str]:
    """The ``weights`` conf of ``add_network_options``' arguments: only those given."""
    return {k: v for k in ("det", "ori", "desc") if (v := getattr(args, k, None))}


def network_problem(args: argparse.Namespace) -> str | None:
    """Why the weights named by --det, --ori or --desc cannot be used (missing, another network's, changed),
    checked before any image is read; None when they load."""
    from ..weights import WeightsError, load_network

    for kind, stem in network_weights(args).items():
        try:
            load_network(kind, stem)
        except WeightsError as e:
            return f"--{kind} {stem}: {e}"
    return None


def add_precision_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, default: str | None = None) -> None:
    p.add_argument("--precision", choices=PRECISIONS, default=default,
                   help="LIFT's network precision (default: the back end's own, fp32; TensorRT fp16): int8 on the "
                        "CPU (auto, onnx) runs DESC quantised on ONNX Runtime, DET and ORI in fp32; fp16 and int8 "
                        "on a GPU need TensorRT (int8 also a calibration, `lift-localizer export --precision int8`) "
                        "or, fp16, torch on CUDA")


def add_room_options(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The synthetic room's views and image size (``synthetic.room_sequence``), as the demo renders it."""
    p.add_argument("--mapping-views", type=positive_int, default=12, metavar="N",
                   help="synthetic room: views the map is built from")
    p.add_argument("--query-views", type=positive_int, default=6, metavar="N",
                   help="synthetic room: views localized against the map")
    p.add_argument("--width", type=positive_int, default=480, help="synthetic room: image width in pixels")
    p.add_argument("--height", type=positive_int, default=360, help="synthetic room: image height in pixels")


def backend_error(name: str) -> int | None:
    """Exit code 2 with the reason when back end ``name`` cannot run here, else None."""
    from ..backends import unavailable

    why = unavailable(name)
    return None if why is None else fail(f"--backend {why}")


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


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def ratio_value(text: str) -> float:
    from ..localization.options import RATIO_RANGE

    value, (low, high) = float(text), RATIO_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be within [{low}, {high}], got {text}")
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


def query_frames(args: argparse.Namespace, pose_topic: str | None = None, bag: Path | None = None):
    """The frames of ``bag`` (default --bag) on --image-topic and --camera-info-topic, with poses only
    from ``pose_topic``; errors come back as (None, message)."""
    from ..bags.reader import BagError, read_frames

    try:
        return read_frames(bag or args.bag, image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                           pose_topic=pose_topic), None
    except (BagError, OSError, ValueError) as e:
        return None, str(e)


def localizer_options(p: argparse.ArgumentParser) -> None:
    from ..nets.presets import PRESETS
    from ..localization.absolute_pose import SOLVERS
    from ..localization.options import default_conf

    g = p.add_argument_group("localization")
    add_lift_options(g, "query keypoint budget")
    # Weights the package does not ship (a map records only their hashes): the queries' networks.
    add_network_options(g)
    g.add_argument("--preset", choices=tuple(PRESETS), default=default_conf["preset"],
                   help="LIFT scale space of the queries: default (13 levels), fast (9 levels, ≤ 600 keypoints) "
                        "or paper (the paper's 21 levels at 640×480)")
    g.add_argument("--top-k", type=positive_int, default=default_conf["top_k"], metavar="K",
                   help="map images retrieved")
    g.add_argument("--retrieval-radius", dest="retrieval_radius_m", type=non_negative_float,
                   default=default_conf["retrieval_radius_m"], metavar="M",
                   help="retrieve only from the map images whose camera centre lies within M map units of the "
                        "previous accepted pose in the sequence (the whole map for the first query, after "
                        "repeated failures or where none lies within M); 0: always the whole map")
    g.add_argument("--map-cache-images", type=positive_int, default=default_conf["map_cache_images"], metavar="N",
                   help="map images whose keypoints with 3D points stay in memory; the others are read from the map "
                        "when retrieved")
    g.add_argument("--solver", choices=SOLVERS, default=None,
                   help="PnP solver (default: pycolmap, else poselib, else opencv — the first installed)")
    g.add_argument("--ratio", type=ratio_value, default=default_conf["ratio"], metavar="R",
                   help="ratio test of the 2D-3D matching: a query keypoint's nearest map descriptor closer than R × "
                        "its second nearest (1: off)")
    g.add_argument("--min-covisibility", type=non_negative_int, default=default_conf["min_covisibility"], metavar="N",
                   help="retrieved map images sharing at least N 3D points are one place, posed together; places are "
                        "tried best-ranked first (0: every retrieved image's matches in one PnP)")
    g.add_argument("--ransac-threshold", dest="ransac_threshold_px", type=positive_float,
                   default=default_conf["ransac_threshold_px"],
                   metavar="PX", help="RANSAC inlier threshold in pixels")
    g.add_argument("--ransac-seed", type=int, default=default_conf["seed"], metavar="N",
                   help="RANSAC's random seed: runs with other seeds show how much of a difference between two "
                        "runs RANSAC's sampling alone makes")
    g.add_argument("--min-inliers", type=positive_int, default=default_conf["min_inliers"], metavar="N",
                   help="acceptance: fewest PnP inliers")
    g.add_argument("--min-inlier-ratio", type=float, default=default_conf["min_inlier_ratio"], metavar="R",
                   help="acceptance: fewest inliers per 2D-3D match")
    g.add_argument("--min-coverage", type=float, default=default_conf["min_coverage"], metavar="F",
                   help="acceptance: fewest cells of an 8×8 grid with inliers per cell with keypoints (0: not tested)")
    g.add_argument("--max-rival-ratio", type=float, default=default_conf["max_rival_ratio"], metavar="R",
                   help="acceptance: largest inlier count of a rival pose found among the outliers, per inlier "
                        "(0: not tested)")
    g.add_argument("--covariance-scale", type=positive_float, default=default_conf["covariance_scale"], metavar="S",
                   help="reported covariance: S · (Σ + D · diag Σ) of the reprojection model's Σ")
    g.add_argument("--covariance-decorrelation", type=float, default=default_conf["covariance_decorrelation"],
                   metavar="D", help="see --covariance-scale")


def localizer_conf(args: argparse.Namespace) -> dict:
    """The ``Localizer`` options the command line gives (named as in its ``default_conf``)."""
    from ..localization.options import conf_from

    return conf_from({**vars(args), "seed": args.ransac_seed, "weights": network_weights(args) or None})
