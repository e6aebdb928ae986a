"""Map-image retrieval with NetVLAD global descriptors and faiss.

The NetVLAD model aggregates the map's own local descriptors, so it must have been trained on
descriptors of the same kind: its card names the features (and, for LIFT, the DESC weights' hash);
``compatible_model`` refuses others, and the localizer then falls back to descriptor votes.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import torch

from ..weights import LoadedNetwork, WeightsError, file_sha256, load_network
from .index import IndexFileError, load_index, save_index, search
from ..nets.netvlad import pad_batch

GLOBAL_FILE = "global.h5"
INDEX_FILE = "global.index"
MODEL_DIR = "netvlad"


class GlobalIndexError(ValueError):
    """A map's global descriptors or faiss index are missing, corrupt, changed or for other images;
    the localizer then ranks map images by descriptor votes."""


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk, so a rename after it never outlives its data."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:   # directories cannot be opened on some systems: nothing to flush there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` into ``.NAME.partial`` beside ``path``, flushed, then renamed over ``path``: a
    reader sees the old file or the complete new one, even after a crash."""
    tmp = path.parent / f".{path.name}.partial"
    write(tmp)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def check_hdf5(f: h5py.File) -> None:
    """ValueError unless every object of ``f`` is reached by hard links only and no dataset keeps
    its data outside the file (external storage, virtual datasets): reading a map file must never
    open another file."""
    seen: set[int] = set()
    groups = [f]
    while groups:
        group = groups.pop()
        for name in group:
            link = group.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise ValueError(f"{group.name.rstrip('/')}/{name} is a {type(link).__name__}; refused")
            obj = group[name]
            address = h5py.h5o.get_info(obj.id).addr
            if address in seen:
                continue
            seen.add(address)
            if isinstance(obj, h5py.Group):
                groups.append(obj)
            elif isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                raise ValueError(f"{obj.name}: data stored outside the file; refused")


def retrieval_files(record: dict) -> tuple[str, str]:
    """(global descriptors file, faiss index file) that a map.json retrieval record names."""
    files = record.get("files") or [GLOBAL_FILE, INDEX_FILE]
    return str(files[0]), str(files[1])


def write_retrieval_files(directory: Path, names: list[str], desc: np.ndarray, index, net: LoadedNetwork,
                          global_name: str = GLOBAL_FILE, index_name: str = INDEX_FILE) -> dict:
    """Write the global descriptors and the faiss index under the given names, each through a
    temporary file renamed into place, and a copy of the model where it is not a shipped one;
    returns the map.json fields that name them and the files' hashes."""
    replace_atomically(directory / global_name, lambda p: write_global(p, names, desc, net))
    replace_atomically(directory / index_name, lambda p: save_index(index, p))
    return {"model": keep_model(directory, net), "files": [global_name, index_name],
            "sha256": {name: file_sha256(directory / name) for name in (global_name, index_name)}}


def keep_model(directory: Path, net: LoadedNetwork) -> str:
    """How map.json names the model: a shipped one by its name; any other is copied into the map
    (``MODEL_DIR/<stem>-<hash>``, so a copy is never overwritten by another model) and named
    relative to it, since a map names no file outside itself."""
    from ..weights import WEIGHTS_DIR, paths_for

    if net.path.parent == WEIGHTS_DIR:
        return net.path.stem
    ref = f"{MODEL_DIR}/{net.path.stem}-{net.sha256[:12]}"
    (directory / MODEL_DIR).mkdir(exist_ok=True)
    for src, dst in zip(paths_for(net.path), paths_for(directory / ref)):
        if not dst.is_file():
            replace_atomically(dst, lambda p, src=src: shutil.copyfile(src, p))
    return ref


def model_stem(features_name: str) -> str:
    """The weights stem a NetVLAD trained on ``features_name`` descriptors is written under."""
    return f"netvlad_{features_name}"


def model_ref(net: LoadedNetwork) -> str:
    """How map.json names the model: the shipped name, or the path of one trained elsewhere."""
    from ..weights import WEIGHTS_DIR

    return net.path.stem if net.path.parent == WEIGHTS_DIR else str(net.path.with_suffix(""))


def compatible_model(identity: dict, stem: str | None = None) -> tuple[LoadedNetwork | None, str]:
    """The shipped (or given) NetVLAD for features ``identity`` (map.json's 'features'), or None and why."""
    from ..features.extractors import extractor_class

    kind = extractor_class(identity["name"])
    if stem is None and not kind.has_netvlad:
        return None, f"no NetVLAD is shipped for {identity['name']} descriptors"
    stem = stem or model_stem(identity["name"])
    try:
        net = load_network("netvlad", stem)
    except WeightsError as e:
        return None, str(e)
    want = net.card.get("features", {})
    if want.get("name") != identity["name"]:
        return None, f"NetVLAD {net.path.name} aggregates {want.get('name')} descriptors, not {identity['name']}"
    # Descriptors of a network: a NetVLAD trained on another version of that network's output does not fit.
    network = kind.retrieval_network
    spaces = (identity.get("weights", {}).get(network), identity.get("distilled_from", {}).get(network))
    if network and want.get(f"{network}_sha256") not in spaces:
        return None, (f"NetVLAD {net.path.name} was trained on descriptors of other {network.upper()} weights "
                      f"({str(want.get(f'{network}_sha256'))[:12]}…); retrain it with `lift-localizer train netvlad`")
    return net, ""


