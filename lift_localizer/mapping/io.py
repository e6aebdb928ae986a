"""The map directory of DESIGN.md: write it atomically, load it with checks.

    MAP_DIR/map.json      format version, features (name, weights hashes), parameters, statistics
    MAP_DIR/sparse/       COLMAP model (cameras, images with poses, points3D) for COLMAP/hloc users
    MAP_DIR/features.h5   per image: keypoints, scales, orientations, scores, descriptors,
                          point3D_ids (−1: none); attrs image_size, camera, T_map_camera
    MAP_DIR/points.h5     ids, xyz, error, track_length — what localization needs, readable with
                          h5py alone (no pycolmap on Jetson)
    MAP_DIR/alt/<name>/   the same map with other features (e.g. SIFT) for side-by-side evaluation
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import h5py
import numpy as np

from ..features.io import FILE_ATTRS, write_features
from ..features.extractors import EXTRACTORS, descriptor_size
from ..features.types import Features
from ..geometry.camera import Camera
from ..retrieval.retriever import MODEL_DIR, check_hdf5
from .image_cache import DEFAULT_CACHE_IMAGES, ImageCache, Observations

MAP_FORMAT = "lift_localizer map"
MAP_FORMAT_VERSION = 1
ALT_DIR = "alt"
# Bounds on what a map's files may make us allocate: far above any map built here, far below memory.
MAX_META_BYTES = 64 << 20
MAX_KEYPOINTS = 1 << 17
EXPANSION = 4
# Every image's camera and pose in one table, so that a map loads them with a few reads instead of
# one group per image (most of the load time of a large map). Optional: a map without it loads
# them from features.h5's groups.
IMAGES_FILE = "images.h5"


class MapError(ValueError):
    """A map directory that cannot be used; the message names the directory and the problem."""


class MapImage:
    """One map image: its name, camera and pose, always in memory; its features and 3D point ids
    either given (a map being built) or read from the map's ``features.h5`` each time they are asked
    for (a loaded map). Localization reads an image's keypoints through ``Map.observations``."""

    __slots__ = ("name", "camera", "T_map_camera", "_features", "_point3D_ids", "_store")

    def __init__(self, name: str, camera: Camera, T_map_camera: np.ndarray, features: Features | None = None,
                 point3D_ids: np.ndarray | None = None, store: _FeatureStore | None = None) -> None:
        self.name, self.camera, self.T_map_camera = name, camera, T_map_camera
        self._features, self._point3D_ids, self._store = features, point3D_ids, store

    @property
    def features(self) -> Features:
        return self._features if self._store is None else self._store.features(self.name)

    @property
    def point3D_ids(self) -> np.ndarray:
        return self._point3D_ids if self._store is None else self._store.point3D_ids(self.name)

    def __repr__(self) -> str:
        return f"MapImage({self.name!r})"


