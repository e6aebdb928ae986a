"""One image with what we know about it, whatever source it came from."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..geometry.camera import Camera


@dataclass
class Frame:
    """An image of a sequence or a folder.

    name: the image's name in maps and pairs files (bags: the header stamp in integer nanoseconds;
    folders: the path relative to the image folder). T_map_camera: 4×4 pose of the camera optical
    frame, or None where the source has none. error: why this frame cannot be used (its image could
    not be decoded, no camera_info came before it, …); such frames are reported, never dropped silently.
    """

    name: str
    camera: Camera | None
    T_map_camera: np.ndarray | None = None
    stamp_ns: int | None = None
    error: str | None = None
    loader: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    def image(self) -> np.ndarray:
        """The decoded image (uint8 or uint16; H×W grey or H×W×3 BGR). Raises ImageError."""
        from ..images import ImageError

        if self.error is not None:
            raise ImageError(f"{self.name}: {self.error}")
        if self.loader is None:
            raise ImageError(f"{self.name}: no image data")
        return self.loader()

    @property
    def stamp_s(self) -> float | None:
        return None if self.stamp_ns is None else self.stamp_ns * 1e-9


def posed_frames(views: list[tuple[np.ndarray, np.ndarray]], camera: Camera, t0_ns: int,
                 step_ns: int = 10**8) -> list[Frame]:
    """Frames of (image, T_map_camera) views (rendered scenes), named by index and stamped
    ``t0_ns + i · step_ns``."""
    return [Frame(str(i), camera, T, stamp_ns=t0_ns + i * step_ns, loader=lambda im=im: im)
            for i, (im, T) in enumerate(views)]
