"""Descriptor matching: mutual nearest neighbours with an optional ratio test."""
from __future__ import annotations

import numpy as np
import torch


def mutual_nearest_neighbours(desc0: np.ndarray, desc1: np.ndarray, ratio: float | None = None) -> np.ndarray:
    """Indices (M, 2) of pairs (i, j) where desc1[j] is desc0[i]'s nearest neighbour (L2) and vice
    versa, and, with ``ratio``, nearest < ratio × second nearest for desc0[i].

    Args:
        desc0: (N0, D), desc1: (N1, D).
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    d = torch.cdist(torch.from_numpy(np.asarray(desc0, np.float32))[None],
                    torch.from_numpy(np.asarray(desc1, np.float32))[None])[0]
    nn01 = d.argmin(dim=1)
    nn10 = d.argmin(dim=0)
    i = torch.arange(len(desc0))
    keep = nn10[nn01] == i
    if ratio is not None and d.shape[1] > 1:
        best2 = d.topk(2, dim=1, largest=False).values
        keep &= best2[:, 0] < ratio * best2[:, 1]
    return torch.stack([i[keep], nn01[keep]], dim=1).numpy()
