"""Does aligning a query's inlier keypoints to the map's patches of their 3D points localize better?

LIFT's keypoints are less precise than SIFT's (a map's reprojection error is higher), and making a
map's tracks agree (`build-map --refine-keypoints`) did not help: the query's keypoints are still
where the detector put them. Here the query side moves instead. Each query is localized as shipped;
then each PnP inlier's keypoint is aligned (Lucas-Kanade over an affine frame, a gain and a bias, as
``mapping/keypoint_refinement``) to the patches of its 3D point in up to ``--views`` map images that
observe it (those retrieved first): each template is centred where the point projects into that
image and framed by that observation's scale and orientation, so the aligned position is where the
query sees the 3D point itself. An alignment counts when the patches correlate ≥ 0.8 and the
keypoint moved ≤ 0.5 of its sigma (the map refinement's settings); the keypoint moves to the mean
of its counted alignments. The pose is then refined by pycolmap on the same inliers from the
shipped pose, once on the detected positions (the control) and once on the aligned ones.

    python tools/query_refinement.py --sets MAP:MAPPING_BAG:QUERY_BAG... [--features lift sift] [--views 3]

MAPPING_BAG is the bag the map was built from (its images are the templates). Pooled over every
query of every set, aligned against the control: won / lost / tied at the three scene-scaled
thresholds of each set's map, and the translation-error ratio (geometric mean, bootstrap 95 %
interval). Use it on held-out mapping images (tools/split_bag.py), never on a query half.
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch

from lift_localizer.bags.reader import read_frames
from lift_localizer.evaluation.metrics import within
from lift_localizer.evaluation.paired import error_ratio, paired_row
from lift_localizer.evaluation.thresholds import scaled_thresholds, scene_depth
from lift_localizer.geometry.pose import invert, pose_error
from lift_localizer.images import to_gray
from lift_localizer.localization.localizer import Localizer
from lift_localizer.mapping.io import MapError, load_map
from lift_localizer.mapping.keypoint_refinement import (BlurredImage, align_patches, default_conf, keypoint_frames,
                                                         patch_grid, read_patches)


class MapImages:
    """The mapping bag's images, blurred on demand, the last few kept."""

    def __init__(self, bag: str, keep: int = 12) -> None:
        self.frames = {f.name: f for f in read_frames(bag)}
        self.cache: OrderedDict[str, BlurredImage] = OrderedDict()
        self.keep = keep

    def __call__(self, name: str) -> BlurredImage:
        if name not in self.cache:
            self.cache[name] = BlurredImage(to_gray(self.frames[name].image()))
            if len(self.cache) > self.keep:
                self.cache.popitem(last=False)
        self.cache.move_to_end(name)
        return self.cache[name]


def observations_by_point(scene) -> dict[int, list[tuple[int, int]]]:
    """3D point id → its observations (map image, keypoint)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for i, im in enumerate(scene.images):
        for k in np.flatnonzero(im.point3D_ids >= 0):
            out.setdefault(int(im.point3D_ids[k]), []).append((i, int(k)))
    return out


def _project(im, xyz: np.ndarray) -> np.ndarray:
    """(N, 3) map points → (N, 2) distorted pixels of map image ``im``."""
    T = invert(im.T_map_camera)
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    dist = im.camera.dist if im.camera.has_distortion else None
    return cv2.projectPoints(xyz.reshape(-1, 1, 3), rvec, T[:3, 3], im.camera.K, dist)[0].reshape(-1, 2)


def aligned_keypoints(query_image: np.ndarray, q, kp: np.ndarray, pids: np.ndarray, scene, index, images: MapImages,
                      rank: dict[int, int], views: int, conf: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) query keypoints ``kp`` aligned to their points' map patches, and (N,) how many views counted."""
    g, w = patch_grid(conf)
    c0, A0, sigma = keypoint_frames(q, kp)
    xyz = scene.points_xyz(pids)
    # One (query keypoint, map observation) job per view, grouped by map image.
    jobs: dict[int, list[tuple[int, int]]] = {}
    for n, pid in enumerate(pids):
        obs = sorted(index[int(pid)], key=lambda o: rank.get(o[0], len(rank) + o[0]))[:views]
        for i, k in obs:
            jobs.setdefault(i, []).append((n, k))
    total = torch.zeros(len(kp), 2, dtype=torch.float64)
    count = torch.zeros(len(kp), dtype=torch.float64)
    query = BlurredImage(to_gray(query_image))
    for i, pairs in jobs.items():
        im = scene.images[i]
        n = np.array([p[0] for p in pairs])
        k = np.array([p[1] for p in pairs])
        _, A, _ = keypoint_frames(im.features, k)
        centre = torch.from_numpy(_project(im, xyz[n]))
        templates = read_patches(images(im.name), centre, A, g, w)
        c, _, zncc = align_patches(query, templates, c0[n], A0[n], g, w, conf)
        shift = torch.linalg.norm(c - c0[n], dim=1)
        ok = (zncc >= conf["min_correlation"]) & (shift <= conf["max_shift"] * sigma[n]) & torch.isfinite(c).all(1)
        idx = torch.from_numpy(n)[ok]
        total.index_add_(0, idx, c[ok])
        count.index_add_(0, idx, torch.ones(len(idx), dtype=torch.float64))
    out = c0.clone()
    moved = count > 0
    out[moved] = total[moved] / count[moved, None]
    return out.numpy(), count.numpy()


