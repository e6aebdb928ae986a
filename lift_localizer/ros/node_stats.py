"""What the node counts, for /diagnostics (pure Python; the node turns it into a DiagnosticArray)."""
from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Mapping

import numpy as np

from ..reasons import Reason, reason_of
from ..retrieval.area import LIMITED, OFF

OK, WARN, ERROR = 0, 1, 2
STAGES = ("decode", "extract", "retrieve", "match", "pnp", "total")


class NodeStats:
    """Counters and recent per-stage timings; thread-safe (the worker writes, a timer reads)."""

    def __init__(self, window: int = 100) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[Reason] = Counter()
        self.last_failure = ""
        self.map_status = "no map loaded"
        self.map_ok = False
        self.warm_up = "not yet"
        self.area = "no image localized yet"
        self.lost_reported = True   # False where the RMW has no message-lost event
        self._timings = {s: deque(maxlen=window) for s in STAGES}
        self._latency = deque(maxlen=window)

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def failure(self, reason: str, counter: str = "failed") -> None:
        """``reason``: a ``Failure`` (or its text); counted by its ``Reason``, so the keys are a fixed set."""
        with self._lock:
            self.counts[counter] += 1
            self.reasons[reason_of(reason)] += 1
            self.last_failure = reason

    def set_map(self, ok: bool, status: str) -> None:
        with self._lock:
            self.map_ok, self.map_status = ok, status

    def set_warm_up(self, status: str) -> None:
        with self._lock:
            self.warm_up = status

    def retrieval_area(self, area, prior: str) -> None:
        """How the last image's retrieval chose its map images (a ``retrieval.area.AreaUse``, or None
        where it ended before retrieval) and ``prior``: where its prior came from, or why it had none."""
        if area is None:
            return
        with self._lock:
            self.area = area.describe(prior if area.mode != OFF else "")
            if area.mode != OFF:
                self.counts["area_limited" if area.mode == LIMITED else "whole_map"] += 1

    def processed(self, timings: dict[str, float], latency_s: float) -> None:
        with self._lock:
            for stage in STAGES:
                if stage in timings:
                    self._timings[stage].append(timings[stage])
            self._latency.append(latency_s)

    def report(self, dropped: int, jumps: Mapping[str, int] | None = None,
               cache=None, pending: int = 0) -> tuple[int, str, list[tuple[str, str]]]:
        """(level, message, key/value pairs); ``jumps``: the jump gate's counts (``JumpGate.counts``);
        ``cache``: the loaded map's image cache (``mapping.image_cache.ImageCache``), if any;
        ``pending``: frames received and not yet handled (``FrameSlot.pending``)."""
        jumps = jumps or {}
        with self._lock:
            c = self.counts
            values = [("map", self.map_status), ("warm_up", self.warm_up), ("frames_in", c["in"]),
                      ("frames_lost", c["lost"] if self.lost_reported else "not reported by this RMW"),
                      ("frames_pending", pending), ("frames_dropped", dropped),
                      ("frames_skipped_rate", c["skipped_rate"]), ("frames_processed", c["processed"]),
                      ("frames_localized", c["localized"]), ("frames_failed", c["failed"]),
                      ("frames_skipped_no_map", c["skipped_no_map"]),
                      ("frames_skipped_no_camera_info", c["skipped_no_camera_info"]),
                      ("bad_messages", c["bad"]), ("last_failure", self.last_failure or "none"),
                      ("retrieval_area", self.area), ("frames_area_limited", c["area_limited"]),
                      ("frames_whole_map", c["whole_map"]), ("initial_poses", c["initial_pose"]),
                      ("initial_poses_refused", c["initial_pose_refused"])]
            values += [(f"jump_{k}", n) for k, n in jumps.items()]
            if cache is not None:
                values += [("map_cache_images", f"{len(cache)}/{cache.capacity}"),
                           ("map_cache_mb", f"{cache.nbytes / 1e6:.1f}"),
                           ("map_cache_hits", cache.hits), ("map_cache_misses", cache.misses)]
            values += [(f"failures: {r.value}", n) for r, n in self.reasons.most_common()]
            for stage, times in self._timings.items():
                if times:
                    values.append((f"{stage}_ms_median", f"{1000 * np.median(times):.1f}"))
            if self._latency:
                lat = np.asarray(self._latency)
                values += [("latency_ms_median", f"{1000 * np.median(lat):.1f}"),
                           ("latency_ms_p90", f"{1000 * np.percentile(lat, 90):.1f}")]
            if not self.map_ok:
                level, message = ERROR, self.map_status
            elif c["processed"] == 0:
                level, message = WARN, "waiting for images" if c["in"] == 0 else f"no frame processed: {self.last_failure}"
            elif self.last_failure and c["localized"] == 0:
                level, message = WARN, f"not localized yet: {self.last_failure}"
            else:
                level, message = OK, f"{c['localized']}/{c['processed']} frames localized"
                if jumps.get("held"):
                    message += f", {jumps['held']} held as pose jumps"
        return level, message, [(k, str(v)) for k, v in values]
