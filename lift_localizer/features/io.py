"""The features HDF5 file of DESIGN.md: one group per image, named by the image's path as given.

Datasets: keypoints (N, 2) float32 x y in pixels ((0, 0) = centre of the top-left pixel),
scales (N,) float32 OpenCV keypoint size in pixels, orientations (N,) float32 radians,
scores (N,) float32, descriptors (N, 128) float32. Group attributes: image_size (H, W).
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from .types import Features

DATASETS = ("keypoints", "scales", "orientations", "scores", "descriptors")
FILE_ATTRS = {
    "format": "lift_localizer features",
    "format_version": 1,
    "scale_convention": "OpenCV keypoint size (diameter, 2 sigma) in pixels; descriptor support is 6x it",
    "orientation_convention": "radians, direction of the patch x axis in the image (x right, y down)",
}


def write_features(file: h5py.File, name: str, features: Features, attrs: dict | None = None) -> None:
    """Write (or replace) the group ``name`` in an open HDF5 file."""
    if name in file:
        del file[name]
    group = file.create_group(name)
    for key in DATASETS:
        group.create_dataset(key, data=np.asarray(getattr(features, key), dtype=np.float32))
    group.attrs["image_size"] = np.asarray(features.image_size, dtype=np.int64)
    for k, v in (attrs or {}).items():
        group.attrs[k] = v


def open_for_writing(path: str | Path, attrs: dict | None = None) -> h5py.File:
    """Open (append to) a features file and stamp the format attributes."""
    file = h5py.File(path, "a")
    for k, v in {**FILE_ATTRS, **(attrs or {})}.items():
        file.attrs[k] = v
    return file


def read_features(path: str | Path, name: str) -> Features:
    with h5py.File(path, "r") as f:
        if name not in f:
            raise KeyError(f"{path}: no features for {name!r}")
        g = f[name]
        arrays = {k: np.asarray(g[k]) for k in DATASETS}
        size = tuple(int(v) for v in g.attrs.get("image_size", (0, 0)))
    return Features(**arrays, image_size=size)


def list_images(path: str | Path) -> list[str]:
    """Names of all image groups (those holding a 'keypoints' dataset), at any depth."""
    names: list[str] = []
    with h5py.File(path, "r") as f:
        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Group) and "keypoints" in obj:
                names.append(name)
        f.visititems(visit)
    return names
