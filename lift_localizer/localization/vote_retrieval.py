"""Fallback retrieval until NetVLAD lands: rank map images by how many query descriptors have
their nearest map descriptor (among keypoints with 3D points) in them.

It is exact and needs no training, and costs one (N_query × N_map_keypoints) distance matrix:
fine for maps of tens of images, too slow for thousands — which is what NetVLAD is for.
"""
from __future__ import annotations

import numpy as np
import torch

from ..features.extractors import descriptor_size
from ..mapping.io import Map


class VoteRetrieval:
    name = "vote"
    CHUNK = 65536

    def __init__(self, map_: Map) -> None:
        desc, owner = [], []
        # Every map image's descriptors, once: votes need them all (not through the map's cache,
        # which they would only churn).
        for i in range(len(map_.images)):
            seen = map_.read_observations(i)
            desc.append(seen.descriptors)
            owner.append(np.full(len(seen.point3D_ids), i))
        self.desc = torch.from_numpy(np.concatenate(desc).astype(np.float32)) if desc else torch.zeros(0, descriptor_size(map_.features_name))
        self.owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        self.num_images = len(map_.images)

    def top_k(self, descriptors: np.ndarray, k: int, candidates: np.ndarray | None = None,
              min_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the k best map images and their vote counts, best first; only ``candidates``
        (map image indices) vote where given. Images with fewer than ``min_fraction`` of the best
        image's votes are left out: their nearest neighbours are mostly chance, and their matches
        would only add outliers to PnP."""
        desc, owner = self.desc, self.owner
        if candidates is not None:
            keep = np.isin(owner, candidates)
            desc, owner = desc[torch.from_numpy(keep)], owner[keep]
        if len(desc) == 0 or len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        q = torch.from_numpy(np.asarray(descriptors, np.float32))
        # In chunks, so that a large map never needs a (N_query × N_map) matrix in memory at once.
        best = torch.full((len(q),), float("inf"))
        nn_t = torch.zeros(len(q), dtype=torch.long)
        for start in range(0, len(desc), self.CHUNK):
            d = torch.cdist(q[None], desc[None, start:start + self.CHUNK])[0]
            value, index = d.min(1)
            better = value < best
            best[better], nn_t[better] = value[better], index[better] + start
        nn = nn_t.numpy()
        votes = np.bincount(owner[nn], minlength=self.num_images).astype(np.float64)
        order = np.argsort(-votes, kind="stable")[:k]
        order = order[votes[order] >= max(min_fraction * votes[order[0]], 1)]
        return order, votes[order]
