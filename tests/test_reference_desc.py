"""DESC is the released LIFT descriptor's architecture: its weights load and match real images.

Reads ../shared/data (the reference weights, academic licence, and the Webcam scenes); skips
without it. Measured (3 images per scene, 300 keypoints, all pairs, mean over the three scenes):
reference DESC nearest-neighbour accuracy 0.536 against 0.306 for raw normalised patches; with the
subtractive normalisation done per channel (a plausible mistake) 0.258. With 4 images per scene:
0.554, 0.362 and 0.272, at 1.5× the time.
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lift_localizer.nets.desc as desc_module
from lift_localizer.evaluation.reference_desc import REFERENCE, same_keypoint_accuracy, scene_images
from lift_localizer.nets.desc import load_reference
from conftest import shared_path

SCENES = ("chamonix", "courbevoie", "mexico")


@pytest.fixture(scope="module")
def reference():
    return load_reference(shared_path(*REFERENCE.parts))


@pytest.fixture(scope="module")
def scenes():
    webcam = shared_path("raw", "webcam")
    return {s: scene_images(webcam, s, 3) for s in SCENES}


def _mean_accuracy(scenes, net, mean, std):
    per_scene = [same_keypoint_accuracy(images, net, mean, std, 300) for images in scenes.values()]
    return {k: float(np.mean([s[k] for s in per_scene])) for k in per_scene[0]}


@pytest.fixture(scope="module")
def accuracy(reference, scenes):
    """The reference DESC's figures, as built: both tests below compare against them."""
    return _mean_accuracy(scenes, *reference)


def test_reference_weights_fit_the_architecture(reference):
    net, mean, std = reference
    assert (mean, std) == pytest.approx((110.7539, 61.53689))
    with torch.inference_mode():
        out = net(torch.zeros(2, 1, 64, 64))
    assert out.shape == (2, 128) and torch.isfinite(out).all()


def test_reference_desc_matches_clearly_better_than_raw_patches(accuracy):
    assert accuracy["lift_reference"] > accuracy["raw"] + 0.1, accuracy
    assert accuracy["lift_reference"] > 0.45, accuracy


def test_a_wrong_architecture_detail_is_caught(reference, scenes, accuracy, monkeypatch):
    good = accuracy["lift_reference"]

    def per_channel(x, kernel):  # one mean per channel instead of one over the channel average
        c = x.shape[1]
        k = (kernel / kernel.sum()).to(x)
        coef = F.conv2d(torch.ones_like(x[:1, :1]), k[None, None], padding=2)
        return x - F.conv2d(x, k.expand(c, 1, *k.shape), padding=2, groups=c) / coef

    monkeypatch.setattr(desc_module, "subtractive_normalization", per_channel)
    broken = _mean_accuracy(scenes, *reference)["lift_reference"]
    assert broken < good - 0.15, (good, broken)