@torch.no_grad()
def global_descriptors(net: LoadedNetwork, descriptors: list[np.ndarray], batch: int = 16) -> np.ndarray:
    """(M, E) NetVLAD descriptors of M images given their (N_i, D) local descriptors (D: the model's)."""
    out = []
    for i in range(0, len(descriptors), batch):
        x, mask = pad_batch(descriptors[i:i + batch], int(net.module.dim))
        out.append(net.module(x, mask).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.module.out_dim), np.float32)


def write_global(path: Path, names: list[str], desc: np.ndarray, net: LoadedNetwork) -> None:
    """The global descriptors file: image names, (M, E) descriptors, the model that made them."""
    with h5py.File(path, "w") as f:
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("descriptors", data=desc.astype(np.float32))
        f.attrs["model"] = model_ref(net)
        f.attrs["model_sha256"] = net.sha256


def _global_path(map_dir: Path, name: str) -> Path:
    """``map_dir/name`` where it is a plain file name and no link leads it out of the map directory."""
    path = map_dir / name
    real = os.path.realpath(map_dir)
    if Path(name).name != name or name in ("", ".", "..") or \
            os.path.commonpath([real, os.path.realpath(path)]) != real:
        raise GlobalIndexError(f"{path}: not a file inside the map directory")
    return path


def _check_recorded_hash(path: Path, want: str | None, map_dir: Path) -> None:
    """Present, and the file map.json recorded where it recorded a hash: faiss and HDF5 then read the
    bytes the map was built with."""
    if not path.is_file():
        raise GlobalIndexError(f"{path} is missing; run `lift-localizer index-map {map_dir}`")
    if want is not None and file_sha256(path) != want:
        raise GlobalIndexError(f"{path} is not the file map.json names (its hash differs); run "
                               f"`lift-localizer index-map {map_dir}`")


def _check_global_file(path: Path, names: list[str], dim: int, model_sha256: str) -> None:
    """GlobalIndexError unless ``path`` holds the map's image names and (M, dim) float descriptors of this
    model; the sizes are checked before the names are read, and the descriptors are not read."""
    try:
        with h5py.File(path, "r") as f:
            check_hdf5(f)
            stored_names, desc = f.get("names"), f.get("descriptors")
            if not isinstance(stored_names, h5py.Dataset) or not isinstance(desc, h5py.Dataset):
                raise ValueError("no names or descriptors")
            if stored_names.shape != (len(names),) or desc.shape != (len(names), dim) or desc.dtype.kind != "f":
                raise GlobalIndexError(f"{path} holds {stored_names.shape} names and {desc.shape} descriptors of "
                                       f"{desc.dtype}; the map has {len(names)} images, the NetVLAD {dim}-D descriptors")
            if stored_names.dtype.kind not in "OSU" or stored_names.dtype.itemsize > 4096:
                raise ValueError(f"names of type {stored_names.dtype}")
            stored = [n.decode() if isinstance(n, bytes) else str(n) for n in stored_names[()]]
            sha = f.attrs.get("model_sha256")
    except GlobalIndexError:
        raise
    except (OSError, KeyError, ValueError, IndexError, TypeError, RuntimeError) as e:   # h5py's, for a corrupt file
        raise GlobalIndexError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if stored != names:
        raise GlobalIndexError(f"{path} lists other images than the map ({len(stored)} against {len(names)})")
    if isinstance(sha, bytes):
        sha = sha.decode(errors="replace")
    if sha != model_sha256:
        raise GlobalIndexError(f"{path} was made with another NetVLAD ({str(sha)[:12]}…)")


class NetVLADRetrieval:
    name = "netvlad"

    def __init__(self, map_dir: Path, names: list[str], net: LoadedNetwork, record: dict | None = None) -> None:
        """The index named by ``record`` (map.json's retrieval record); GlobalIndexError where it does
        not match the map: a missing or corrupt file, a file changed since map.json named it, other
        images or another model. Every size in the files is checked before anything is read."""
        map_dir = Path(map_dir)
        record = record or {}
        paths = [_global_path(map_dir, n) for n in retrieval_files(record)]
        for path in paths:
            _check_recorded_hash(path, (record.get("sha256") or {}).get(path.name), map_dir)
        dim = int(net.module.out_dim)
        _check_global_file(paths[0], names, dim, net.sha256)
        try:
            index = load_index(paths[1], dim, len(names))
        except IndexFileError as e:
            raise GlobalIndexError(str(e)) from None
        except Exception as e:   # noqa: BLE001 — faiss reports a corrupt file as a bare RuntimeError
            raise GlobalIndexError(f"{paths[1]}: unreadable ({type(e).__name__}: {str(e).strip()[:200]})") from None
        self.net = net
        self.index = index

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        return global_descriptors(self.net, [descriptors])[0]

    def top_k(self, descriptors: np.ndarray, k: int,
              candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best map images and their scores, best first; among ``candidates`` (map image
        indices) only where given, scored exactly against their stored global descriptors."""
        if len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        query = self.describe(descriptors)
        if candidates is not None:
            ids = np.asarray(candidates, np.int64)
            # Flat and HNSW-flat indices keep the vectors themselves: no second copy of them is held.
            scores = self.index.reconstruct_batch(ids) @ query
            return best_of(ids, scores, k)
        scores, ids = search(self.index, query[None], k)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep]


def best_of(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest-scoring of ``ids`` and their scores, best first (ties by index, stably)."""
    if len(ids) > k:
        keep = np.argpartition(-scores, k - 1)[:k]
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order]
