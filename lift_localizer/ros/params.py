"""The node's parameters: one table gives each its default, type, range and description, so the
node declares them, ``config/localizer.yaml`` lists them and tests compare the two from one place.

Pure Python (no rclpy): ``check`` says why a value is refused, or None.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import backends
from ..backends import BACKEND_NAMES, unavailable
from ..images import MAX_IMAGE_SIDE
from ..features.extractors import EXTRACTORS
from ..nets.presets import PRESETS
from ..localization.options import PRIOR_MAX_FAILURES, PRIOR_TIMEOUT_S, RATIO_RANGE, conf_from
from ..localization.options import default_conf as localizer_defaults
from .jump_gate import JumpLimits


@dataclass(frozen=True)
class Param:
    name: str
    default: bool | int | float | str
    description: str
    # Numbers: inclusive range. Strings: the allowed values (None: any string).
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    # Changing it at run time reloads the map and the networks (seconds), instead of taking effect at once.
    reload: bool = False
    # Read once at start-up (subscriptions, QoS): refused at run time with that reason.
    read_only: bool = False


_L = localizer_defaults
# Camera sizes warmed up per map: a camera_info stream alternating sizes would otherwise stall the
# worker for a warm-up at every change.
MAX_WARM_UP_SIZES = 4
PARAMS: tuple[Param, ...] = (
    Param("map_path", "", "map directory written by `lift-localizer build-map`; empty: wait for one", reload=True),
    Param("features", "", f"which of the map's feature sets ({', '.join(EXTRACTORS)}); empty: the map's own",
          choices=("", *EXTRACTORS), reload=True),
    Param("backend", _L["backend"], "where LIFT's networks run", choices=BACKEND_NAMES, reload=True),
    Param("precision", "", "network precision; empty: the back end's default (fp32, TensorRT fp16); int8: on the "
          "CPU DESC quantised on ONNX Runtime, on a GPU TensorRT with a calibration (`lift-localizer export "
          "--precision int8`)", choices=("", "fp32", "fp16", "int8"),
          reload=True),
    Param("device", _L["device"], "torch device for the torch back end (cpu, cuda, cuda:1, …)", reload=True),
    Param("max_keypoints", _L["max_keypoints"], "keypoint budget per image", low=50, high=20000, reload=True),
    Param("preset", _L["preset"], "LIFT scale space: default (13 levels), fast (9 levels, ≤ 600 keypoints) or "
          "paper (the paper's 21 levels at 640×480)", choices=tuple(PRESETS), reload=True),
    Param("top_k", _L["top_k"], "map images retrieved per image", low=1, high=100),
    Param("retrieval_radius_m", _L["retrieval_radius_m"], "retrieve only from map images whose camera centre lies "
          "within this distance (map units) of the prior: the last published pose, or a pose on `initialpose` "
          "(map frame); the whole map without a prior or where none lies within it; 0: always the whole map",
          low=0.0, high=1e9),
    Param("prior_timeout_s", PRIOR_TIMEOUT_S, "a prior older than this (image stamps) is dropped and the next "
          "image searches the whole map (a cold start); 0: never too old", low=0.0, high=1e9),
    Param("prior_max_failures", PRIOR_MAX_FAILURES, "after this many area-limited images in a row are not "
          "localized, the prior is dropped (a cold start); 0: never", low=0, high=1000000),
    Param("map_cache_images", _L["map_cache_images"], "map images whose keypoints with 3D points stay in memory; "
          "the others are read from the map when retrieved (~0.4 MB each at 2000 keypoints)", low=1, high=10_000_000),
    Param("retrieval", _L["retrieval"], "auto: NetVLAD when the map has it, else descriptor votes",
          choices=("auto", "netvlad", "vote"), reload=True),
    Param("ratio", _L["ratio"], "ratio test of the 2D-3D matching (1: off)", low=RATIO_RANGE[0],
          high=RATIO_RANGE[1]),
    Param("ransac_threshold_px", _L["ransac_threshold_px"], "PnP RANSAC inlier threshold, pixels", low=0.5, high=100.0),
    Param("min_inliers", _L["min_inliers"], "acceptance: fewest PnP inliers", low=4, high=100000),
    Param("min_inlier_ratio", _L["min_inlier_ratio"], "acceptance: fewest inliers per 2D-3D match", low=0.0, high=1.0),
    Param("min_coverage", _L["min_coverage"], "acceptance: fewest grid cells with inliers per grid cell with "
          "keypoints (8×8 grid); 0: not tested", low=0.0, high=1.0),
    Param("max_rival_ratio", _L["max_rival_ratio"], "acceptance: largest inlier count of a rival pose among the "
          "outliers per inlier; 0: not tested", low=0.0, high=10.0),
    Param("max_position_std", 0.0, "acceptance: largest position standard deviation in map units; 0: not tested",
          low=0.0, high=1e6),
    Param("covariance_scale", _L["covariance_scale"], "published covariance: scale · (Σ + decorrelation · diag Σ) "
          "of the reprojection model's Σ", low=1e-3, high=1e6),
    Param("covariance_decorrelation", _L["covariance_decorrelation"], "published covariance: independent error "
          "added to each coordinate, as a fraction of its variance", low=0.0, high=1e3),
    Param("covariance_floor", _L["covariance_floor"], "published covariance: add the map's own pose accuracy, "
          "measured when the map is loaded", reload=True),
    Param("map_frame", "map", "frame of /pose and the parent of the broadcast transform"),
    Param("odom_frame", "odom", "broadcast map→odom when TF knows odom→camera, else map→camera unless the camera "
          "frame has a parent in TF already (then nothing: set this to the root of the camera's tree); empty: no "
          "odom lookup"),
    Param("camera_frame", "", "camera optical frame; empty: the image header's frame_id"),
    Param("publish_tf", True, "broadcast the transform (needs tf2_ros)"),
    Param("image_transport", "raw", "subscribe `image` (raw) or `image/compressed`", choices=("raw", "compressed"),
          read_only=True),
    Param("qos_reliability", "best_effort", "image and camera_info QoS: best_effort (sensor data) or reliable",
          choices=("best_effort", "reliable"), read_only=True),
    Param("qos_depth", 5, "image and camera_info queue depth", low=1, high=1000, read_only=True),
    Param("jump_gate", True, "hold a pose whose map→odom jumps more than max_jump_m / max_jump_deg from the last "
          "published one until a second frame agrees with it (only where TF knows odom→camera)"),
    Param("max_jump_m", 0.5, "a new map→odom that puts the camera at most this far (map units) from where the "
          "last published one puts it is published at once; farther is a jump", low=0.01, high=1000.0),
    Param("max_jump_deg", 10.0, "a new map→odom turned at most this many degrees from the last "
          "published one is published at once; more is a jump", low=0.1, high=180.0),
    Param("jump_hold_timeout_s", 5.0, "a held jump that no frame confirms within this many seconds (image stamps) "
          "is forgotten", low=0.1, high=3600.0),
    Param("max_rate_hz", 0.0, "most images localized per second; 0: as many as the CPU/GPU allows", low=0.0, high=1000.0),
    Param("max_image_side", MAX_IMAGE_SIDE, "camera_info and images with a longer side are refused, an image's "
          "from its header before decoding (memory stays bounded whatever a message claims)", low=16, high=65536),
    Param("warm_up", True, "extract once from a synthetic image when the map or the camera size changes, so the "
          "first frame does not wait for one-off set-up (GPU: DET route measurement, CUDA graph capture); "
          f"each size at most once per map, at most {MAX_WARM_UP_SIZES} sizes"),
    Param("diagnostics_period_s", 1.0, "period of /diagnostics", low=0.05, high=3600.0, read_only=True),
)
BY_NAME = {p.name: p for p in PARAMS}


def check(name: str, value) -> str | None:
    """Why ``value`` is refused for parameter ``name``, or None when it is acceptable."""
    p = BY_NAME.get(name)
    if p is None:
        return f"unknown parameter {name!r}"
    if isinstance(p.default, bool):
        return None if isinstance(value, bool) else f"{name} must be true or false, not {value!r}"
    if isinstance(p.default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, not {value!r}"
        if isinstance(p.default, int) and not isinstance(value, int):
            return f"{name} must be an integer, not {value!r}"
        if not (p.low <= value <= p.high):
            return f"{name} = {value} is outside [{p.low:g}, {p.high:g}]"
        return None
    if not isinstance(value, str):
        return f"{name} must be a string, not {value!r}"
    if p.choices and value not in p.choices:
        return f"{name} = {value!r}: choose one of {', '.join(p.choices)}"
    # backends.BACKENDS is worked out on first use (it imports onnxruntime, TensorRT and torch).
    if name == "backend" and value not in backends.BACKENDS:
        return f"backend {value!r} is not available here: {unavailable(value)}"
    if name == "device" and not (value == "cpu" or value.startswith("cuda")):
        return f"device {value!r}: use cpu or cuda[:N]"
    return None


def localizer_conf(values: dict) -> dict:
    """Node parameter values → ``Localizer`` conf (the parameters are named as its options)."""
    return conf_from(values)


def jump_limits(values: dict) -> JumpLimits:
    """Node parameter values → the jump gate's limits."""
    return JumpLimits(values["max_jump_m"], values["max_jump_deg"], values["jump_hold_timeout_s"])
