"""Which camera frames the node localizes: at most ``max_rate_hz`` of them, and the next one at
once after ``~/relocalize`` (pure Python; the node calls it from its callbacks and its worker).

The node localizes every image from scratch (features, retrieval over the whole map, PnP): no pose
prior or tracking state is carried from one image to the next. The state between frames is this
gate's (when the last frame was let through, and a pending relocalization) and, for what is
published rather than what is localized, the jump gate's last map→odom (``jump_gate.JumpGate``).
"""
from __future__ import annotations

import threading


class FrameGate:
    """Admits frames at most ``max_rate_hz`` a second; ``relocalize`` lets the next one through at
    once and restarts the rate limit from it. Thread-safe (executor callbacks and the worker)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_admitted: float | None = None
        self._tickets = 0
        # The first ticket that answers a pending relocalization (None: none pending).
        self._relocalize_from: int | None = None

    def admit(self, now: float, max_rate_hz: float) -> int | None:
        """A ticket (increasing) for the frame received at ``now`` (monotonic seconds), or None
        when the rate limit drops it."""
        with self._lock:
            limited = max_rate_hz > 0 and self._last_admitted is not None \
                and now - self._last_admitted < 1.0 / max_rate_hz
            if limited:
                return None
            self._last_admitted = now
            self._tickets += 1
            return self._tickets

    def relocalize(self) -> str:
        """Let the next frame through whatever the rate limit says, and forget the rate limit's
        clock; returns what was done, for the service's reply."""
        with self._lock:
            self._last_admitted = None   # no clock: the next frame is not rate-limited
            self._relocalize_from = self._tickets + 1
        return ("relocalizing: the next image is localized at once (max_rate_hz does not hold it back) and the "
                "rate limit restarts from it; every image is localized against the whole map with no pose "
                "carried over from earlier ones")

    def starting(self, ticket: int) -> bool:
        """The worker is about to localize the frame of ``ticket``: True when it is the one that
        answers a pending relocalization (once; a newer frame that replaced it in the queue also
        answers it)."""
        with self._lock:
            if self._relocalize_from is None or ticket < self._relocalize_from:
                return False
            self._relocalize_from = None
            return True
