"""Fallback retrieval until NetVLAD lands: rank map images by how many query descriptors have
their nearest map descriptor (among keypoints with 3D points) in them.

It is exact and needs no training, and costs one (N_query × N_map_keypoints) distance matrix:
fine for maps of tens of images, too slow for thousands — which is what NetVLAD is for.
"""
from __future__ import annotations

import numpy as np
import torch

from ..mapping.io import Map


class VoteRetrieval:
    name = "vote"

    def __init__(self, map_: Map) -> None:
        desc, owner = [], []
        for i, im in enumerate(map_.images):
            has3d = im.point3D_ids >= 0
            desc.append(im.features.descriptors[has3d])
            owner.append(np.full(int(has3d.sum()), i))
        self.desc = torch.from_numpy(np.concatenate(desc).astype(np.float32)) if desc else torch.zeros(0, 128)
        self.owner = np.concatenate(owner) if owner else np.zeros(0, np.int64)
        self.num_images = len(map_.images)

    def top_k(self, descriptors: np.ndarray, k: int, min_fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the k best map images and their vote counts, best first. Images with fewer
        than ``min_fraction`` of the best image's votes are left out: their nearest neighbours are
        mostly chance, and their matches would only add outliers to PnP."""
        if len(self.desc) == 0 or len(descriptors) == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        q = torch.from_numpy(np.asarray(descriptors, np.float32))
        nn = torch.cdist(q[None], self.desc[None])[0].argmin(1).numpy()
        votes = np.bincount(self.owner[nn], minlength=self.num_images).astype(np.float64)
        order = np.argsort(-votes, kind="stable")[:k]
        order = order[votes[order] >= max(min_fraction * votes[order[0]], 1)]
        return order, votes[order]
