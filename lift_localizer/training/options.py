"""Options of the training-data build (default_conf, merge_options), where the data lives, and the
error every step of the build raises."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from ..nets.settings import SUPPORT_PER_SCALE

SPLITS_FILE = Path(__file__).with_name("splits.json")
SPLIT_SECTION = "lift"
DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"

default_conf = {
    "data_root": str(DATA_ROOT),
    "split_file": str(SPLITS_FILE),
    "split": SPLIT_SECTION,
    "sources": None,                 # None: all; else names ("sfm:fox"), kinds ("webcam") or sets ("fox")
    # A user's own data for fine-tuning, instead of the split's sets: [("bag" | "collection" | "webcam",
    # path), ...] — a posed rosbag2, a folder of photos of one place, a folder of one fixed camera.
    "user_sets": [],
    "keep_split": False,             # True: the user's sets are added to the split's training sets
    "max_per_source": 2500,          # quadruplets per source at most
    "homography_share": 0.5,         # homography sources get this × max_per_source
    "seed": 0,
    "max_keypoints": 2000,           # SIFT keypoints per image (maps, webcams, P4's keypoint-free test)
    "max_reprojection_px": 2.0,      # SfM observations farther than this from their point's projection are dropped
    "collection_max_keypoints": 8000,  # unposed photo collections: more keypoints, many more SfM points
    "sfm_attempts": 3,               # … incremental SfM seeds tried until every image is registered
    "sfm_ratio": 0.9,                # unposed collections: mutual nearest neighbours with this ratio test
    "max_pairs_per_point": 6,        # P1/P2 image pairs drawn per 3D point (spread: every point's first before any second)
    # Patch centres at least this × sigma from the image border: the rotated support stays inside,
    # as LIFT's detector keeps its keypoints (keypoints.py, border_ratio).
    "border_sigmas": SUPPORT_PER_SCALE / 2 * math.sqrt(2),
    "min_separation_sigmas": 2.0,    # P3 and P4 at least this × max(sigma, sigma_keypoint) from P1's point / every keypoint
    "webcam": {
        "repeat_px": 2.0,            # a keypoint re-detected within this in another image (after registration)
        "min_repeats": 4,            # … in at least this many other images is a stable point
        "min_register_inliers": 15,  # images that cannot be registered to the scene's reference are dropped
    },
    "homography": {
        "rotation_deg": 180.0,       # in-plane rotation uniform in ±this
        "scale": [0.6, 1.6],         # log-uniform
        "aspect": 0.15,              # anisotropy exp(±this)
        "perspective": 0.2,          # projective terms in image-half units
        "translation": 0.15,         # × image size
        "gamma": [0.6, 1.7],         # log-uniform
        "contrast": [0.7, 1.3],
        "brightness": 20.0,          # grey levels ±
        "blur": [0.0, 1.5],          # Gaussian sigma (pixels), half of the views
        "noise": [0.0, 6.0],         # Gaussian noise sigma (grey levels)
        "points_per_warp": 40,
    },
    "compression": "lzf",            # HDF5 filter of the patch datasets: lzf, gzip or none
    "threads": None,                 # torch threads for cropping (None: leave as is)
}


class DataError(ValueError):
    """No training data can be built; the message says what is missing."""


def log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def merge_options(base: dict, over: dict, what: str = "data") -> dict:
    """``base`` updated by ``over``, nested dicts key by key; a key ``base`` lacks is refused."""
    out = dict(base)
    for k, v in over.items():
        if k not in base:
            raise ValueError(f"unknown {what} option {k!r}")
        out[k] = merge_options(base[k], v, what) if isinstance(base[k], dict) and isinstance(v, dict) else v
    return out
