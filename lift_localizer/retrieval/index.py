"""The faiss index over a map's global descriptors, saved in faiss's own format.

Exact inner product (IndexFlatIP) up to EXACT_UP_TO images; above, HNSW (graph search, no training
needed, ~0.1–1 ms per query at 100 000 images). The kind is recorded in map.json.
"""
from __future__ import annotations

from pathlib import Path

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


def load_index(path: str | Path):
    import faiss

    index = faiss.read_index(str(path))
    if hasattr(index, "hnsw"):
        index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(Q, E) → scores (Q, k) and ids (Q, k), best first; ids −1 past the end of a small index."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(np.atleast_2d(queries), np.float32), k)
