"""The faiss index over a map's global descriptors, saved in faiss's own format.

Exact inner product (IndexFlatIP) up to EXACT_UP_TO images; above, HNSW (graph search, no training
needed, ~0.1–1 ms per query at 100 000 images). The kind is recorded in map.json. IVF-PQ is not
offered: at 100 000 images it saves ~0.1 GB, little beside the map's features, puts a wrong place
first for 5–17 % of the queries (the exact search 1 %), and keeps no vectors for area-limited
retrieval's exact scoring (docs/benchmarks.md, Retrieval).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

EXACT_UP_TO = 20000
HNSW_NEIGHBOURS = 32
HNSW_EF_SEARCH = 128


def build_index(descriptors: np.ndarray, kind: str = "auto"):
    """(N, E) L2-normalised float32 → (faiss index, kind) with inner-product search."""
    import faiss

    x = np.ascontiguousarray(descriptors, np.float32)
    if kind == "auto":
        kind = "flat" if len(x) <= EXACT_UP_TO else "hnsw"
    if kind == "flat":
        index = faiss.IndexFlatIP(x.shape[1])
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(x.shape[1], HNSW_NEIGHBOURS, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index kind {kind!r} (flat, hnsw, auto)")
    index.add(x)
    return index, kind


def save_index(index, path: str | Path) -> None:
    import faiss

    faiss.write_index(index, str(path))


class IndexFileError(ValueError):
    """A faiss index file that is not the flat or HNSW index of the expected vectors; found before
    faiss reads it, since faiss allocates whatever sizes the file states."""


# faiss's on-disk layout (faiss/impl/index_read.cpp): a fourcc, then the index header
# d (int32), ntotal (int64), two unused int64, is_trained (uint8), metric_type (int32), and a
# float metric_arg for metrics above L2; every vector is a uint64 element count and its elements.
_HEADER = struct.Struct("<iqqqBi")
_FLAT = {b"IxFI": 0, b"IxF2": 1}   # fourcc → metric (0: inner product, 1: L2)
_HNSW_FLAT = b"IHNf"
# HNSW's vectors in order: assign_probas, cum_nneighbor_per_level, levels, offsets, neighbors.
_HNSW_VECTORS = ("<f8", "<i4", "<i4", "<u8", "<i4")
_HNSW_TAIL = struct.Struct("<iiiii")   # entry_point, max_level, efConstruction, efSearch, unused


def check_index_file(path: str | Path, dim: int | None = None, ntotal: int | None = None) -> None:
    """IndexFileError unless ``path`` is, byte for byte, a flat or HNSW-flat index of ``ntotal``
    ``dim``-D vectors (None: as many as its header says): every size it states is checked against
    these numbers and the file's own length before faiss sees it."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        reader = _Reader(f, size, path)
        fourcc = reader.read(4)
        if fourcc in _FLAT:
            _check_flat(reader, fourcc, dim, ntotal)
        elif fourcc == _HNSW_FLAT:
            _check_hnsw(reader, dim, ntotal)
        else:
            raise IndexFileError(f"{path}: unreadable (not a flat or HNSW faiss index: it starts with {bytes(fourcc)!r})")
        if reader.offset != size:
            raise IndexFileError(f"{path}: {size - reader.offset} bytes after the index")


class _Reader:
    """Reads a file front to back, refusing any read past its end, so a stated size is never trusted."""

    def __init__(self, f: BinaryIO, size: int, path: Path) -> None:
        self.f, self.size, self.path, self.offset = f, size, path, 0

    def read(self, n: int) -> bytes:
        if n < 0 or n > self.size - self.offset:
            raise IndexFileError(f"{self.path}: unreadable (truncated or corrupt: a field at byte {self.offset} "
                                 f"needs {n} bytes, the file has {self.size - self.offset} more)")
        self.offset += n
        return self.f.read(n)

    def skip(self, n: int) -> None:
        """Pass over ``n`` bytes unread: the stored vectors (100 MB at 100 000 images) need no check."""
        if n < 0 or n > self.size - self.offset:
            self.read(n)   # refused with the same message
        self.offset += n
        self.f.seek(n, 1)

    def unpack(self, fmt: struct.Struct) -> tuple:
        return fmt.unpack(self.read(fmt.size))

    def vector(self, dtype: str) -> np.ndarray:
        (count,) = self.unpack(struct.Struct("<Q"))
        item = np.dtype(dtype).itemsize
        if count > (self.size - self.offset) // item:
            raise IndexFileError(f"{self.path}: states a vector of {count} elements at byte {self.offset - 8}, "
                                 f"longer than the file")
        return np.frombuffer(self.read(count * item), dtype)


