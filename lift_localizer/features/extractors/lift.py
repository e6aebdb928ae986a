"""LIFT (DET, ORI, DESC) behind the extractor interface; its networks' weights are part of its identity."""
from __future__ import annotations

import numpy as np
import torch

from ..lift import Lift, apply_preset
from ..lift import default_conf as lift_conf
from ..types import Features
from .common import DEFAULT_RESIZE_MAX, _rescale, _resize


class LiftExtractor:
    name = "lift"
    # DESC's output: 128 float32, compared by L2 (the metric DESC was trained for).
    descriptor_size = 128
    descriptor_note = "128 float32 (DESC), L2"
    default_conf = {**lift_conf, "resize_max": DEFAULT_RESIZE_MAX}
    options = frozenset(default_conf)
    # A map records the networks' hashes and refuses queries described by other weights.
    needs_weights = True
    # A NetVLAD for these descriptors is shipped (weights/netvlad_lift), and its card records DESC's hash.
    has_netvlad = True
    retrieval_network: str | None = "desc"

    def __init__(self, conf: dict | None = None) -> None:
        conf = dict(conf or {})
        self.resize_max = conf.pop("resize_max", DEFAULT_RESIZE_MAX)
        self.lift = Lift(conf)
        self.conf = {**self.lift.conf, "resize_max": self.resize_max}

    @property
    def untrained_warning(self) -> str | None:
        return self.lift.untrained_warning

    @staticmethod
    def query_conf(conf: dict, features: dict, localizer: dict) -> dict:
        """A localizer's extractor options: ``conf`` (budget, working size) with its back end, device,
        precision and preset, and the map's upright choice (``features``: map.json's record)."""
        from ...weights import shipped_stem

        # The localizer's weights where given (a user's own, not shipped), else the shipped weights the
        # map was built with (e.g. the thin DESC); a map of weights not loaded is refused by the localizer.
        weights = dict(localizer.get("weights") or {})
        for kind, sha in (features.get("weights") or {}).items():
            if kind not in weights and (stem := shipped_stem(kind, sha)):
                weights[kind] = stem
        return apply_preset({**conf, "backend": localizer["backend"], "device": localizer["device"],
                             "precision": localizer["precision"], "upright": bool(features.get("upright", False)),
                             "weights": weights}, localizer["preset"])

    def identity(self) -> dict:
        out = {"name": self.name, "weights": {k: n.sha256 for k, n in self.lift.networks.items()},
               "max_keypoints": int(self.lift.conf["max_keypoints"]), "resize_max": self.resize_max,
               "upright": bool(self.lift.conf["upright"])}
        # A DESC distilled from another describes in its teacher's space (a NetVLAD of the teacher fits).
        teachers = {k: n.card["distilled_from_sha256"] for k, n in self.lift.networks.items()
                    if n.card.get("distilled_from_sha256")}
        if teachers:
            out["distilled_from"] = teachers
        return out

    def __call__(self, gray: np.ndarray) -> Features:
        small = _resize(gray, self.resize_max)
        f = self.lift(small)
        return f if small is gray else _rescale(f, gray.shape, small.shape)


def reference_lift(conf: dict | None = None) -> LiftExtractor:
    """LIFT on PyTorch in float32 (on CUDA where there is one) with the localizer's other options:
    the reference whose network inputs INT8 calibration records, whatever back end and precision
    the localizer runs."""
    return LiftExtractor({"device": "cuda" if torch.cuda.is_available() else "cpu", **(conf or {}),
                          "backend": "torch", "precision": None})
