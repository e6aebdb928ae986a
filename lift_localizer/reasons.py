"""Why an image gave no pose: a fixed set of reasons, each with its detail apart.

Diagnostics, logs and evaluation count failures by reason. A reason that carried its numbers
("too few inliers (12 < 20)") would make one counter per distinct message: a stream of bad
images would then grow the node's diagnostics and bypass its once-per-cause logging. So
``Failure`` is the full text (a ``str``: it prints, compares and is written as before) and knows
its ``Reason``; ``reason_of`` maps any text back onto the fixed set.
"""
from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # The localizer's, in pipeline order.
    NO_FEATURES = "no keypoints in the image"
    NO_RETRIEVAL = "retrieval found no map image"
    TOO_FEW_MATCHES = "too few 2D-3D matches"
    PNP_FAILED = "RANSAC found no pose"
    TOO_FEW_INLIERS = "too few inliers"
    LOW_INLIER_RATIO = "inlier ratio too low"
    CLUSTERED = "inliers cover too little of the image"
    RIVAL = "a rival pose is nearly as well supported"
    UNCERTAIN = "pose too uncertain"
    BAD_MAP_IMAGE = "unreadable map image"
    # Before an image reaches the localizer (the node's, and a bag's frames).
    BAD_IMAGE = "unreadable image"
    IMAGE_SIZE = "image size differs from camera_info"
    BAD_CAMERA_INFO = "camera_info refused"
    NO_CAMERA_INFO = "no camera_info"
    NO_MAP = "no map"
    INTERNAL_ERROR = "internal error"
    # Text that names none of the above (a caller's own string).
    OTHER = "other"

    # A str mix-in formats as "Reason.NAME" on Python ≥ 3.11 unless told otherwise.
    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Failure(str):
    """The text of one failure, "<reason> (<detail>)", that knows its ``reason``."""

    reason: Reason
    detail: str

    def __new__(cls, reason: Reason, detail: str = "") -> Failure:
        text = f"{reason.value} ({detail})" if detail else reason.value
        self = super().__new__(cls, text)
        self.reason, self.detail = reason, detail
        return self

    def __getnewargs__(self) -> tuple[Reason, str]:   # copy and pickle rebuild it from these
        return self.reason, self.detail


def reason_of(text: str | None) -> Reason | None:
    """The ``Reason`` of a failure's text (``OTHER`` where it names none); None for None."""
    if text is None:
        return None
    if isinstance(text, Failure):
        return text.reason
    head = str(text).split(" (")[0].split(":")[0]
    for r in Reason:
        if head == r.value:
            return r
    return Reason.OTHER
