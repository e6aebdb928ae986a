"""Hold a localization whose map→odom jumps until a second frame agrees with it (pure NumPy; the
node calls it from its worker, ``~/relocalize`` clears it from the executor).

Why: whatever fuses ``/pose`` or TF map→odom with odometry (an AR headset, a robot) trusts a
published pose as confident, so one wrong localization (a repeated structure, a retrieval that
picked the wrong room) teleports the user. Between two frames map→odom changes only by the drift
of odometry, which is small, so a sudden jump in it is suspicious until a second, independent frame
lands on the same map→odom. A wrong fix rarely repeats itself; a real correction (the first good
fix after a long drift, a kidnapped robot) does, and costs one frame of delay.

The gate is only defined where odom→camera is known at the image stamp: ``offer`` takes it as a
required argument, and the node does not call the gate for a frame without it (those frames are
published as they are).

A jump is measured where the camera is now: how far, and by how much turned, the camera would be
put in the map by the new map→odom rather than by the reference. The rotation is the same as
between the two map→odom transforms; the translation is not: the camera may be tens of metres from
the odom origin, so a small rotation of map→odom about one of the two moves the other by metres.
Comparing odom origins would hold good fixes far from the origin and let the camera teleport
through a small rotation about it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..geometry.pose import invert, pose_error

COUNTERS = ("held", "confirmed", "rejected", "expired")


class Verdict(str, Enum):
    ACCEPT = "accept"     # first fix, or close to the last accepted map→odom: publish
    CONFIRM = "confirm"   # agrees with the held jump: publish, it is the new reference
    HOLD = "hold"         # a jump: not published until a later frame agrees with it


@dataclass(frozen=True)
class JumpLimits:
    max_jump_m: float = 0.5
    max_jump_deg: float = 10.0
    # A held jump that no frame confirmed within this (image stamps, seconds) is forgotten.
    hold_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not (self.max_jump_m > 0 and self.max_jump_deg > 0 and self.hold_timeout_s > 0):
            # Zero would hold every frame: two localizations never agree exactly.
            raise ValueError(f"jump limits must be positive: {self}")

    def within(self, jump: tuple[float, float]) -> bool:
        return jump[0] <= self.max_jump_m and jump[1] <= self.max_jump_deg


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str
    # How far the camera moved and turned against the reference map→odom (NaN for a first fix).
    jump_m: float = float("nan")
    jump_deg: float = float("nan")

    @property
    def publish(self) -> bool:
        return self.verdict is not Verdict.HOLD


@dataclass(frozen=True)
class _Fix:
    T_map_odom: np.ndarray
    stamp_s: float


def camera_jump(T_map_odom_a: np.ndarray, T_map_odom_b: np.ndarray, T_odom_camera: np.ndarray) -> tuple[float, float]:
    """(metres, degrees) between the camera put in the map through map→odom ``a`` and through ``b``."""
    return pose_error(T_map_odom_a @ T_odom_camera, T_map_odom_b @ T_odom_camera)


class JumpGate:
    """Publish / hold for each localized frame from its implied map→odom. Thread-safe.

    ``counts`` (kept across ``clear``, for diagnostics): ``held`` frames not published as jumps;
    ``confirmed`` jumps a later frame agreed with; ``rejected`` held jumps a later frame contradicted
    (it agreed with the reference instead, or jumped elsewhere); ``expired`` held jumps no frame
    answered within the timeout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reference: _Fix | None = None
        self._candidate: _Fix | None = None
        self._counts = dict.fromkeys(COUNTERS, 0)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def clear(self) -> None:
        """Forget the reference and any held jump: the next frame is taken on its own."""
        with self._lock:
            self._reference = self._candidate = None

    def offer(self, T_map_camera: np.ndarray, T_odom_camera: np.ndarray, stamp_s: float,
              limits: JumpLimits) -> Decision:
        """The decision for a localized frame: its pose, odom→camera at its stamp (from TF) and the
        stamp in seconds."""
        fix = _Fix(T_map_camera @ invert(T_odom_camera), stamp_s)
        with self._lock:
            self._expire(stamp_s, limits.hold_timeout_s)
            if self._reference is None:
                self._reference = fix
                return Decision(Verdict.ACCEPT, "first fix: no earlier map→odom to compare with")
            jump = camera_jump(fix.T_map_odom, self._reference.T_map_odom, T_odom_camera)
            if limits.within(jump):
                if self._candidate is not None:
                    self._candidate = None
                    self._counts["rejected"] += 1
                self._reference = fix
                return Decision(Verdict.ACCEPT, "close to the last accepted map→odom", *jump)
            if self._candidate is not None:
                if limits.within(camera_jump(fix.T_map_odom, self._candidate.T_map_odom, T_odom_camera)):
                    self._reference, self._candidate = fix, None
                    self._counts["confirmed"] += 1
                    return Decision(Verdict.CONFIRM, f"a second frame agrees with the held jump of {jump[0]:.2f} m, "
                                    f"{jump[1]:.1f}°: it is the new map→odom", *jump)
                self._counts["rejected"] += 1
            self._candidate = fix
            self._counts["held"] += 1
            return Decision(Verdict.HOLD, f"the pose jumped {jump[0]:.2f} m, {jump[1]:.1f}° from the last accepted "
                            f"map→odom (limits {limits.max_jump_m:g} m, {limits.max_jump_deg:g}°): held until "
                            f"a second frame agrees", *jump)

    def _expire(self, stamp_s: float, timeout_s: float) -> None:
        # A stamp before the held one (a replayed bag restarting) makes it as stale as a late one.
        if self._candidate is not None and not 0.0 <= stamp_s - self._candidate.stamp_s <= timeout_s:
            self._candidate = None
            self._counts["expired"] += 1
