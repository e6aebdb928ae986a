"""Local-feature extractors behind one interface, so maps, localization and evaluation can run
LIFT, SIFT and ORB side by side on the same images.

    extractor = make_extractor("lift", {"max_keypoints": 1000})
    features = extractor(gray)           # Features in original-image pixels
    extractor.identity()                 # what a map records to refuse other features later

Each extractor is one module here, and one line of ``EXTRACTORS``. Its class declares what the rest
of the package asks of it, instead of comparing names:

    name, default_conf, options        its options (``conf_for`` keeps those a caller's conf has)
    descriptor_size, descriptor_note   D of the (N, D) float32 descriptors, compared by L2
    needs_weights                      identity() records network weights that a map must match
    has_netvlad, retrieval_network     whether a NetVLAD for these descriptors is shipped
                                       (weights/netvlad_<name>; without one the localizer ranks map
                                       images by descriptor votes), and the network whose hash that
                                       NetVLAD's card records (None: not a network's output)
    untrained_warning                  a line to show where the weights are not trained ones
    query_conf(conf, features, localizer)  a localizer's extractor options for a map's features
    identity()                         map.json's "features" record
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .common import DEFAULT_MAX_KEYPOINTS, DEFAULT_RESIZE_MAX, _rescale, _resize, processed_size

__all__ = ["DEFAULT_MAX_KEYPOINTS", "DEFAULT_RESIZE_MAX", "EXTRACTORS", "LiftExtractor", "OrbExtractor",
           "SiftExtractor", "conf_for", "descriptor_size", "extractor_class", "make_extractor", "processed_size",
           "reference_lift", "_rescale", "_resize"]


@dataclass(frozen=True)
class Registered:
    """An extractor as the registry knows it before its class is imported (LIFT's imports torch,
    which the command line's choices must not): where the class is, and its descriptor size."""
    module: str             # the module beside this one that defines the class
    class_name: str
    descriptor_size: int    # the class's own, checked against it by tests/test_orb.py


# The registry: name → where its class is. A new extractor is a module beside these and one line here.
EXTRACTORS: dict[str, Registered] = {
    "lift": Registered("lift", "LiftExtractor", 128),
    "sift": Registered("sift", "SiftExtractor", 128),
    "orb": Registered("orb", "OrbExtractor", 256),
}
# Names the package offers from here whose modules import only when asked for.
_LAZY = {"LiftExtractor": "lift", "reference_lift": "lift", "SiftExtractor": "sift", "OrbExtractor": "orb"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _registered(name: str) -> Registered:
    try:
        return EXTRACTORS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown features {name!r}; choose from {', '.join(EXTRACTORS)}") from None


def extractor_class(name: str) -> type:
    """The registered class of features ``name`` (its module imported now); ValueError naming the
    known ones otherwise."""
    entry = _registered(name)
    return getattr(importlib.import_module(f".{entry.module}", __name__), entry.class_name)


def descriptor_size(name: str) -> int:
    """D of the (N, D) descriptors of features ``name``, without importing its class."""
    return _registered(name).descriptor_size


def conf_for(name: str, conf: dict) -> dict:
    """The options of ``conf`` that extractor ``name`` has (e.g. LIFT's ``upright``), so callers
    can offer every extractor the same options."""
    return {k: v for k, v in conf.items() if k in extractor_class(name).options}


def make_extractor(name: str, conf: dict | None = None):
    """An extractor by name (a key of ``EXTRACTORS``): ``extractor(gray) → Features``."""
    return extractor_class(name)(conf)
