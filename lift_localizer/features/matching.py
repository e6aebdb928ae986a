"""Descriptor matching: mutual nearest neighbours with an optional ratio test."""
from __future__ import annotations

import numpy as np
import torch


def mutual_nearest_neighbours(desc0: np.ndarray | torch.Tensor, desc1: np.ndarray | torch.Tensor,
                              ratio: float | None = None, device: str | torch.device | None = None,
                              allowed: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """Indices (M, 2) of pairs (i, j) where desc1[j] is desc0[i]'s nearest neighbour (L2) and vice
    versa, and, with ``ratio``, nearest < ratio × second nearest for desc0[i].

    Args:
        desc0: (N0, D), desc1: (N1, D), arrays or tensors.
        device: where to compare them (default: the CPU); tensors already there are not copied (a
            localizer on a GPU keeps the map's descriptors there).
        allowed: (N0, N1) bool, the pairs that may match (e.g. those a known geometry admits); nearest
            and second nearest are then taken among those only, in both directions.
    """
    if len(desc0) == 0 or len(desc1) == 0:
        return np.zeros((0, 2), np.int64)
    device = torch.device(device or "cpu")
    d0, d1 = (torch.as_tensor(d, dtype=torch.float32, device=device) for d in (desc0, desc1))
    d = torch.cdist(d0[None], d1[None])[0]
    if allowed is not None:
        d = d.masked_fill(~torch.as_tensor(allowed, dtype=torch.bool, device=device), float("inf"))
    nn01 = d.argmin(dim=1)
    nn10 = d.argmin(dim=0)
    i = torch.arange(len(desc0), device=device)
    keep = nn10[nn01] == i
    if allowed is not None:
        keep &= torch.isfinite(d[i, nn01])
    if ratio is not None and d.shape[1] > 1:
        best2 = d.topk(2, dim=1, largest=False).values
        keep &= best2[:, 0] < ratio * best2[:, 1]
    return torch.stack([i[keep], nn01[keep]], dim=1).cpu().numpy()
