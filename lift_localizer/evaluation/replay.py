"""Run a Localizer over a sequence of frames and write the poses (TUM format of DESIGN.md)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..images import ImageError
from ..reasons import Failure, Reason
from ..geometry.pose import matrix_to_quat
from ..localization.localizer import LocalizationResult, Localizer
from ..localization.prior import PosePrior
from ..mapping.frames import Frame


@dataclass
class QueryOutcome:
    frame: Frame
    result: LocalizationResult | None
    reason: str | None          # None: localized

    @property
    def T_map_camera(self) -> np.ndarray | None:
        return self.result.T_map_camera if self.reason is None else None


def localize_frames(localizer: Localizer, frames: list[Frame], desc: str = "localize") -> list[QueryOutcome]:
    """Localize every frame, in order; frames that cannot be read or have no camera are failures with
    a reason. The last accepted pose is each frame's prior (``localization.prior``), which limits its
    retrieval where the localizer's ``retrieval_radius_m`` is set."""
    out = []
    prior = PosePrior()
    bar = tqdm(frames, desc=desc, unit="img", file=sys.stderr, disable=None)
    for frame in bar:
        if frame.camera is None or frame.error:
            out.append(QueryOutcome(frame, None, frame.error or Failure(Reason.NO_CAMERA_INFO)))
            continue
        try:
            image = frame.image()
        except ImageError as e:
            out.append(QueryOutcome(frame, None, Failure(Reason.BAD_IMAGE, str(e))))
            continue
        stamp_s = None if frame.stamp_ns is None else frame.stamp_ns * 1e-9
        try:
            result = localizer(image, frame.camera, prior.take(stamp_s)[0])
        except (ImageError, ValueError) as e:
            out.append(QueryOutcome(frame, None, Failure(Reason.BAD_IMAGE, str(e))))
            continue
        prior.update(result, stamp_s)
        out.append(QueryOutcome(frame, result, result.reason if not result.success else None))
        bar.set_postfix(localized=sum(o.reason is None for o in out))
    return out


def area_counts(outcomes: list[QueryOutcome]) -> dict[str, int]:
    """How many queries retrieved from an area around their prior, and how many from the whole map
    and why (``retrieval.area`` modes)."""
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.result is not None and o.result.area is not None:
            counts[o.result.area.mode] = counts.get(o.result.area.mode, 0) + 1
    return counts


def tum_line(stamp_ns: int, T: np.ndarray) -> str:
    q = matrix_to_quat(T[:3, :3])
    t = T[:3, 3]
    return (f"{stamp_ns // 10**9}.{stamp_ns % 10**9:09d} {t[0]:.6f} {t[1]:.6f} {t[2]:.6f} "
            f"{q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}")


def write_tum(path: str | Path, outcomes: list[QueryOutcome]) -> int:
    """One line per localized frame, in stamp order; returns the number written."""
    lines = [tum_line(o.frame.stamp_ns, o.T_map_camera) for o in outcomes
             if o.reason is None and o.frame.stamp_ns is not None]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(str(path) + ".partial")
    tmp.write_text("".join(line + "\n" for line in lines))
    tmp.replace(path)
    return len(lines)
