"""Map building's options and their defaults, as plain data: no torch, so that ``build-map``'s
parser reads them (and ``lift-localizer --help`` runs) without importing it. ``build.build_map``
takes a dict of these."""
from __future__ import annotations

from ..features.extractors import DEFAULT_MAX_KEYPOINTS

default_conf = {
    # The queries' budget: a map holds as many keypoints per image as the images localized against it.
    "max_keypoints": DEFAULT_MAX_KEYPOINTS,
    # LIFT without ORI (features/lift.py "upright"); recorded in the map, and its queries follow it.
    "upright": False,
    # LIFT's scale space (nets/presets.py; its levels only: a map's keypoint budget is max_keypoints).
    # Queries use the localizer's own preset: give the same one to evaluate and localize.
    "preset": "default",
    # LIFT's network precision (features/lift.py "precision"); None: the back end's default.
    "precision": None,
    # LIFT's DET, ORI and DESC weights: a name in lift_localizer/weights (ori_fast, desc_thin, desc_fast:
    # the cheaper networks) or a path stem; None: the shipped ones. The map records their hashes;
    # localization loads the same shipped weights (others: given to it by name).
    "det": None,
    "ori": None,
    "desc": None,
    # Each image is matched to its nearest posed neighbours whose optical axes differ by less than this.
    "num_neighbours": 8,
    "max_view_angle_deg": 75.0,
    "ratio": 0.9,
    # Matches farther than this (Sampson distance, pixels) from the epipolar lines of the known poses are dropped.
    "epipolar_threshold_px": 4.0,
    # Seek each keypoint's match only among those the known poses admit (pairs.match_pair), instead of
    # matching first and dropping what the poses reject.
    "guided_matching": False,
    "min_pair_matches": 8,
    "keep_two_view_tracks": True,
    # Align each track's keypoints photometrically before triangulating (keypoint_refinement.py). Off: the
    # reprojection error falls, but localization is no better (docs/evaluation.md).
    "refine_keypoints": False,
}
