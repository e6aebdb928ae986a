"""CUDA against the CPU reference: same keypoints, same descriptors within tolerance.

Runs where a CUDA device exists (skips here and in CI)."""
import numpy as np
import pytest
import torch

from lift_localizer.features.lift import Lift
from lift_localizer.synthetic import demo_views, make_texture

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_matches_cpu():
    gray = demo_views(make_texture())[2].image.astype(np.float32)
    cpu = Lift({"max_keypoints": 1000})(gray)
    gpu = Lift({"max_keypoints": 1000, "device": "cuda"})(gray)
    d = np.linalg.norm(cpu.keypoints[:, None] - gpu.keypoints[None], axis=2)
    nn = d.argmin(1)
    same = d[np.arange(len(d)), nn] < 0.01
    # Ties at the 1000th score may differ between devices; the rest must be the same keypoints.
    assert same.mean() > 0.98
    np.testing.assert_allclose(gpu.scales[nn[same]], cpu.scales[same], rtol=1e-3)
    np.testing.assert_allclose(gpu.orientations[nn[same]], cpu.orientations[same], atol=1e-3)
    err = np.abs(gpu.descriptors[nn[same]] - cpu.descriptors[same]).max()
    assert err < 1e-3 * np.abs(cpu.descriptors).max()


def test_cuda_fp16_within_stated_tolerance():
    """fp16 on CUDA: ≥ 90 % of the fp32 keypoints within 0.5 px, their descriptors' cosine ≥ 0.99."""
    gray = demo_views(make_texture())[2].image.astype(np.float32)
    ref = Lift({"max_keypoints": 1000, "device": "cuda"})(gray)
    half = Lift({"max_keypoints": 1000, "device": "cuda", "precision": "fp16"})(gray)
    d = np.linalg.norm(ref.keypoints[:, None] - half.keypoints[None], axis=2)
    nn = d.argmin(1)
    same = d[np.arange(len(d)), nn] < 0.5
    assert same.mean() > 0.9
    a, b = ref.descriptors[same], half.descriptors[nn[same]]
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.median(cos) > 0.999 and cos.min() > 0.99
