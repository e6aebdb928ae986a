"""Map-image retrieval with NetVLAD global descriptors and faiss.

The NetVLAD model aggregates the map's own local descriptors, so it must have been trained on
descriptors of the same kind: its card names the features (and, for LIFT, the DESC weights' hash);
``compatible_model`` refuses others, and the localizer then falls back to descriptor votes.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from ..weights import LoadedNetwork, WeightsError, load_network
from .index import load_index, search
from .netvlad import pad_batch

GLOBAL_FILE = "global.h5"
INDEX_FILE = "global.index"


def model_stem(features_name: str) -> str:
    return f"netvlad_{features_name}"


def model_ref(net: LoadedNetwork) -> str:
    """How map.json names the model: the shipped name, or the path of one trained elsewhere."""
    from ..weights import WEIGHTS_DIR

    return net.path.stem if net.path.parent == WEIGHTS_DIR else str(net.path.with_suffix(""))


def compatible_model(identity: dict, stem: str | None = None) -> tuple[LoadedNetwork | None, str]:
    """The shipped (or given) NetVLAD for features ``identity`` (map.json's 'features'), or None and why."""
    try:
        net = load_network("netvlad", stem or model_stem(identity["name"]))
    except WeightsError as e:
        return None, str(e)
    want = net.card.get("features", {})
    if want.get("name") != identity["name"]:
        return None, f"NetVLAD {net.path.name} aggregates {want.get('name')} descriptors, not {identity['name']}"
    if identity["name"] == "lift" and want.get("desc_sha256") != identity.get("weights", {}).get("desc"):
        return None, (f"NetVLAD {net.path.name} was trained on descriptors of other DESC weights "
                      f"({str(want.get('desc_sha256'))[:12]}…); retrain it with `lift-localizer train netvlad`")
    return net, ""


@torch.no_grad()
def global_descriptors(net: LoadedNetwork, descriptors: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """(M, E) NetVLAD descriptors of M images given their (N_i, 128) local descriptors."""
    out = []
    for i in range(0, len(descriptors), batch):
        x, mask = pad_batch(descriptors[i:i + batch])
        out.append(net.module(x, mask).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.module.out_dim), np.float32)


def write_global(directory: Path, names: list[str], desc: np.ndarray, net: LoadedNetwork) -> None:
    with h5py.File(directory / GLOBAL_FILE, "w") as f:
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("descriptors", data=desc.astype(np.float32))
        f.attrs["model"] = model_ref(net)
        f.attrs["model_sha256"] = net.sha256


class NetVLADRetrieval:
    name = "netvlad"

    def __init__(self, map_dir: Path, names: list[str], net: LoadedNetwork) -> None:
        with h5py.File(map_dir / GLOBAL_FILE, "r") as f:
            stored = [n.decode() if isinstance(n, bytes) else n for n in f["names"][()]]
            sha = f.attrs.get("model_sha256")
        if stored != names:
            raise ValueError(f"{map_dir}/{GLOBAL_FILE} lists other images than the map")
        if sha != net.sha256:
            raise ValueError(f"{map_dir}/{GLOBAL_FILE} was made with another NetVLAD ({str(sha)[:12]}…)")
        self.net = net
        self.index = load_index(map_dir / INDEX_FILE)

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        return global_descriptors(self.net, [descriptors])[0]

    def top_k(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        scores, ids = search(self.index, self.describe(descriptors)[None], k)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]
