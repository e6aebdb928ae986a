"""The map directory of DESIGN.md: write it atomically, load it with checks.

    MAP_DIR/map.json      format version, features (name, weights hashes), parameters, statistics
    MAP_DIR/sparse/       COLMAP model (cameras, images with poses, points3D) for COLMAP/hloc users
    MAP_DIR/features.h5   per image: keypoints, scales, orientations, scores, descriptors,
                          point3D_ids (−1: none); attrs image_size, camera, T_map_camera
    MAP_DIR/points.h5     ids, xyz, error, track_length — what localization needs, readable with
                          h5py alone (no pycolmap on Jetson)
    MAP_DIR/alt/<name>/   the same map with other features (e.g. SIFT) for side-by-side evaluation
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from ..features.io import FILE_ATTRS, write_features
from ..features.lift import Features
from ..geometry.camera import Camera

MAP_FORMAT = "lift_localizer map"
MAP_FORMAT_VERSION = 1
ALT_DIR = "alt"


class MapError(ValueError):
    """A map directory that cannot be used; the message names the directory and the problem."""


@dataclass
class MapImage:
    name: str
    camera: Camera
    T_map_camera: np.ndarray
    features: Features
    point3D_ids: np.ndarray


@dataclass
class Map:
    """A loaded map: images with features and 3D point ids, and the 3D points."""

    path: Path
    meta: dict
    images: list[MapImage]
    point_ids: np.ndarray
    xyz: np.ndarray
    _index: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {int(p): i for i, p in enumerate(self.point_ids)}

    @property
    def features_name(self) -> str:
        return self.meta["features"]["name"]

    def points_xyz(self, ids: np.ndarray) -> np.ndarray:
        """(N,) point ids → (N, 3) coordinates."""
        rows = np.fromiter((self._index[int(i)] for i in ids), np.int64, len(ids))
        return self.xyz[rows]

    def alternates(self) -> list[str]:
        return list_alternates(self.path)


def list_alternates(path: str | Path) -> list[str]:
    """Names of the other feature sets stored with a map (``MAP_DIR/alt/<name>``)."""
    alt = Path(path) / ALT_DIR
    return sorted(p.name for p in alt.iterdir() if (p / "map.json").exists()) if alt.is_dir() else []


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it only when the block succeeds, so a
    crash or an error never leaves a half-written map that looks valid."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_map(directory: Path, meta: dict, images: list[MapImage], point_ids: np.ndarray, xyz: np.ndarray,
              errors: np.ndarray, track_lengths: np.ndarray, reconstruction=None) -> None:
    """Write a map into an (empty, usually temporary) directory."""
    directory.mkdir(parents=True, exist_ok=True)
    if reconstruction is not None:
        (directory / "sparse").mkdir(exist_ok=True)
        reconstruction.write_binary(str(directory / "sparse"))
    with h5py.File(directory / "features.h5", "w") as f:
        for k, v in FILE_ATTRS.items():
            f.attrs[k] = v
        f.attrs["features"] = json.dumps(meta["features"])
        for im in images:
            write_features(f, im.name, im.features, {
                "camera": json.dumps(im.camera.to_dict()),
                "T_map_camera": np.asarray(im.T_map_camera, np.float64),
            })
            f[im.name].create_dataset("point3D_ids", data=np.asarray(im.point3D_ids, np.int64))
    with h5py.File(directory / "points.h5", "w") as f:
        f.create_dataset("ids", data=np.asarray(point_ids, np.int64))
        f.create_dataset("xyz", data=np.asarray(xyz, np.float64).reshape(-1, 3))
        f.create_dataset("error", data=np.asarray(errors, np.float64))
        f.create_dataset("track_length", data=np.asarray(track_lengths, np.int64))
    meta = {"format": MAP_FORMAT, "format_version": MAP_FORMAT_VERSION, **meta,
            "image_names": [im.name for im in images]}
    (directory / "map.json").write_text(json.dumps(meta, indent=1))


def read_meta(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MapError(f"{path}: no such map directory")
    if not (path / "map.json").is_file():
        raise MapError(f"{path}: not a map (no map.json; build one with `lift-localizer build-map`)")
    try:
        meta = json.loads((path / "map.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MapError(f"{path}/map.json: unreadable or corrupt ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != MAP_FORMAT:
        raise MapError(f"{path}/map.json: not a lift_localizer map")
    if meta.get("format_version") != MAP_FORMAT_VERSION:
        raise MapError(f"{path}: map format version {meta.get('format_version')}, this lift_localizer reads "
                       f"version {MAP_FORMAT_VERSION}; rebuild the map with `lift-localizer build-map`")
    return meta


def resolve(path: str | Path, features: str | None = None) -> Path:
    """The map directory holding ``features`` ('lift', 'sift', …): the map itself or one of its alternates."""
    path = Path(path)
    meta = read_meta(path)
    if features is None or meta["features"]["name"] == features:
        return path
    alt = path / ALT_DIR / features
    if (alt / "map.json").exists():
        return alt
    have = [meta["features"]["name"], *list_alternates(path)]
    raise MapError(f"{path}: no {features!r} features in this map (it has {', '.join(have)}); "
                   f"build it with `lift-localizer build-map --features {' '.join(sorted({*have, features}))}`")


def load_map(path: str | Path, features: str | None = None) -> Map:
    """Load a map directory (or its alternate with other features). Raises MapError."""
    path = resolve(path, features)
    meta = read_meta(path)
    try:
        with h5py.File(path / "points.h5", "r") as f:
            ids, xyz = np.asarray(f["ids"], np.int64), np.asarray(f["xyz"], np.float64)
        images = []
        with h5py.File(path / "features.h5", "r") as f:
            for name in meta["image_names"]:
                g = f[name]
                feats = Features(*(np.asarray(g[k]) for k in ("keypoints", "scales", "orientations", "scores",
                                                             "descriptors")),
                                 image_size=tuple(int(v) for v in g.attrs["image_size"]))
                images.append(MapImage(name, Camera.from_dict(json.loads(g.attrs["camera"])),
                                       np.asarray(g.attrs["T_map_camera"], np.float64).reshape(4, 4), feats,
                                       np.asarray(g["point3D_ids"], np.int64)))
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise MapError(f"{path}: corrupt or incomplete map ({type(e).__name__}: {e})") from None
    if xyz.shape != (len(ids), 3):
        raise MapError(f"{path}/points.h5: xyz has shape {xyz.shape} for {len(ids)} ids")
    known = set(ids.tolist())
    for im in images:
        used = im.point3D_ids[im.point3D_ids >= 0]
        if len(im.point3D_ids) != len(im.features) or not known.issuperset(used.tolist()):
            raise MapError(f"{path}: image {im.name!r} refers to 3D points the map does not have")
    return Map(path, meta, images, ids, xyz)