def _check_header(reader: _Reader, dim: int | None, ntotal: int | None,
                  metric: int | None = None) -> tuple[int, int, int]:
    """(d, ntotal, metric) of the header, where they are the ones expected."""
    d, n, _, _, _, metric_type = reader.unpack(_HEADER)
    if metric_type not in (0, 1):
        raise IndexFileError(f"{reader.path}: metric {metric_type}; maps use inner product or L2")
    if metric is not None and metric_type != metric:
        raise IndexFileError(f"{reader.path}: its header's metric {metric_type} contradicts its type")
    dim, ntotal = d if dim is None else dim, n if ntotal is None else ntotal
    if (d, n) != (dim, ntotal) or d <= 0 or n < 0:
        raise IndexFileError(f"{reader.path} holds {n} {d}-D vectors, the map {ntotal} images of {dim}-D descriptors")
    return d, n, metric_type


def _check_flat(reader: _Reader, fourcc: bytes, dim: int | None, ntotal: int | None) -> None:
    dim, ntotal, _ = _check_header(reader, dim, ntotal, _FLAT[fourcc])
    (count,) = reader.unpack(struct.Struct("<Q"))
    if count != dim * ntotal:
        raise IndexFileError(f"{reader.path}: {count} stored values for {ntotal} {dim}-D vectors")
    reader.skip(count * 4)


def _check_hnsw(reader: _Reader, dim: int | None, ntotal: int | None) -> None:
    dim, ntotal, metric = _check_header(reader, dim, ntotal)
    _, cum_neighbours, levels, offsets, neighbours = (reader.vector(t) for t in _HNSW_VECTORS)
    entry, max_level, *_ = reader.unpack(_HNSW_TAIL)
    fourcc = reader.read(4)
    if fourcc not in _FLAT:
        raise IndexFileError(f"{reader.path}: HNSW storage {bytes(fourcc)!r} is not a flat index")
    _check_flat(reader, fourcc, dim, ntotal)
    if _FLAT[fourcc] != metric:
        raise IndexFileError(f"{reader.path}: HNSW and its storage use different metrics")
    _check_graph(reader.path, ntotal, cum_neighbours, levels, offsets, neighbours, entry, max_level)


def _check_graph(path: Path, ntotal: int, cum_neighbours: np.ndarray, levels: np.ndarray, offsets: np.ndarray,
                 neighbours: np.ndarray, entry: int, max_level: int) -> None:
    """The HNSW graph's own sizes and ids: faiss follows them without bounds checks while searching."""
    ok = (len(levels) == ntotal and len(offsets) == ntotal + 1 and len(cum_neighbours) >= 1
          and cum_neighbours[0] == 0
          and (ntotal == 0 or (1 <= levels.min() and levels.max() < len(cum_neighbours)))
          and offsets[0] == 0 and np.all(np.diff(offsets.astype(np.int64)) >= 0) and offsets[-1] == len(neighbours)
          and np.all(np.diff(cum_neighbours.astype(np.int64)) >= 0)
          and np.all((neighbours >= -1) & (neighbours < ntotal))
          and (ntotal == 0 or (0 <= entry < ntotal and 0 <= max_level < len(cum_neighbours))))
    if ok and ntotal:
        per_node = cum_neighbours.astype(np.int64)[levels.astype(np.int64)]
        ok = bool(np.array_equal(np.diff(offsets.astype(np.int64)), per_node))
    if not ok:
        raise IndexFileError(f"{path}: corrupt HNSW graph")


def load_index(path: str | Path, dim: int | None = None, ntotal: int | None = None):
    """The index at ``path`` once ``check_index_file`` has passed (IndexFileError where it does not)."""
    import faiss

    check_index_file(path, dim, ntotal)
    index = faiss.read_index(str(path))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, E) → scores (Q, k) and ids (Q, k), best first; ids −1 past the end of a small index."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(np.atleast_2d(queries), np.float32), k)
