"""Mutual nearest neighbours with the ratio test (features/matching.py)."""
import numpy as np
import torch

from lift_localizer.features.matching import mutual_nearest_neighbours


def _case():
    # 0 ↔ 1 mutual and distinct; 1 → 0 but 0's nearest is query 2 (not mutual); 2 ↔ 0 mutual but
    # ambiguous (map 2 almost as near); 3 has nothing near and its nearest prefers another.
    d1 = np.array([[0, 0], [10, 0], [0, 0.3], [50, 50]], np.float32)
    d0 = np.array([[10, 0.1], [0.2, 0], [0.05, 0.1], [30, 30]], np.float32)
    return d0, d1


def test_mutual_and_ratio_by_hand():
    d0, d1 = _case()
    np.testing.assert_array_equal(mutual_nearest_neighbours(d0, d1), [[0, 1], [2, 0], [3, 3]])
    # Query 2: nearest 0.112, second 0.206: rejected at 0.5, kept at 0.6; query 3: 28.3 vs 36.1.
    np.testing.assert_array_equal(mutual_nearest_neighbours(d0, d1, 0.5), [[0, 1]])
    np.testing.assert_array_equal(mutual_nearest_neighbours(d0, d1, 0.6), [[0, 1], [2, 0]])
    assert mutual_nearest_neighbours(d0[:0], d1).shape == (0, 2)


def test_tensors_and_devices_give_the_same_pairs():
    rng = np.random.default_rng(0)
    d1 = rng.normal(size=(300, 128)).astype(np.float32)
    d0 = d1[rng.permutation(300)[:200]] + 0.3 * rng.normal(size=(200, 128)).astype(np.float32)
    ref = mutual_nearest_neighbours(d0, d1, 0.9)
    assert len(ref) > 150
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        got = mutual_nearest_neighbours(torch.from_numpy(d0).to(device), torch.from_numpy(d1).to(device), 0.9, device)
        np.testing.assert_array_equal(got, ref)