def refine(T_map_camera: np.ndarray, xy: np.ndarray, xyz: np.ndarray, K: np.ndarray, size) -> np.ndarray:
    """pycolmap's pose refinement (the localizer's last step) from T_map_camera on all given points."""
    camera = pycolmap.Camera(model="PINHOLE", width=size[0], height=size[1],
                             params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])
    T = invert(T_map_camera)
    start = pycolmap.Rigid3d(pycolmap.Rotation3d(T[:3, :3]), T[:3, 3])
    ret = pycolmap.refine_absolute_pose(start, xy, xyz, np.ones(len(xy), bool), camera)
    return T_map_camera if ret is None else invert(ret["cam_from_world"].matrix())


def run_set(map_dir: str, mapping_bag: str, bag: str, features: str, views: int) -> tuple[dict, tuple, dict]:
    """{"shipped", "control", "aligned": (Q, 2) errors, inf where not localized}, the scaled thresholds,
    and counts of the alignments."""
    scene = load_map(map_dir, features)
    thresholds = scaled_thresholds(scene_depth(scene))
    index = observations_by_point(scene)
    images = MapImages(mapping_bag)
    names = {im.name: i for i, im in enumerate(scene.images)}
    localizer = Localizer(scene)
    conf = dict(default_conf)
    frames = [f for f in read_frames(bag, pose_topic="/ground_truth/pose") if f.T_map_camera is not None]
    errors = {k: np.full((len(frames), 2), np.inf) for k in ("shipped", "control", "aligned")}
    stats = {"inliers": 0, "aligned": 0, "shift_px": []}
    for qi, f in enumerate(frames):
        gray = to_gray(f.image())
        r = localizer(gray, f.camera)
        if not r.success:
            continue
        errors["shipped"][qi] = pose_error(r.T_map_camera, f.T_map_camera)
        inl = r.inliers
        kp, xyz, pids = r.match_keypoints[inl], r.match_xyz[inl], r.match_point_ids[inl]
        rank = {names[n]: j for j, n in enumerate(r.retrieved)}
        xy_aligned, counted = aligned_keypoints(gray, r.features, kp, pids, scene, index, images, rank, views, conf)
        size = (f.camera.width, f.camera.height)
        xy0 = f.camera.undistort_points(r.features.keypoints[kp])
        xy1 = f.camera.undistort_points(xy_aligned)
        errors["control"][qi] = pose_error(refine(r.T_map_camera, xy0, xyz, f.camera.K, size), f.T_map_camera)
        errors["aligned"][qi] = pose_error(refine(r.T_map_camera, xy1, xyz, f.camera.K, size), f.T_map_camera)
        stats["inliers"] += len(kp)
        stats["aligned"] += int((counted > 0).sum())
        stats["shift_px"].append(np.linalg.norm(xy_aligned - r.features.keypoints[kp], axis=1)[counted > 0])
    return errors, thresholds, stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", required=True, metavar="MAP:MAPPING_BAG:QUERY_BAG")
    ap.add_argument("--features", nargs="+", default=["lift", "sift"])
    ap.add_argument("--views", type=int, default=3, help="map views each inlier is aligned to (default 3)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for features in a.features:
        pooled: dict[str, list] = {k: [] for k in ("shipped", "control", "aligned")}
        hits: dict[str, list] = {k: [] for k in pooled}
        for spec in a.sets:
            parts = spec.split(":")
            if len(parts) != 3:
                ap.error(f"{spec}: give MAP:MAPPING_BAG:QUERY_BAG")
            try:
                errors, thresholds, st = run_set(*parts, features, a.views)
            except (MapError, OSError, ValueError) as e:
                print(f"error: {spec}: {e}", file=sys.stderr)
                return 2
            shift = np.concatenate(st["shift_px"]) if st["shift_px"] else np.zeros(0)
            print(f"{features} {Path(parts[0]).name}: {np.isfinite(errors['shipped'][:, 0]).sum()} of "
                  f"{len(errors['shipped'])} localized; {st['aligned']} of {st['inliers']} inliers aligned, "
                  f"median shift {np.median(shift) if len(shift) else 0:.3f} px", flush=True)
            for k, err in errors.items():
                pooled[k].append(err)
                hits[k].append(np.stack([within(err, t) for t in thresholds], 1))
        control = np.concatenate(pooled["control"])
        control_hits = np.concatenate(hits["control"])
        print(f"{features}, {len(control)} queries; against the control: won / lost / tied at 0.8, 0.3, "
              f"0.1 % of the depth (recall difference [95 %]); translation error ratio [95 %]")
        for name in ("shipped", "aligned"):
            err, hit = np.concatenate(pooled[name]), np.concatenate(hits[name])
            rows = [paired_row(hit[:, j], control_hits[:, j], (0.0, 0.0)) for j in range(hit.shape[1])]
            ratio, n = error_ratio(err[:, 0], control[:, 0])
            cells = "  ".join(f"{r.won} / {r.lost} / {r.tied} ({100 * (r.recall_a - r.recall_b):+.1f} % "
                              f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}])" for r in rows)
            print(f"  {name:8s} {cells}   ×{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}] (n = {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
