"""A large map made from a real one, for the scale benchmark: the real map's images and points
copied under rigid transforms, so that retrieval and matching do the work of a building-sized map.

Copy 0 is the real map itself; copy r > 0 moves every pose and point by its own rigid transform (a
random rotation, and a translation on a grid spaced three times the map's extent, so copies never
overlap), renumbers its points, and perturbs every descriptor by ``noise`` × its length in a random
direction (then rescaled to its length): each copy is a place that looks like the real one without
being it, and the real queries are hidden among them. The map is written with the normal map writer
(one image at a time, so a map larger than memory can be written) and gets the NetVLAD index its
images' descriptors give, as ``build-map`` writes it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ..features.types import Features
from ..geometry.pose import make_T, rodrigues
from ..mapping.io import MapImage, load_map, open_hdf5, write_map
from ..retrieval.index import build_index
from ..retrieval.retriever import compatible_model, global_descriptors, model_ref, write_retrieval_files

# Images per NetVLAD batch while the global descriptors of the copies are computed.
BATCH = 64


@dataclass
class BaseMap:
    """A real map read whole: its images (features and point ids in memory) and its points."""

    meta: dict
    images: list[MapImage]
    ids: np.ndarray
    xyz: np.ndarray
    errors: np.ndarray
    track_lengths: np.ndarray


def read_base(map_dir: Path) -> BaseMap:
    """The map at ``map_dir`` (checked by ``load_map``) with every image's features in memory."""
    with load_map(map_dir) as m:
        images = [MapImage(im.name, im.camera, im.T_map_camera, im.features, im.point3D_ids) for im in m.images]
        with open_hdf5(m.path, "points.h5") as f:
            extra = [np.asarray(f[key][()]) if isinstance(f.get(key), h5py.Dataset) and f[key].shape == m.point_ids.shape
                     else np.zeros(len(m.point_ids)) for key in ("error", "track_length")]
        meta = {k: v for k, v in m.meta.items() if k not in ("format", "format_version", "image_names", "retrieval")}
        return BaseMap(meta, images, m.point_ids, m.xyz, extra[0], extra[1].astype(np.int64))


def copy_transforms(base: BaseMap, copies: int, seed: int) -> list[np.ndarray]:
    """4×4 rigid transforms of the copies (the first the identity), on a grid with no overlap."""
    centres = np.array([im.T_map_camera[:3, 3] for im in base.images])
    everything = np.concatenate([centres, base.xyz]) if len(base.xyz) else centres
    spacing = 3.0 * max(float(np.ptp(everything, axis=0).max()), 1.0)
    side = math.ceil(math.sqrt(copies))
    rng = np.random.default_rng(seed)
    transforms = [np.eye(4)]
    for r in range(1, copies):
        axis_angle = rng.normal(size=3)
        cell = np.array([r % side, r // side, 0.0]) * spacing
        transforms.append(make_T(rodrigues(axis_angle), cell - everything.mean(0)))
    return transforms


def _perturbed(desc: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    if noise == 0 or len(desc) == 0:
        return desc
    norm = np.linalg.norm(desc, axis=1, keepdims=True)
    moved = desc + noise * norm * rng.normal(size=desc.shape).astype(np.float32) / math.sqrt(desc.shape[1])
    return (moved * norm / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class ReplicatedMap:
    """The first ``num_images`` images of the copies of ``base``, generated one at a time (the
    same image each time it is asked for: each copy's noise has a seed of its own)."""

    def __init__(self, base: BaseMap, num_images: int, noise: float, seed: int = 0) -> None:
        self.base, self.num_images, self.noise, self.seed = base, num_images, noise, seed
        self.copies = math.ceil(num_images / len(base.images))
        self.transforms = copy_transforms(base, self.copies, seed)
        self.stride = int(base.ids.max()) + 1 if len(base.ids) else 1

    def name(self, k: int) -> str:
        r, i = divmod(k, len(self.base.images))
        return self.base.images[i].name if r == 0 else f"copy{r}/{self.base.images[i].name}"

    def image(self, k: int) -> MapImage:
        r, i = divmod(k, len(self.base.images))
        im = self.base.images[i]
        if r == 0:
            return im
        f = im.features
        rng = np.random.default_rng([self.seed, r, i])
        features = Features(f.keypoints, f.scales, f.orientations, f.scores, _perturbed(f.descriptors, self.noise, rng),
                            image_size=f.image_size)
        pid = np.where(im.point3D_ids >= 0, im.point3D_ids + r * self.stride, -1)
        return MapImage(self.name(k), im.camera, self.transforms[r] @ im.T_map_camera, features, pid)

    def images(self) -> Iterator[MapImage]:
        return (self.image(k) for k in range(self.num_images))

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(ids, xyz, errors, track lengths) of every copy's points, ids increasing."""
        b = self.base
        ids = np.concatenate([b.ids + r * self.stride for r in range(self.copies)])
        xyz = np.concatenate([b.xyz @ T[:3, :3].T + T[:3, 3] for T in self.transforms])
        return ids, xyz, np.tile(b.errors, self.copies), np.tile(b.track_lengths, self.copies)

    def write(self, directory: Path, log=lambda message: None) -> None:
        """The map directory, with the NetVLAD index where a model fits the features."""
        meta = dict(self.base.meta)
        net, why = compatible_model(meta["features"])
        meta["retrieval"] = None
        directory.mkdir(parents=True, exist_ok=True)
        if net is None:
            log(f"note: no NetVLAD for these features ({why}); retrieval by descriptor votes")
        else:
            desc = np.concatenate([
                global_descriptors(net, [self.image(k).features.descriptors
                                         for k in range(start, min(start + BATCH, self.num_images))])
                for start in range(0, self.num_images, BATCH)])
            index, kind = build_index(desc)
            names = [self.name(k) for k in range(self.num_images)]
            meta["retrieval"] = {"method": "netvlad", "model": model_ref(net), "model_sha256": net.sha256,
                                 "index": kind, "dim": int(desc.shape[1]),
                                 **write_retrieval_files(directory, names, desc, index, net)}
        write_map(directory, meta, self.images(), *self.points())
