"""The features of a map build's images, kept on disk while the build runs: the build's process
holds each image's keypoints (the triangulation reads them all) and reads the rest back one image
at a time, for matching, the global index and the map's features file. Its memory then grows by
~16 KB an image at 2000 keypoints instead of ~1 MB (the descriptors), so that the process that
drives a build of 100 000 images on a cluster (``build-map --ray``) fits one machine.

    with FeatureSpool(directory / "lift.h5") as spool:
        spool.append(features)            # in image order
        spool[3]                          # Features of image 3, read back
        spool.descriptors[0:16]           # a batch of descriptor arrays, read back
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from ..features.io import DATASETS, write_features
from ..features.types import Features


# glibc's mallopt parameter, and its initial value of it.
_M_MMAP_THRESHOLD = -3
_GLIBC_INITIAL_MMAP_THRESHOLD = 128 * 1024


@functools.cache
def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at its initial 128 KB (True where it was set). glibc raises it to
    the size of any mapped block that is freed; once the spool frees an image's ~1 MB of features,
    the extractor's buffers below that size come from the heap, which fragments: a 315-image build
    grew by 3.4 MB an image where it grows by the 0.5 MB of features it keeps without a spool.
    Setting it fixes it, and blocks of 128 KB or more are mapped and given back when freed."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_INITIAL_MMAP_THRESHOLD))
    except (OSError, AttributeError):   # not glibc (musl, macOS): their allocators do not do this
        return False


class FeatureSpool(Sequence):
    """Features appended in image order to a scratch HDF5 file (created, and removed on ``close``);
    ``spool[k]`` reads image k's back, equal to what was appended (float32 arrays, image size;
    extraction timings are not kept)."""

    def __init__(self, path: str | Path) -> None:
        fix_mmap_threshold()
        self.path = Path(path)
        self._file = h5py.File(self.path, "w")
        self.keypoints: list[np.ndarray] = []
        self.descriptors = _Descriptors(self)

    def append(self, features: Features) -> None:
        write_features(self._file, str(len(self.keypoints)), features)
        self.keypoints.append(np.asarray(features.keypoints, np.float32))

    def __len__(self) -> int:
        return len(self.keypoints)

    def __getitem__(self, k):   # int → Features; a slice → list of Features
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        g = self._group(k)
        arrays = {key: g[key][()] for key in DATASETS}
        return Features(**arrays, image_size=tuple(int(v) for v in g.attrs["image_size"]))

    def _group(self, k: int) -> h5py.Group:
        if not -len(self) <= k < len(self):
            raise IndexError(f"image {k} of {len(self)}")
        return self._file[str(k % len(self))]

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FeatureSpool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Descriptors(Sequence):
    """The spool's (N, D) descriptor arrays, image by image, read back on access."""

    def __init__(self, spool: FeatureSpool) -> None:
        self._spool = spool

    def __len__(self) -> int:
        return len(self._spool)

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        return self._spool._group(k)["descriptors"][()]
