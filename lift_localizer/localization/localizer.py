"""Localize one image against a map: features → top-k map images → 2D–3D matches, grouped by
covisibility → PnP + LO-RANSAC + refinement → an accepted pose or a failure with its reason.

    localizer = Localizer(load_map("out/map"))
    result = localizer(image, camera)        # LocalizationResult
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any
from dataclasses import dataclass, field

import numpy as np
import torch

from ..features.extractors import extractor_class, make_extractor, processed_size
from ..images import to_gray
from ..features.types import Features
from ..geometry.camera import Camera
from ..synthetic import warm_up_image
from ..mapping.io import Map, MapError
from .absolute_pose import calibrate_covariance, default_solver, estimate_pose
from .map_accuracy import map_accuracy
from .acceptance import (CLUSTERED, LOW_INLIER_RATIO, RIVAL, TOO_FEW_INLIERS, UNCERTAIN,  # noqa: F401 — reasons
                         PoseEvidence, inlier_refusal, pose_evidence, refusal)
from ..features.matching import mutual_nearest_neighbours
from ..reasons import Failure, Reason
from ..retrieval.area import OFF, AreaIndex, AreaUse
from ..retrieval.retriever import GlobalIndexError, NetVLADRetrieval, compatible_model
from .vote_retrieval import VoteRetrieval
from .options import UNSET_BY_FALSY, conf_from, default_conf  # noqa: F401 — the first two re-exported


def query_extractor_conf(features: dict, conf: dict) -> dict:
    """The options of the extractor that describes queries for a map whose map.json 'features' is
    ``features``, under localizer options ``conf`` (complete, as ``Localizer.conf``)."""
    base = {"max_keypoints": conf["max_keypoints"], "resize_max": features.get("resize_max")}
    # Each extractor adds what it takes from the localizer (LIFT: back end, preset) and the map.
    return extractor_class(features["name"]).query_conf(base, features, conf)


NO_FEATURES = Reason.NO_FEATURES
NO_RETRIEVAL = Reason.NO_RETRIEVAL
TOO_FEW_MATCHES = Reason.TOO_FEW_MATCHES
PNP_FAILED = Reason.PNP_FAILED
BAD_MAP_IMAGE = Reason.BAD_MAP_IMAGE
# Map images whose descriptors a localizer on a GPU keeps there (~0.5 MB each: 256 MB at most).
MAX_ON_DEVICE = 512


@dataclass
class LocalizationResult:
    success: bool
    reason: Failure | None
    T_map_camera: np.ndarray | None = None
    covariance: np.ndarray | None = None
    num_inliers: int = 0
    num_matches: int = 0
    features: Features | None = None
    retrieved: list[str] = field(default_factory=list)
    # Correspondences of the chosen cluster: query keypoint index, 3D point xyz, inlier flag.
    match_keypoints: np.ndarray | None = None
    match_xyz: np.ndarray | None = None
    inliers: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # What supports the pose (acceptance.PoseEvidence); None where PnP found none.
    evidence: PoseEvidence | None = None
    # Which map images retrieval chose from (the whole map, or an area around a prior); None where
    # the query ended before retrieval.
    area: AreaUse | None = None
    # The map's ids of match_xyz's points (the same rows).
    match_point_ids: np.ndarray | None = None

    @property
    def inlier_ratio(self) -> float:
        return self.num_inliers / self.num_matches if self.num_matches else 0.0


def covisibility_clusters(map_: Map, ranked: np.ndarray, min_shared: int) -> list[np.ndarray]:
    """Split ranked map image indices into groups connected by shared 3D points, in the order of
    each group's best-ranked image (hloc's covisibility clustering, on the retrieved set only)."""
    points = [set(map_.observations(i).point3D_ids.tolist()) for i in ranked]
    parent = list(range(len(ranked)))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a in range(len(ranked)):
        for b in range(a + 1, len(ranked)):
            if len(points[a] & points[b]) >= min_shared:
                parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for a in range(len(ranked)):
        groups.setdefault(root(a), []).append(a)
    return [ranked[np.array(g)] for g in sorted(groups.values(), key=min)]


class Localizer:
    """Localizes images against one map with the features the map was built with."""

    def __init__(self, map_: Map, conf: dict | None = None, extractor=None) -> None:
        conf = {**default_conf, **(conf or {})}
        unknown = set(conf) - set(default_conf)
        if unknown:
            raise ValueError(f"unknown localizer options {sorted(unknown)}")
        self.conf = conf
        self.map = map_
        self.retrieval_note: str | None = None
        self.solver = conf["solver"] or default_solver()
        self.extractor = extractor or make_extractor(map_.features_name, self._extractor_conf())
        self._check_features()
        self.retrieval = self._retrieval()
        self.names = [im.name for im in map_.images]
        map_.cache.resize(conf["map_cache_images"])
        self.accuracy = map_accuracy(map_) if conf["covariance_floor"] else None
        # Where LIFT runs on a GPU, matching runs there too (on an H100 the CPU's took 16 ms a frame).
        device = torch.device(conf["device"])
        self._match_device = device if device.type == "cuda" else None
        # The most recently retrieved map images' descriptors, at most MAX_ON_DEVICE (~0.5 MB each).
        self._on_device: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._area: AreaIndex | None = None   # built when a radius is first set

    def _extractor_conf(self) -> dict:
        return query_extractor_conf(self.map.meta["features"], self.conf)

    def _retrieval(self):
        method = self.conf["retrieval"]
        if method not in ("auto", "netvlad", "vote"):
            raise ValueError(f"unknown retrieval {method!r} (auto, netvlad, vote)")
        meta = self.map.meta.get("retrieval")
        if method != "vote" and meta:
            net, why = compatible_model(self.map.meta["features"], meta["model"])
            if net is not None and net.sha256 == meta["model_sha256"]:
                try:
                    return NetVLADRetrieval(self.map.path, [im.name for im in self.map.images], net, meta)
                except GlobalIndexError as e:
                    why = f"the map's global index is unusable: {e}"
            why = why or f"the shipped {meta['model']} differs from the one the map was built with; rebuild the map"
        else:
            why = "the map has no global descriptors"
        if method == "netvlad":
            raise MapError(f"{self.map.path}: NetVLAD retrieval unavailable: {why}")
        self.retrieval_note = why
        return VoteRetrieval(self.map)

    def _check_features(self) -> None:
        want, have = self.map.meta["features"], self.extractor.identity()
        if want["name"] != have["name"]:
            raise MapError(f"{self.map.path}: map built with {want['name']} features, localizer uses {have['name']}")
        if want.get("weights") != have.get("weights"):
            raise MapError(f"{self.map.path}: map built with other {want['name']} weights "
                           f"({want.get('weights')}) than the ones loaded ({have.get('weights')}); rebuild the map")

    def _matches(self, q: Features, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """2D–3D matches of query keypoints to the 3D points seen in ``images``: (M,) keypoint
        indices and (M,) point ids, one per (keypoint, point) pair."""
        kp, pid = [], []
        device = self._match_device
        query = q.descriptors if device is None else torch.as_tensor(q.descriptors, device=device)
        for i in images:
            seen = self.map.observations(i)
            desc, ids = seen.descriptors, seen.point3D_ids
            if device is not None:
                desc = self._descriptors_on_device(i, desc, device)
            m = mutual_nearest_neighbours(query, desc, self.conf["ratio"], device)
            kp.append(m[:, 0])
            pid.append(ids[m[:, 1]])
        if not kp:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = np.unique(np.stack([np.concatenate(kp), np.concatenate(pid)], 1), axis=0)
        return pairs[:, 0], pairs[:, 1]

    def _descriptors_on_device(self, i: int, desc: np.ndarray, device: torch.device) -> torch.Tensor:
        """Map image i's descriptors on ``device``: copied when first retrieved, kept for the
        MAX_ON_DEVICE images retrieved last (a large map would not fit in a Jetson's memory)."""
        if i in self._on_device:
            self._on_device.move_to_end(i)
        else:
            self._on_device[i] = torch.as_tensor(desc, device=device)
            if len(self._on_device) > MAX_ON_DEVICE:
                self._on_device.popitem(last=False)
        return self._on_device[i]

    def retrieval_area(self, prior: np.ndarray | None) -> AreaUse:
        """The map images a query with ``prior`` (a position in the map frame, or None) retrieves
        from, under the option ``retrieval_radius_m`` (which the node may change at run time)."""
        radius = float(self.conf["retrieval_radius_m"])
        if radius <= 0:
            return AreaUse(OFF, None, 0.0, len(self.names))
        if self._area is None:
            self._area = AreaIndex(np.array([im.T_map_camera[:3, 3] for im in self.map.images]).reshape(-1, 3))
        return self._area.candidates(prior, radius)

    def cluster_results(self, q: Features, camera: Camera, timings: dict[str, float],
                        area: AreaUse | None = None) -> Iterator[LocalizationResult]:
        """One result per covisibility cluster of the retrieved map images, best-ranked first, each
        with its evidence and its acceptance decision; ``timings`` accumulates match and pnp.
        ``area``: the map images to retrieve from (``retrieval_area``; None: the whole map)."""
        # A parameter changed at run time (the node's map_cache_images) applies from this query on.
        if self.map.cache.capacity != self.conf["map_cache_images"]:
            self.map.cache.resize(self.conf["map_cache_images"])
        t = time.perf_counter()
        ranked, _ = self.retrieval.top_k(q.descriptors, self.conf["top_k"], area.ids if area else None)
        timings["retrieve"] = timings.get("retrieve", 0.0) + time.perf_counter() - t
        if len(ranked) == 0:
            return
        xy_undist = camera.undistort_points(q.keypoints)
        clusters = covisibility_clusters(self.map, ranked, self.conf["min_covisibility"])
        timings["match"] = timings["pnp"] = 0.0
        size = (camera.width, camera.height)
        retrieved = [self.names[i] for i in ranked]
        for cluster in clusters:
            t = time.perf_counter()
            kp_idx, pids = self._matches(q, cluster)
            timings["match"] += time.perf_counter() - t
            if len(kp_idx) < 4:
                yield LocalizationResult(False, Failure(TOO_FEW_MATCHES, str(len(kp_idx))), num_matches=len(kp_idx),
                                         retrieved=retrieved)
                continue
            t = time.perf_counter()
            xyz = self.map.points_xyz(pids)
            xy = xy_undist[kp_idx]
            est = estimate_pose(xy, xyz, camera.K, size, self.conf["ransac_threshold_px"], self.solver,
                                self.conf["seed"])
            evidence = None
            if est is not None:
                est.covariance = calibrate_covariance(est.covariance, self.conf["covariance_scale"],
                                                      self.conf["covariance_decorrelation"])
                if self.accuracy is not None:
                    est.covariance += np.diag(self.accuracy.at(est.T_map_camera[:3, 3]))
                if est.num_inliers >= 4:
                    evidence = pose_evidence(
                        est, xy, xyz, q.keypoints, kp_idx, camera.K, size, self.conf["ransac_threshold_px"],
                        self.solver, self.conf["seed"],
                        find_rival=inlier_refusal(est.num_inliers, len(kp_idx), self.conf) is None)
            timings["pnp"] += time.perf_counter() - t
            reason = Failure(PNP_FAILED) if evidence is None else refusal(evidence, self.conf)
            yield LocalizationResult(
                reason is None, reason, est.T_map_camera if est else None, est.covariance if est else None,
                est.num_inliers if est else 0, len(kp_idx), retrieved=retrieved, match_keypoints=kp_idx,
                match_xyz=xyz, inliers=est.inliers if est else None, evidence=evidence, match_point_ids=pids)

    def localize_features(self, q: Features, camera: Camera, prior: np.ndarray | None = None) -> LocalizationResult:
        """Localize a query's features. ``prior``: where the camera is believed to be (a position
        in the map frame); with the option ``retrieval_radius_m`` set, only the map images within
        that radius of it are retrieved from (the whole map where none is, or without a prior)."""
        timings = dict(q.timings) if q.timings else {}
        if len(q) == 0:
            return LocalizationResult(False, Failure(NO_FEATURES), features=q, timings=timings)
        t = time.perf_counter()
        area = self.retrieval_area(prior)
        timings["retrieve"] = time.perf_counter() - t
        best: LocalizationResult | None = None
        try:
            for result in self.cluster_results(q, camera, timings, area):
                if best is None or result.num_inliers > best.num_inliers:
                    best = result
                if result.success:
                    break
        except MapError as e:
            # A map image whose features are corrupt is found when it is first read: this query
            # fails with the reason, and the map's other images still serve the next ones.
            return LocalizationResult(False, Failure(BAD_MAP_IMAGE, str(e)), features=q, timings=timings, area=area)
        if best is None:
            return LocalizationResult(False, Failure(NO_RETRIEVAL), features=q, timings=timings, area=area)
        best.features, best.timings, best.area = q, timings, area
        return best

    def warm_up(self, camera: Camera) -> float:
        """Extract features once from a synthetic image of ``camera``'s size; returns the seconds it took.

        The first image of a size pays for one-off work: DET's route measurement and the CUDA graph
        capture on a GPU, TensorRT's engine loading, the CPU libraries' kernel set-up (`benchmark`'s
        "first call": 0.8–0.87 s against 0.67 s at 640×480 on 2 cores). A node does it here, before
        its first real frame, so that the first pose is not late. Retrieval, matching and the pose are not run: nothing of theirs is per size.
        """
        t = time.perf_counter()
        # At the size the extractor works at: a full-size image would only be resized down to it.
        height, width = processed_size(camera.height, camera.width, self.extractor.conf.get("resize_max"))
        self.extractor(warm_up_image(height, width))
        return time.perf_counter() - t

    def extract(self, image: np.ndarray, camera: Camera) -> Features:
        """The query's features (any layout ``to_gray`` accepts), timed; the image must be ``camera``'s size."""
        gray = to_gray(image)
        if gray.shape != (camera.height, camera.width):
            raise ValueError(f"image is {gray.shape[1]}×{gray.shape[0]} but the camera is "
                             f"{camera.width}×{camera.height}")
        t = time.perf_counter()
        q = self.extractor(gray)
        q.timings = {"extract": time.perf_counter() - t}
        return q

    def __call__(self, image: np.ndarray, camera: Camera, prior: np.ndarray | None = None) -> LocalizationResult:
        """Localize an image (any layout ``to_gray`` accepts) taken by ``camera``; ``prior``: see
        ``localize_features``."""
        return self.localize_features(self.extract(image, camera), camera, prior)
