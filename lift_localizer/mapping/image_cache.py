"""A bounded, least-recently-used cache of what localization reads of a map image: its keypoints
that have a 3D point, their descriptors and point ids.

A building's map holds tens of thousands of images at ~1 MB of features each; a query needs only
the few that retrieval returns. The cache keeps the images retrieved last, up to ``capacity``,
and says how many bytes it holds (for diagnostics and the scale benchmark).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Map images kept in memory by default: every map built so far is smaller, so it stays fully cached
# (at 2000 keypoints per image, ~0.4 GB when all are held).
DEFAULT_CACHE_IMAGES = 1000


@dataclass(frozen=True)
class Observations:
    """A map image's keypoints that have a 3D point: (K, 2) pixels, (K, D) descriptors, (K,) point ids."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    point3D_ids: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.keypoints.nbytes + self.descriptors.nbytes + self.point3D_ids.nbytes


class ImageCache:
    """``get(i)`` returns ``load(i)``, kept for the ``capacity`` images asked for last; thread-safe
    (the node's worker reads while its diagnostics timer asks for the size)."""

    def __init__(self, load: Callable[[int], Observations], capacity: int = DEFAULT_CACHE_IMAGES) -> None:
        if capacity < 1:
            raise ValueError(f"a map image cache holds at least one image, not {capacity}")
        self._load = load
        self._capacity = capacity
        self._entries: OrderedDict[int, Observations] = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def resize(self, capacity: int) -> None:
        """Hold at most ``capacity`` images from now on, dropping the least recently used ones."""
        if capacity < 1:
            raise ValueError(f"a map image cache holds at least one image, not {capacity}")
        with self._lock:
            self._capacity = capacity
            self._evict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, i: int) -> Observations:
        with self._lock:
            entry = self._entries.get(i)
            if entry is not None:
                self._entries.move_to_end(i)
                self.hits += 1
                return entry
        # Read outside the lock: a read takes milliseconds and a diagnostics call must not wait for it.
        entry = self._load(i)
        with self._lock:
            self.misses += 1
            if i not in self._entries:
                self._entries[i] = entry
                self.nbytes += entry.nbytes
                self._evict()
        return entry

    def _evict(self) -> None:
        while len(self._entries) > self._capacity:
            _, old = self._entries.popitem(last=False)
            self.nbytes -= old.nbytes