class Map:
    """A loaded map: every image's name, camera and pose, the 3D points, and each image's keypoints
    with 3D points read on demand through a bounded cache (``observations``, ``cache``)."""

    def __init__(self, path: Path | None, meta: dict, images: list[MapImage], point_ids: np.ndarray,
                 xyz: np.ndarray, cache_images: int = DEFAULT_CACHE_IMAGES) -> None:
        self.path, self.meta, self.images = path, meta, images
        self.point_ids, self.xyz = np.asarray(point_ids, np.int64), xyz
        # Rows by binary search, not a dict: a building's map holds tens of millions of points. The
        # map writer stores them sorted, and then no permutation is kept.
        if np.all(np.diff(self.point_ids) > 0):
            self._order, self._sorted_ids = None, self.point_ids
        else:
            self._order = np.argsort(self.point_ids, kind="stable")
            self._sorted_ids = self.point_ids[self._order]
        self.cache = ImageCache(self.read_observations, cache_images)

    @property
    def features_name(self) -> str:
        return self.meta["features"]["name"]

    def rows(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,) point ids → (N,) rows of ``xyz`` and (N,) whether the map has the point."""
        ids = np.asarray(ids, np.int64)
        if not len(self._sorted_ids):
            return np.zeros(len(ids), np.int64), np.zeros(len(ids), bool)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return (pos if self._order is None else self._order[pos]), self._sorted_ids[pos] == ids

    def points_xyz(self, ids: np.ndarray) -> np.ndarray:
        """(N,) point ids → (N, 3) coordinates."""
        rows, known = self.rows(ids)
        if not known.all():
            raise KeyError(f"3D point {int(np.asarray(ids)[~known][0])} is not in the map")
        return self.xyz[rows]

    def observations(self, i: int) -> Observations:
        """Image i's keypoints that have a 3D point, their descriptors and point ids, through the
        cache; MapError where the image's features are corrupt (found when it is first read)."""
        return self.cache.get(i)

    def read_observations(self, i: int) -> Observations:
        """As ``observations``, read from the file without going through the cache."""
        im = self.images[i]
        if im._store is not None:
            return im._store.observations(im.name)
        has = np.flatnonzero(im.point3D_ids >= 0)
        return Observations(im.features.keypoints[has], im.features.descriptors[has], im.point3D_ids[has])

    def alternates(self) -> list[str]:
        return list_alternates(self.path)

    def close(self) -> None:
        """Close the features file (a loaded map keeps it open to read images on demand)."""
        if self.images and self.images[0]._store is not None:   # one store serves every image
            self.images[0]._store.close()

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_alternates(path: str | Path) -> list[str]:
    """Names of the other feature sets stored with a map (``MAP_DIR/alt/<name>``)."""
    alt = Path(path) / ALT_DIR
    return sorted(p.name for p in alt.iterdir() if (p / "map.json").exists()) if alt.is_dir() else []


