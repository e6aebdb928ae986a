"""The localizer's options and their defaults, as plain data: no torch, so that the command line and
the node's parameters read them (and ``lift-localizer --help`` runs) without importing it.
``localizer.Localizer`` takes a dict of these."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..features.extractors import DEFAULT_MAX_KEYPOINTS
from ..mapping.image_cache import DEFAULT_CACHE_IMAGES

# The ratio tests a user may ask for (the 2D-3D matching here and in the node, the map's pair matching):
# below 0.1 hardly any match passes; 1 turns the test off.
RATIO_RANGE = (0.1, 1.0)

default_conf = {
    "max_keypoints": DEFAULT_MAX_KEYPOINTS,
    # Where LIFT's networks run (SIFT ignores both): a back end of lift_localizer.backends, a torch device.
    "backend": "auto",
    "device": "cpu",
    # None: the back end's default (fp32; TensorRT fp16); fp16 for torch on CUDA or TensorRT; int8 for
    # TensorRT with a calibration (`lift-localizer export --precision int8`).
    "precision": None,
    # LIFT scale-space preset (features.lift.PRESETS): "fast" trades some recall for speed on a CPU.
    "preset": "default",
    # LIFT's networks {det, ori, desc: a name in lift_localizer/weights or a path stem} where they are not
    # the shipped weights the map records (by hash); None: those.
    "weights": None,
    "top_k": 10,
    # Map images whose camera centre lies within this distance (map units) of a prior position are the
    # only ones retrieved from, where a query has a prior; 0: always the whole map.
    "retrieval_radius_m": 0.0,
    # "auto": NetVLAD + faiss when the map has them, else descriptor votes; or force one.
    "retrieval": "auto",
    "ratio": 0.9,
    # Two retrieved images are in one place when they share at least this many 3D points.
    "min_covisibility": 10,
    "solver": None,               # None: pycolmap, else poselib, else opencv — whichever is installed
    "ransac_threshold_px": 8.0,
    # Acceptance tests: a pose is reported only if it passes all of them.
    "min_inliers": 20,
    "min_inlier_ratio": 0.03,
    # Bounds chosen on the mapping halves of the development bags (docs/acceptance.md); None: not tested.
    "min_coverage": 0.1,
    "max_rival_ratio": 0.49,
    "max_position_std": None,     # metres (map units)
    "max_relative_position_std": None,   # position std / the inliers' median depth
    # The published covariance: scale · (Σ + decorrelation · diag Σ) of the reprojection model's Σ
    # (absolute_pose.calibrate_covariance), plus the map's own pose accuracy (map_accuracy.MapAccuracy)
    # where covariance_floor is on. Checked on held-out mapping images (docs/acceptance.md): the floor
    # calibrates it; no scale or decorrelation changes that by more than noise, so none is applied.
    "covariance_scale": 1.0,
    "covariance_decorrelation": 0.0,
    "covariance_floor": True,
    "seed": 0,
    # Map images whose keypoints with 3D points stay in memory (the least recently retrieved are
    # dropped and read again from the map when retrieved); maps up to this size are read once.
    "map_cache_images": DEFAULT_CACHE_IMAGES,
}

# When a prior stops limiting retrieval (``prior.PosePrior``): older than this many seconds of image
# stamps, or after this many area-limited queries in a row have failed; the next query then searches
# the whole map (a cold start).
PRIOR_TIMEOUT_S = 10.0
PRIOR_MAX_FAILURES = 3

# Options a user turns off (a bound not tested) or leaves to the default with 0 or "": ROS
# parameters cannot be None, and the command line says 0 where it means "not tested".
UNSET_BY_FALSY = ("min_coverage", "max_rival_ratio", "max_position_std", "max_relative_position_std", "precision",
                  "solver")


def conf_from(values: Mapping[str, Any]) -> dict:
    """The ``default_conf`` options among ``values``, by name: the node's parameters and the command
    line's options (``vars(args)``) both go through here; 0 or "" in ``UNSET_BY_FALSY`` means None."""
    conf = {k: values[k] for k in default_conf if k in values}
    for key in UNSET_BY_FALSY:
        if key in conf and not conf[key]:
            conf[key] = None
    return conf
