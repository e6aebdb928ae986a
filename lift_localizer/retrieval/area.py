"""Retrieval limited to an area: the map images whose camera centre lies within a radius of a prior
position (the last accepted pose, or one a user gives). In a building- or campus-sized map this
leaves out the look-alike places far away, and retrieval scores a few hundred images instead of all.

    area = AreaIndex(centres)                      # (N, 3) camera centres in the map frame
    use = area.candidates(prior_xyz, radius_m)     # AreaUse: which images, and how they were chosen
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# How a query's retrieval chose its map images (``AreaUse.mode``).
OFF = "off"                         # no radius set: the whole map
LIMITED = "limited"                 # the map images within the radius of the prior
COLD_START = "cold start"           # a radius is set but no prior was given: the whole map
NONE_NEAR = "none near the prior"   # no map image within the radius: the whole map


@dataclass(frozen=True)
class AreaUse:
    """How one query's retrieval chose its map images: ``ids`` the candidates (None: the whole map)."""

    mode: str
    ids: np.ndarray | None = None
    radius_m: float = 0.0
    map_images: int = 0

    def describe(self, prior: str = "") -> str:
        """One line for logs and /diagnostics; ``prior``: where the prior came from, or why there was none."""
        why = f" ({prior})" if prior else ""
        if self.mode == LIMITED:
            return (f"limited: {len(self.ids)} of {self.map_images} map images within {self.radius_m:g} m "
                    f"of the prior{why}")
        if self.mode == NONE_NEAR:
            return f"whole map: no map image within {self.radius_m:g} m of the prior{why}"
        if self.mode == COLD_START:
            return f"whole map: cold start{why or ' (no prior)'}"
        return "whole map (no radius set)"


class AreaIndex:
    """Map images by camera centre. A vectorised distance over every centre: 100 000 images take
    about a millisecond, small beside a query's matching, and need no index kept in step with the map."""

    def __init__(self, centres: np.ndarray) -> None:
        centres = np.asarray(centres, np.float64)
        if centres.ndim != 2 or centres.shape[1] != 3 or not np.all(np.isfinite(centres)):
            raise ValueError(f"camera centres must be a finite (N, 3) array, got shape {centres.shape}")
        self.centres = centres

    def within(self, position: np.ndarray, radius_m: float) -> np.ndarray:
        """Indices (increasing) of the map images whose centre is at most ``radius_m`` from ``position``."""
        d = self.centres - np.asarray(position, np.float64).reshape(1, 3)
        return np.flatnonzero(np.einsum("ij,ij->i", d, d) <= radius_m * radius_m)

    def candidates(self, position: np.ndarray | None, radius_m: float) -> AreaUse:
        """The area a query's retrieval searches: off for radius 0, the whole map without a prior
        (cold start) or where no image lies within the radius, else the images within it."""
        n = len(self.centres)
        if radius_m <= 0:
            return AreaUse(OFF, None, 0.0, n)
        if position is None:
            return AreaUse(COLD_START, None, radius_m, n)
        position = np.asarray(position, np.float64).reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"a prior position is 3 finite numbers, got {position!r}")
        ids = self.within(position, radius_m)
        if len(ids) == 0:
            return AreaUse(NONE_NEAR, None, radius_m, n)
        return AreaUse(LIMITED, ids, radius_m, n)
