"""The node's log, kept short: each problem once per cause (again at most every ``LOG_REPEAT_S``),
set-up warnings once. Causes are a fixed set (``reasons.Reason`` or a short string), their details
apart, so a stream of distinct bad messages never grows the log. rclpy-free: any logger with
``info``, ``warning`` and ``error`` (rclpy's, or ``logging``'s) will do.
"""
from __future__ import annotations

import time
from typing import Hashable, Protocol

LOG_REPEAT_S = 30.0


class Logger(Protocol):
    def info(self, message: str) -> object: ...
    def warning(self, message: str) -> object: ...
    def error(self, message: str) -> object: ...


class CauseLog:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger
        self._logged: dict[Hashable, float] = {}
        self._logged_once: set[Hashable] = set()

    def info(self, text: str) -> None:
        self.logger.info(text)

    def cause(self, cause: Hashable, text: str, error: bool = False) -> None:
        """Log once per cause, then again at most every LOG_REPEAT_S seconds."""
        now = time.monotonic()
        last = self._logged.get(cause)
        if last is not None and now - last < LOG_REPEAT_S:
            return
        self._logged[cause] = now
        # rclpy fixes a call site's severity at its first call: one site per severity.
        if error:
            self.logger.error(text)
        else:
            self.logger.warning(text)

    def once(self, cause: Hashable, text: str) -> None:
        """A warning about a set-up the user must change: repeating it every frame would add nothing."""
        if cause not in self._logged_once:
            self._logged_once.add(cause)
            self.logger.warning(text)