@contextmanager
def atomic_directory(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it only when the block succeeds, so a
    crash or an error never leaves a half-written map that looks valid; at no moment is there no
    map at ``target`` once one was there. What killed builds left beside it is removed first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_replaced(target)
    remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_partial_prefix(target)}{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        replace_directory(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(new: Path, target: Path) -> None:
    """Move the folder ``new`` to ``target``, replacing any folder there, and remove the old one.

    Where the kernel can swap two names in one step (Linux renameat2 RENAME_EXCHANGE), ``target``
    names the old map and then the new one, never nothing. Elsewhere, two renames: the old map is
    first renamed to ``.NAME.old-PID`` and ``recover_replaced`` brings it back if a crash comes
    between them."""
    if not target.exists():
        os.rename(new, target)
        return
    if exchange(new, target):
        shutil.rmtree(new, ignore_errors=True)   # new now holds the old map
        return
    old = target.with_name(f"{_old_prefix(target)}{os.getpid()}")
    os.rename(target, old)
    try:
        os.rename(new, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _old_prefix(target: Path) -> str:
    return f".{target.name}.old-"


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` atomically; False where this system cannot (then nothing changed)."""
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):   # no such call, or not on this file system
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.lru_cache(maxsize=1)
def _renameat2():
    """glibc's renameat2 (2.28 and later), or None."""
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def recover_replaced(target: str | Path) -> None:
    """Where a replacement by two renames was cut between them (the process is gone), ``target`` is
    missing and the old map waits as ``.NAME.old-PID``: put it back."""
    target = Path(target)
    if target.exists() or not target.parent.is_dir():
        return
    prefix = _old_prefix(target)
    olds = sorted((p for p in target.parent.glob(f"{glob.escape(prefix)}*")
                   if not _owner_alive(p.name[len(prefix):])), key=lambda p: p.stat().st_mtime)
    if olds and (olds[-1] / "map.json").is_file():
        with contextlib.suppress(OSError):
            os.rename(olds[-1], target)


def remove_stale(target: Path) -> None:
    """Remove the ``.NAME.partial-PID-*`` and ``.NAME.old-PID`` folders beside ``target`` whose
    process is gone: a killed build leaves its partial folder behind, and it can hold gigabytes."""
    for prefix in (_partial_prefix(target), _old_prefix(target)):
        for path in target.parent.glob(f"{glob.escape(prefix)}*"):
            if path.is_dir() and not path.is_symlink() and not _owner_alive(path.name[len(prefix):]):
                shutil.rmtree(path, ignore_errors=True)


def _owner_alive(suffix: str) -> bool:
    """Whether the process named at the start of a partial or old folder's suffix still runs."""
    try:
        pid = int(suffix.split("-")[0])
    except ValueError:
        return False   # not named by a process of ours
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process
    return True


def write_map(directory: Path, meta: dict, images: Iterable[MapImage], point_ids: np.ndarray, xyz: np.ndarray,
              errors: np.ndarray, track_lengths: np.ndarray, reconstruction=None) -> None:
    """Write a map into an (empty, usually temporary) directory. ValueError where a 3D point is not
    finite: the loader refuses such a map, so it is never written. ``images`` is iterated once, so a
    generator writes a map larger than memory."""
    xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise ValueError(f"{int((~np.isfinite(xyz).all(1)).sum())} 3D point(s) with non-finite coordinates; "
                         "drop them before writing the map")
    directory.mkdir(parents=True, exist_ok=True)
    if reconstruction is not None:
        (directory / "sparse").mkdir(exist_ok=True)
        reconstruction.write_binary(str(directory / "sparse"))
    names, poses, sizes, camera_of, cameras = [], [], [], [], {}
    with h5py.File(directory / "features.h5", "w") as f:
        for k, v in FILE_ATTRS.items():
            f.attrs[k] = v
        f.attrs["features"] = json.dumps(meta["features"])
        for im in images:
            camera = json.dumps(im.camera.to_dict())
            features = im.features
            T = np.asarray(im.T_map_camera, np.float64)
            write_features(f, im.name, features, {"camera": camera, "T_map_camera": T})
            f[im.name].create_dataset("point3D_ids", data=np.asarray(im.point3D_ids, np.int64))
            names.append(im.name)
            poses.append(T.reshape(4, 4))
            sizes.append(features.image_size)
            camera_of.append(cameras.setdefault(camera, len(cameras)))
    with h5py.File(directory / IMAGES_FILE, "w") as f:
        f.create_dataset("names", data=np.array(names, dtype=object), dtype=h5py.string_dtype())
        f.create_dataset("T_map_camera", data=np.array(poses, np.float64).reshape(-1, 4, 4))
        f.create_dataset("image_size", data=np.array(sizes, np.int64).reshape(-1, 2))
        f.create_dataset("camera_index", data=np.array(camera_of, np.int64))
        f.create_dataset("cameras", data=np.array(list(cameras), dtype=object), dtype=h5py.string_dtype())
    with h5py.File(directory / "points.h5", "w") as f:
        f.create_dataset("ids", data=np.asarray(point_ids, np.int64))
        f.create_dataset("xyz", data=xyz)
        f.create_dataset("error", data=np.asarray(errors, np.float64))
        f.create_dataset("track_length", data=np.asarray(track_lengths, np.int64))
    meta = {"format": MAP_FORMAT, "format_version": MAP_FORMAT_VERSION, **meta, "image_names": names}
    (directory / "map.json").write_text(json.dumps(meta, indent=1))


def read_meta(path: str | Path) -> dict:
    """map.json of the map directory ``path``, checked (format, version, the type of every field
    read); MapError naming the problem otherwise."""
    path = Path(path)
    if not path.exists():
        raise MapError(f"{path}: no such map directory")
    if not (path / "map.json").is_file():
        raise MapError(f"{path}: not a map (no map.json; build one with `lift-localizer build-map`)")
    file = inside_map(path, "map.json")
    if file.stat().st_size > MAX_META_BYTES:
        raise MapError(f"{file}: {file.stat().st_size} bytes; a map.json holds at most {MAX_META_BYTES}")
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MapError(f"{path}/map.json: unreadable or corrupt ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != MAP_FORMAT:
        raise MapError(f"{path}/map.json: not a lift_localizer map")
    version = meta.get("format_version")
    if not _is_int(version):
        raise MapError(f"{path}/map.json: format_version is {json.dumps(version)}, not an integer")
    if version != MAP_FORMAT_VERSION:
        raise MapError(f"{path}: map format version {version}, this lift_localizer reads "
                       f"version {MAP_FORMAT_VERSION}; rebuild the map with `lift-localizer build-map`")
    validate_meta(meta, path)
    return meta


# ---------------------------------------------------------------- map.json's schema

@dataclass(frozen=True)
class _Record:
    """A JSON object with these required and optional fields (others are allowed, and not read)."""

    required: dict
    optional: dict = field(default_factory=dict)


_FEATURES = _Record({"name": str}, {"weights": {str: str}, "max_keypoints": int, "resize_max": (int, type(None)),
                                    "upright": bool, "opencv": str, "rootsift": bool})
_RETRIEVAL = _Record({"method": str, "model": str, "model_sha256": str},
                     {"index": str, "dim": int, "files": [str], "sha256": {str: str}})
_META = _Record({"format": str, "format_version": int, "features": _FEATURES, "image_names": [str]},
                {"retrieval": (_RETRIEVAL, type(None)), "created": str, "lift_localizer_version": str, "source": str,
                 "parameters": dict, "statistics": dict})
_JSON_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "an object",
               list: "an array", type(None): "null"}


def validate_meta(meta: dict, path: Path) -> None:
    """MapError unless every field of map.json that lift_localizer reads has its JSON type, the
    image names are unique, the global files are plain names and the NetVLAD model is a shipped
    one or a file inside the map directory."""
    problem = _type_problem(meta, _META, "map.json")
    if problem:
        raise MapError(f"{path}/map.json: {problem}")
    names = meta["image_names"]
    if len(set(names)) != len(names) or "" in names:
        raise MapError(f"{path}/map.json: image_names has empty or repeated names")
    if meta["features"]["name"] not in EXTRACTORS:
        raise MapError(f"{path}/map.json: unknown features {meta['features']['name']!r} "
                       f"(this lift_localizer knows {', '.join(EXTRACTORS)})")
    if meta.get("retrieval"):
        _check_retrieval(meta["retrieval"], path)


def _check_retrieval(record: dict, path: Path) -> None:
    files = record.get("files")
    if files is not None and (len(files) != 2 or not all(_plain_name(f) for f in files)):
        raise MapError(f"{path}/map.json: retrieval.files must be two file names in the map directory, got {files}")
    model = record["model"]
    if not _plain_name(model) and (Path(model).is_absolute() or ".." in Path(model).parts or model.startswith("~")):
        raise MapError(f"{path}/map.json: retrieval.model {model!r} is neither a model shipped with lift_localizer "
                       f"nor a file inside the map directory; rebuild the map with `lift-localizer build-map`, or "
                       f"copy the model into {path}/{MODEL_DIR}/ and name it {MODEL_DIR}/NAME there")


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(value: object, spec: object, where: str) -> str | None:
    """What is wrong with ``value`` against ``spec`` (None: nothing), naming the field. ``spec``: a
    type (int excludes bool), a tuple of alternatives, a _Record, a one-element list (an array of
    that) or {str: spec} (an object of that)."""
    if isinstance(spec, tuple):
        problems = [_type_problem(value, s, where) for s in spec]
        return None if None in problems else problems[0]
    if isinstance(spec, _Record):
        if not isinstance(value, dict):
            return f"{where} is {_json_kind(value)}, expected an object"
        for key, sub in {**spec.required, **spec.optional}.items():
            if key not in value:
                if key in spec.required:
                    return f"{where} has no {key!r}"
                continue
            problem = _type_problem(value[key], sub, f"{where}.{key}" if where != "map.json" else key)
            if problem:
                return problem
        return None
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where} is {_json_kind(value)}, expected an array"
        return next((p for i, v in enumerate(value) if (p := _type_problem(v, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where} is {_json_kind(value)}, expected an object"
        return next((p for k, v in value.items() if (p := _type_problem(v, spec[str], f"{where}.{k}"))), None)
    ok = _is_int(value) if spec is int else isinstance(value, spec) and not (spec is float and isinstance(value, bool))
    return None if ok else f"{where} is {_json_kind(value)}, expected {_JSON_NAMES[spec]}"


def _json_kind(value: object) -> str:
    if isinstance(value, str):
        return f"the string {json.dumps(value[:40])}"
    return next((name for t, name in _JSON_NAMES.items() if type(value) is t), type(value).__name__)


# ---------------------------------------------------------------- files inside the map directory


def inside_map(root: Path, name: str | Path) -> Path:
    """``root/name``, refused (MapError) where it, or a link on its way, leads outside ``root``: a map
    is a folder a user may be handed, and its files must not read the rest of the machine."""
    path = Path(root) / name
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(path)]) != real_root:
        raise MapError(f"{path}: leads outside the map directory {root} (a symbolic link?); refused")
    return path


def check_links(root: Path) -> None:
    """MapError where any symbolic link under the map directory ``root`` leads outside it."""
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            if os.path.islink(os.path.join(folder, name)):
                inside_map(root, os.path.relpath(os.path.join(folder, name), root))


def resolve(path: str | Path, features: str | None = None) -> Path:
    """The map directory holding ``features`` ('lift', 'sift', …): the map itself or one of its alternates."""
    path = Path(path)
    meta = read_meta(path)
    if features is None or meta["features"]["name"] == features:
        return path
    alt = path / ALT_DIR / features
    if _plain_name(features) and (alt / "map.json").exists():
        return inside_map(path, Path(ALT_DIR) / features)
    have = [meta["features"]["name"], *list_alternates(path)]
    raise MapError(f"{path}: no {features!r} features in this map (it has {', '.join(have)}); "
                   f"build it with `lift-localizer build-map --features {' '.join(sorted({*have, features}))}`")


def load_map(path: str | Path, features: str | None = None, cache_images: int = DEFAULT_CACHE_IMAGES) -> Map:
    """Load a map directory (or its alternate with other features). Raises MapError.

    What every query needs is read now: map.json, the 3D points, and each image's camera and pose.
    An image's keypoints and descriptors are read, checked the same way, when localization first
    asks for them (``Map.observations``), and kept for the ``cache_images`` images asked for last."""
    recover_replaced(path)
    path = resolve(path, features)
    meta = read_meta(path)
    check_links(path)
    try:
        ids, xyz = _read_points(path)
        store = _FeatureStore(path, meta)
        try:
            images = store.images(meta["image_names"], _read_image_table(path, meta["image_names"]))
        except BaseException:
            store.close()
            raise
    except MapError:
        raise
    except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:   # h5py's, for a corrupt file
        raise MapError(f"{path}: corrupt or incomplete map ({type(e).__name__}: {e})") from None
    m = Map(path, _resolved_model(meta, path), images, ids, xyz, cache_images)
    store.known = lambda used: bool(m.rows(used)[1].all())
    return m


def _resolved_model(meta: dict, path: Path) -> dict:
    """map.json's fields, with a NetVLAD model kept inside the map named by its full path (the
    localizer loads it by that name; map.json names it relative to the map, which may move)."""
    record = meta.get("retrieval")
    if not record or _plain_name(record["model"]):
        return meta
    model = inside_map(path, record["model"])
    return {**meta, "retrieval": {**record, "model": str(model)}}


def _read_image_table(path: Path, names: list[str]) -> tuple[np.ndarray, list[str], np.ndarray] | None:
    """(poses (M, 4, 4), cameras' JSON texts, each image's camera) from ``images.h5``, checked:
    every shape before it is read, the names those of map.json in its order, finite poses, camera
    indices in range. None where the map has no table (a map written without one)."""
    if not (path / IMAGES_FILE).exists():
        return None
    m = len(names)
    with open_hdf5(path, IMAGES_FILE) as f:
        where = path / IMAGES_FILE
        stored = _strings(f, "names", m, where)
        T = np.asarray(_dataset(f, "T_map_camera", (m, 4, 4), "f", where)[()], np.float64)
        sizes = np.asarray(_dataset(f, "image_size", (m, 2), "iu", where)[()], np.int64)
        index = np.asarray(_dataset(f, "camera_index", (m,), "iu", where)[()], np.int64)
        cameras = _strings(f, "cameras", None, where, at_most=max(m, 1))
    if stored != names:
        raise MapError(f"{where}: its image names are not map.json's")
    if not np.isfinite(T).all():
        raise MapError(f"{where}: a T_map_camera that is not finite")
    if len(sizes) and (sizes <= 0).any():
        raise MapError(f"{where}: an image_size that is not (height, width)")
    if len(index) and (index.min() < 0 or index.max() >= len(cameras)):
        raise MapError(f"{where}: camera_index out of range")
    return T, cameras, index


def _strings(f: h5py.File, key: str, n: int | None, where: object, at_most: int = 0) -> list[str]:
    """``f[key]``: a dataset of ``n`` strings (None: up to ``at_most``), its shape checked before it is read."""
    d = f.get(key)
    if not isinstance(d, h5py.Dataset) or len(d.shape) != 1 or h5py.check_string_dtype(d.dtype) is None or \
            (d.shape[0] != n if n is not None else d.shape[0] > at_most):
        raise MapError(f"{where}: {key} is not {n if n is not None else f'at most {at_most}'} strings")
    return [str(t) for t in d.asstr()[()]]


def _read_points(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open_hdf5(path, "points.h5") as f:
        n = _dataset(f, "ids", (None,), "iu", path).shape[0]
        ids = np.asarray(_dataset(f, "ids", (n,), "iu", path), np.int64)
        xyz = np.asarray(_dataset(f, "xyz", (n, 3), "f", path), np.float64)
    # The writer stores them increasing: no sort of millions of ids is needed to find repeats then.
    if not np.all(np.diff(ids) > 0) and len(np.unique(ids)) != len(ids):
        raise MapError(f"{path}/points.h5: repeated point ids")
    if not np.isfinite(xyz).all():
        raise MapError(f"{path}/points.h5: {int((~np.isfinite(xyz).all(1)).sum())} 3D point(s) are not finite")
    return ids, xyz


_FEATURE_KEYS = ("keypoints", "scales", "orientations", "scores", "descriptors")


class _FeatureStore:
    """A loaded map's features.h5, kept open: image records (camera, pose) read at load, an image's
    datasets read when asked, each time after the checks ``load_map`` always made — only hard links
    on the way to the image's group and its datasets, every shape and type before reading, the read
    budget, finite values, point ids the map has."""

    def __init__(self, path: Path, meta: dict) -> None:
        self.path = path
        self.dim = descriptor_size(meta["features"]["name"])
        # Which point ids the map has; set by load_map once the points are indexed.
        self.known: Callable[[np.ndarray], bool] = lambda used: True
        # Walking every object of the file (check_hdf5) would take seconds at 10 000 images, so each
        # image's path and members are checked as they are read instead.
        self.file = _open(path, "features.h5")
        self.budget = _ReadBudget(path / "features.h5")
        self._cameras: dict[str, Camera] = {}

    def close(self) -> None:
        self.file.close()

    def images(self, names: list[str], table: tuple[np.ndarray, list[str], np.ndarray] | None = None
               ) -> list[MapImage]:
        """Every image's record: from ``table`` (``_read_image_table``) where given, else from each
        image's group."""
        if table is None:
            return [self._record(name) for name in names]
        T, texts, index = table
        cameras = [self._camera(text, f"{self.path}/{IMAGES_FILE}") for text in texts]
        return [MapImage(name, cameras[c], T[i], store=self) for i, (name, c) in enumerate(zip(names, index))]

    def _camera(self, text: str, where: str) -> Camera:
        camera = self._cameras.get(text)
        if camera is None:   # most maps have one camera: parse its text once
            try:
                camera = self._cameras.setdefault(text, Camera.from_dict(json.loads(text)))
            except (ValueError, TypeError, KeyError) as e:
                raise MapError(f"{where}: a camera that cannot be read ({type(e).__name__}: {e})") from None
        return camera

    def _record(self, name: str) -> MapImage:
        where = f"{self.path}/features.h5, image {name!r}"
        g = self._group(name, where, members=False)
        T = np.asarray(g.attrs["T_map_camera"], np.float64)
        if T.shape not in ((4, 4), (16,)) or not np.isfinite(T).all():
            raise MapError(f"{where}: T_map_camera is not a finite 4×4 matrix")
        self._image_size(g, where)
        return MapImage(name, self._camera(_text(g.attrs["camera"]), where), T.reshape(4, 4), store=self)

    def _group(self, name: str, where: str, members: bool = True) -> h5py.Group:
        """The image's group, reached through hard links only, and with ``members`` its members hard
        links and its datasets stored inside the file (MapError otherwise): reading a map file must
        never open another file. Its attributes need no more than the path's check."""
        node = self.file
        for part in [p for p in name.split("/") if p]:
            link = node.get(part, getlink=True)
            if link is None:
                raise MapError(f"{self.path}/features.h5: no features for image {name!r}")
            if not isinstance(link, h5py.HardLink):
                raise MapError(f"{where}: {part} is a {type(link).__name__}; refused")
            node = node[part]
        if not isinstance(node, h5py.Group) or node is self.file:
            raise MapError(f"{self.path}/features.h5: no features for image {name!r}")
        for key in node if members else ():
            link = node.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink):
                raise MapError(f"{where}: {key} is a {type(link).__name__}; refused")
            obj = node[key]
            if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
                raise MapError(f"{where}: {key} stores its data outside the file; refused")
        return node

    @staticmethod
    def _image_size(g: h5py.Group, where: str) -> tuple[int, int]:
        size = np.asarray(g.attrs["image_size"])
        if size.shape != (2,) or size.dtype.kind not in "iu":
            raise MapError(f"{where}: image_size is not (height, width)")
        return int(size[0]), int(size[1])

    def _read(self, name: str, keys: tuple[str, ...]) -> tuple[dict[str, np.ndarray], h5py.Group, str]:
        """The image's datasets ``keys`` (and point3D_ids), every dataset's shape checked first."""
        where = f"{self.path}/features.h5, image {name!r}"
        try:
            g = self._group(name, where)
            n = _dataset(g, "keypoints", (None, 2), "f", where).shape[0]
            if n > MAX_KEYPOINTS:
                raise MapError(f"{where}: {n} keypoints; a map image holds at most {MAX_KEYPOINTS}")
            shapes = {"keypoints": (n, 2), "scales": (n,), "orientations": (n,), "scores": (n,),
                      "descriptors": (n, self.dim)}
            datasets = {k: _dataset(g, k, shape, "f", where) for k, shape in shapes.items()}
            datasets["point3D_ids"] = _dataset(g, "point3D_ids", (n,), "iu", where)
            wanted = {k: datasets[k] for k in (*keys, "point3D_ids")}
            self.budget.charge(name, wanted)
            arrays = {k: np.asarray(d[()], np.int64 if k == "point3D_ids" else np.float32) for k, d in wanted.items()}
        except MapError:
            raise
        except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:   # h5py's, for a corrupt file
            raise MapError(f"{where}: corrupt ({type(e).__name__}: {e})") from None
        if not all(np.isfinite(a).all() for k, a in arrays.items() if k != "point3D_ids"):
            raise MapError(f"{where}: keypoints or descriptors that are not finite")
        used = arrays["point3D_ids"][arrays["point3D_ids"] >= 0]
        if not self.known(used):
            raise MapError(f"{self.path}: image {name!r} refers to 3D points the map does not have")
        return arrays, g, where

    def observations(self, name: str) -> Observations:
        arrays, _, _ = self._read(name, ("keypoints", "descriptors"))
        has = np.flatnonzero(arrays["point3D_ids"] >= 0)
        return Observations(np.ascontiguousarray(arrays["keypoints"][has]),
                            np.ascontiguousarray(arrays["descriptors"][has]), arrays["point3D_ids"][has])

    def features(self, name: str) -> Features:
        arrays, g, where = self._read(name, _FEATURE_KEYS)
        return Features(*(arrays[k] for k in _FEATURE_KEYS), image_size=self._image_size(g, where))

    def point3D_ids(self, name: str) -> np.ndarray:
        return self._read(name, ())[0]["point3D_ids"]


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    if not isinstance(value, str):
        raise TypeError(f"expected a string attribute, got {type(value).__name__}")
    return value


def _dataset(group: h5py.Group, key: str, shape: tuple, kinds: str, where: object) -> h5py.Dataset:
    """``group[key]`` where it is a dataset of that shape (None: any length) and dtype kind; read nothing."""
    d = group.get(key)
    if not isinstance(d, h5py.Dataset):
        raise MapError(f"{where}: no dataset {key!r}")
    if len(d.shape) != len(shape) or any(want is not None and have != want for have, want in zip(d.shape, shape)):
        raise MapError(f"{where}: {key} has shape {d.shape}, expected {tuple('N' if s is None else s for s in shape)}")
    if d.dtype.kind not in kinds or d.dtype.itemsize > 8:
        raise MapError(f"{where}: {key} is of type {d.dtype}, expected {'integers' if 'i' in kinds else 'floats'}")
    return d


class _ReadBudget:
    """Reads datasets while the declared sizes of those read add up to no more than a bound on the
    file's size: the map's own files are uncompressed, and a compressed or sparse file that expands
    far beyond its size is refused before it is read. A dataset read again (an image back in the
    cache after it was dropped) is counted once."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.left = EXPANSION * file.stat().st_size + (1 << 20)
        self._charged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def charge(self, image: str, datasets: dict[str, h5py.Dataset]) -> None:
        with self._lock:
            for key, d in datasets.items():
                if (image, key) not in self._charged:
                    self.left -= d.size * d.dtype.itemsize
                    self._charged.add((image, key))
            if self.left < 0:
                raise MapError(f"{self.file}: its datasets are larger than the file could hold; refused")


def _open(path: Path, name: str) -> h5py.File:
    file = inside_map(path, name)
    try:
        return h5py.File(file, "r")
    except OSError as e:
        raise MapError(f"{path}: corrupt or incomplete map ({name} unreadable or missing: {e})") from None


@contextmanager
def open_hdf5(path: Path, name: str) -> Iterator[h5py.File]:
    """A map's HDF5 file, read-only, once it is known to hold no links to other files and no
    datasets stored outside it (MapError otherwise)."""
    file = inside_map(path, name)
    f = _open(path, name)
    with f:
        try:
            check_hdf5(f)
        except (ValueError, KeyError, OSError, RuntimeError) as e:   # h5py raises all of these for a corrupt file
            raise MapError(f"{file}: {e}") from None
        yield f
