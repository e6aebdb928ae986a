"""A one-slot queue between the executor and the worker: the newest frame wins.

The executor's callbacks only ``put``; the worker ``take``s, and says ``done`` when the frame it took
is handled. A frame still waiting when a newer one
arrives is dropped and counted, so a slow CPU lowers the processed rate but never builds a backlog
(latency stays one frame's processing time).
"""
from __future__ import annotations

import threading
from typing import Any


class FrameSlot:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._closed = False
        self._in_hand = False
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store ``item``, replacing a waiting one; True when one was replaced (dropped)."""
        with self._cond:
            replaced = self._item is not None
            self.dropped += replaced
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> Any:
        """The waiting item (and empty the slot), or None after ``timeout`` seconds or on close."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            self._in_hand = self._in_hand or item is not None
            return item

    def done(self) -> None:
        """The frame last taken is handled (processed, refused or failed)."""
        with self._cond:
            self._in_hand = False

    @property
    def pending(self) -> int:
        """Frames put and not yet done: the one waiting, if any, and the one in the worker's hands."""
        with self._cond:
            return int(self._item is not None) + int(self._in_hand)

    def wake(self) -> None:
        """Make a waiting ``take`` return (None when the slot is empty) without closing."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
