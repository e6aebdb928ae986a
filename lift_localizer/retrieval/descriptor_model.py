"""Synthetic global descriptors for the retrieval benchmark, and how they compare with real ones.

A map of N images is modelled as places (IMAGES_PER_PLACE images each, as a sequence that passes
each place) and images around their place, unit vectors; queries are new images of the same places.

- ``DescriptorModel.clustered``: places at random in every direction, images at half a place's length
  around them: tight clusters far apart.
- ``fit_seeded``: places around the mean of real NetVLAD descriptors (maps' ``global.h5``), spread along
  the directions in which the real ones differ plus some spread in every direction, images around their
  place; the two spreads are chosen so that two random images and two images of one place are as
  similar as the real descriptors' are (``similarity_stats``; in a real map, two consecutive mapping
  images stand for one place).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .retriever import GLOBAL_FILE, check_hdf5

IMAGES_PER_PLACE = 50


def normalised(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class DescriptorModel:
    """Place vectors: ``mean`` + a random mix of the rows of ``directions`` + ``place_noise`` × ``scale``
    in every direction; images: their place + ``image_noise`` × ``scale`` in every direction."""

    mean: np.ndarray
    directions: np.ndarray   # (R, dim); R = 0: no preferred directions
    place_noise: float
    image_noise: float
    scale: float

    @classmethod
    def clustered(cls, dim: int) -> DescriptorModel:
        """Places in random directions (unit normal per dimension), images at noise 0.5 around them."""
        return cls(np.zeros(dim), np.zeros((0, dim)), 1.0, 0.5, 1.0)

    def places(self, count: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        dim = len(self.mean)
        out = self.mean + self.place_noise * self.scale * rng.normal(size=(count, dim))
        if len(self.directions):
            out += rng.normal(size=(count, len(self.directions))) @ self.directions / np.sqrt(len(self.directions))
        return out

    def images(self, places: np.ndarray, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(N, dim) unit descriptors of images of ``places``, and each one's place."""
        rng = np.random.default_rng(seed)
        place = rng.integers(0, len(places), n)
        return normalised(places[place] + self.image_noise * self.scale * rng.normal(size=(n, len(self.mean)))), place

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A map of N images: (descriptors, each one's place, the place vectors)."""
        places = self.places(max(n // IMAGES_PER_PLACE, 1), seed)
        x, place = self.images(places, n, seed + 1)
        return x, place, places


def read_real(map_dirs: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The NetVLAD descriptors of the maps' images (each map's ``global.h5``), and each one's map index."""
    out, owner = [], []
    for k, directory in enumerate(map_dirs):
        path = Path(directory) / GLOBAL_FILE
        with h5py.File(path, "r") as f:
            check_hdf5(f)
            desc = f.get("descriptors")
            if not isinstance(desc, h5py.Dataset) or desc.ndim != 2 or desc.dtype.kind != "f":
                raise ValueError(f"{path}: no (N, E) float descriptors")
            out.append(np.asarray(desc[()], np.float32))
            owner.append(np.full(len(out[-1]), k))
    if len({d.shape[1] for d in out}) != 1:
        raise ValueError("the maps' global descriptors differ in size")
    return normalised(np.concatenate(out)), np.concatenate(owner)


def similarity_stats(x: np.ndarray, same_place: np.ndarray) -> dict[str, float]:
    """Cosine similarity of two random images (median and 99th percentile over pairs) and of two
    images of one place (median); ``same_place``: (P, 2) index pairs of images of one place."""
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(x), (2, 20000))
    keep = a != b
    pairs = np.einsum("ij,ij->i", x[a[keep]], x[b[keep]])
    same = np.einsum("ij,ij->i", x[same_place[:, 0]], x[same_place[:, 1]])
    return {"random_pair_cos_median": float(np.median(pairs)), "random_pair_cos_p99": float(np.percentile(pairs, 99)),
            "same_place_cos_median": float(np.median(same))}


def real_same_place(owner: np.ndarray) -> np.ndarray:
    """Consecutive images of one map: a mapping sequence's neighbours see the same place."""
    i = np.flatnonzero(owner[1:] == owner[:-1])
    return np.stack([i, i + 1], 1)


def synthetic_same_place(place: np.ndarray, limit: int = 5000) -> np.ndarray:
    """Pairs of images of one place (neighbours in the order sorted by place)."""
    order = np.argsort(place, kind="stable")
    i = np.flatnonzero(place[order][1:] == place[order][:-1])[:limit]
    return np.stack([order[i], order[i + 1]], 1)


def fit_seeded(real: np.ndarray, owner: np.ndarray) -> tuple[DescriptorModel, dict[str, float]]:
    """The model seeded from ``real`` (its mean, and its differences from the mean as the places'
    directions) whose two noises best reproduce ``real``'s median similarities of random pairs and of
    one place's images (a grid search), and ``real``'s statistics."""
    target = similarity_stats(real, real_same_place(owner))
    mean = real.mean(0)
    directions = real - mean
    scale = float(np.sqrt(np.mean(directions ** 2)))   # the real spread per dimension
    keys = ("random_pair_cos_median", "same_place_cos_median")
    best, best_err = None, np.inf
    for place_noise in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0):
        for image_noise in (0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0):
            model = DescriptorModel(mean, directions, place_noise, image_noise, scale)
            x, place, _ = model.sample(4000, seed=7)
            got = similarity_stats(x, synthetic_same_place(place))
            err = sum((got[k] - target[k]) ** 2 for k in keys)
            if err < best_err:
                best, best_err = model, err
    return best, target
