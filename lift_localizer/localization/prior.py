"""The prior position that limits a query's retrieval to an area (``retrieval.area``): the last
accepted pose of a sequence, or a position a user gives, until it is too old or the queries it
limits keep failing; then a cold start searches the whole map.

    prior = PosePrior(timeout_s=10.0, max_failures=3)
    position, why = prior.take(stamp_s)             # None (and why) for a cold start
    result = localizer.localize_features(q, camera, prior=position)
    prior.update(result, stamp_s)
"""
from __future__ import annotations

import numpy as np

from ..retrieval.area import LIMITED
from .options import PRIOR_MAX_FAILURES, PRIOR_TIMEOUT_S


class PosePrior:
    """Where the camera was last known to be. ``timeout_s``: a prior more than this many seconds
    (of image stamps) older than the query is dropped (0: never); ``max_failures``: after this many
    area-limited queries in a row have failed, it is dropped (0: never). Not thread-safe: the node's
    worker holds its own lock around it."""

    def __init__(self, timeout_s: float = PRIOR_TIMEOUT_S, max_failures: int = PRIOR_MAX_FAILURES) -> None:
        self.timeout_s, self.max_failures = timeout_s, max_failures
        self.position: np.ndarray | None = None
        self.stamp_s: float | None = None
        self.source = ""
        self.failures = 0
        self.dropped = "no prior yet"

    def set(self, position: np.ndarray, stamp_s: float | None, source: str) -> None:
        """A new prior: ``position`` (3,) or a 4×4 T_map_camera, in the map frame; ``stamp_s`` the
        stamp it holds at (None: from the next query on, whatever its stamp)."""
        position = np.asarray(position, np.float64)
        position = position[:3, 3] if position.shape == (4, 4) else position.reshape(-1)
        if position.shape != (3,) or not np.all(np.isfinite(position)):
            raise ValueError(f"a prior is a finite 3-D position or 4×4 pose, got shape {np.shape(position)}")
        self.position, self.stamp_s, self.source, self.failures = position.copy(), stamp_s, source, 0

    def clear(self, why: str) -> None:
        self.position, self.stamp_s, self.failures, self.dropped = None, None, 0, why

    def take(self, stamp_s: float | None) -> tuple[np.ndarray | None, str]:
        """The prior for a query stamped ``stamp_s`` (None: unknown, no age test), or None and why
        the query is a cold start."""
        if self.position is None:
            return None, self.dropped
        if self.stamp_s is None:
            self.stamp_s = stamp_s   # a prior given without a stamp ages from the first query after it
        elif stamp_s is not None and self.timeout_s > 0:
            age = stamp_s - self.stamp_s
            if age < 0:
                self.clear(f"the image stamps went back {-age:.3g} s past the prior's")
            elif age > self.timeout_s:
                self.clear(f"the prior ({self.source}) is {age:.3g} s old (prior_timeout_s {self.timeout_s:g})")
            if self.position is None:
                return None, self.dropped
        return self.position, self.source

    def update(self, result, stamp_s: float | None, accepted: bool | None = None) -> None:
        """After a query: its accepted pose becomes the prior; a failed area-limited query counts
        towards ``max_failures``. ``result``: the ``LocalizationResult``; ``accepted``: whether its pose
        is taken (default: ``result.success``; the node's jump gate may hold a successful one)."""
        accepted = result.success if accepted is None else accepted
        if accepted:
            self.set(result.T_map_camera, stamp_s, "the last accepted pose")
        elif not result.success and result.area is not None and result.area.mode == LIMITED:
            self.failures += 1
            if self.max_failures and self.failures >= self.max_failures:
                self.clear(f"{self.failures} area-limited queries failed in a row")
