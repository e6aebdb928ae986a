"""The per-image and per-pair work of a map build, as plain functions of picklable arguments, so
that an executor (mapping/executors.py) can run them here or on other processes and machines:
which images to pair, one image's features, one image's matches with its partners.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ..features.extractors import make_extractor
from ..features.matching import mutual_nearest_neighbours
from ..features.types import Features
from ..geometry.camera import Camera
from ..geometry.triangulate import epipolar_band, fundamental_from_poses, sampson_error


@dataclass(frozen=True)
class View:
    """What matching needs of an image besides its features (a Frame also holds its image loader)."""
    camera: Camera
    T_map_camera: np.ndarray


@dataclass
class PairMatches:
    matches: dict[tuple[int, int], np.ndarray]
    raw: int
    verified: int


# Distances held at once by select_pairs (rows × images): 32 MB of float64, and its temporaries.
PAIR_BLOCK_ELEMENTS = 4_000_000


def select_pairs(poses: list[np.ndarray], num_neighbours: int, max_view_angle_deg: float) -> list[tuple[int, int]]:
    """Image pairs (i < j) that see the same place, judged from the poses: each image with its
    ``num_neighbours`` nearest camera centres among those looking within ``max_view_angle_deg``
    (ties to the lower index). The distances are computed a block of rows at a time, so that 100 000
    images need a few hundred MB, not the N×N matrices (80 GB each)."""
    if len(poses) < 2:
        return []
    centres = np.array([T[:3, 3] for T in poses])
    axes = np.array([T[:3, 2] for T in poses])
    cos_limit = np.cos(np.radians(max_view_angle_deg))
    n, k = len(poses), min(num_neighbours, len(poses) - 1)
    pairs = set()
    if k <= 0:
        return []
    block = max(1, PAIR_BLOCK_ELEMENTS // n)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        dist = np.linalg.norm(centres[rows, None] - centres[None], axis=2)
        cos = np.clip(axes[rows] @ axes.T, -1, 1)
        dist[cos < cos_limit] = np.inf
        dist[np.arange(len(rows)), rows] = np.inf
        kth = np.partition(dist, k - 1, axis=1)[:, k - 1]
        for r, i in enumerate(rows):
            # Those up to the k-th distance, in index order; a stable sort then takes what a stable
            # sort of the whole row would take first (ties to the lower index).
            candidates = np.flatnonzero(dist[r] <= kth[r])
            for j in candidates[np.argsort(dist[r, candidates], kind="stable")][:k]:
                if np.isfinite(dist[r, j]):
                    pairs.add((min(int(i), int(j)), max(int(i), int(j))))
    return sorted(pairs)


def pair_groups(pairs: list[tuple[int, int]]) -> list[tuple[int, list[int]]]:
    """Sorted pairs grouped by their first image: (i, [j, …]), in the pairs' order. One group is one
    unit of work, so that image i's features travel once for all its partners."""
    groups: list[tuple[int, list[int]]] = []
    for i, j in pairs:
        if not groups or groups[-1][0] != i:
            groups.append((i, []))
        groups[-1][1].append(j)
    return groups


def match_pair(fi: Features, fj: Features, vi: View, vj: View, conf: dict) -> tuple[int, np.ndarray | None]:
    """Mutual-NN + ratio matches of two images, kept where their known poses agree (epipolar):
    (the number of raw matches, the verified (M, 2) matches or None when fewer than
    ``conf["min_pair_matches"]`` pass). With ``conf["guided_matching"]`` the known poses come first:
    nearest neighbours and the ratio test are taken among the keypoints within the epipolar threshold
    only, so a match is not lost to a look-alike elsewhere in the image (all its matches are raw and
    verified)."""
    F = fundamental_from_poses(vi.T_map_camera, vj.T_map_camera, vi.camera.K, vj.camera.K)
    if conf.get("guided_matching", False):
        if len(fi.keypoints) == 0 or len(fj.keypoints) == 0:
            return 0, None
        allowed = epipolar_band(F, vi.camera.undistort_points(fi.keypoints), vj.camera.undistort_points(fj.keypoints),
                                conf["epipolar_threshold_px"])
        m = mutual_nearest_neighbours(fi.descriptors, fj.descriptors, conf["ratio"], allowed=allowed)
        return len(m), (m if len(m) >= conf["min_pair_matches"] else None)
    m = mutual_nearest_neighbours(fi.descriptors, fj.descriptors, conf["ratio"])
    if len(m) == 0:
        return 0, None
    # Undistortion is per point, so undistorting only the matched keypoints gives the same pixels.
    good = sampson_error(F, vi.camera.undistort_points(fi.keypoints[m[:, 0]]),
                         vj.camera.undistort_points(fj.keypoints[m[:, 1]])) < conf["epipolar_threshold_px"]
    return len(m), (m[good] if good.sum() >= conf["min_pair_matches"] else None)


def match_group(conf: dict, vi: View, fi: Features, views: list[View], *features: Features
                ) -> list[tuple[int, np.ndarray | None]]:
    """``match_pair`` of image i with each of its partners (``views[k]``, ``features[k]``).
    The partners' features come as separate arguments so that an executor can pass each as a
    reference to one stored copy."""
    return [match_pair(fi, fj, vi, vj, conf) for vj, fj in zip(views, features)]


def collect_matches(groups: list[tuple[int, list[int]]], results: list[list[tuple[int, np.ndarray | None]]]
                    ) -> PairMatches:
    """The groups' results as one PairMatches, in the pairs' order."""
    out: dict[tuple[int, int], np.ndarray] = {}
    raw = verified = 0
    for (i, js), found in zip(groups, results):
        for j, (n, m) in zip(js, found):
            raw += n
            if m is not None:
                out[(i, j)] = m
                verified += len(m)
    return PairMatches(out, raw, verified)


# Extractors built in this process from pickled ExtractorSets, by their options: a worker that runs
# many images builds each extractor (network weights) once.
_BUILT: dict[str, dict] = {}


@dataclass
class ExtractorSet:
    """The map's feature sets by name and options; called on a grey image, the Features of each in
    order. Pickled, it carries only the options, and a process that unpickles it builds the
    extractors once for all the images it is sent (kept in ``_BUILT``)."""
    confs: dict[str, dict]
    _built: dict | None = field(default=None, repr=False, compare=False)
    _shared: bool = field(default=False, repr=False, compare=False)

    def built(self) -> dict:
        """name → extractor, built on first use."""
        if self._built is None and self._shared:
            key = json.dumps(self.confs, sort_keys=True, default=str)
            if key not in _BUILT:
                _BUILT.clear()   # a worker serves one build at a time: keep one set of networks
                _BUILT[key] = ExtractorSet(self.confs).built()
            self._built = _BUILT[key]
        if self._built is None:
            self._built = {name: make_extractor(name, conf) for name, conf in self.confs.items()}
        return self._built

    def __call__(self, gray: np.ndarray) -> tuple[Features, ...]:
        return tuple(ex(gray) for ex in self.built().values())

    def __getstate__(self) -> dict:
        return {"confs": self.confs}

    def __setstate__(self, state: dict) -> None:
        self.confs, self._built, self._shared = state["confs"], None, True


def extract_image(extractors: ExtractorSet, gray: np.ndarray) -> tuple[Features, ...]:
    """One image's features, for each of ``extractors``."""
    return extractors(gray)
