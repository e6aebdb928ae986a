"""The SIFT baseline's angle convention matches the project's (x right, y down, θ from x towards y)."""
import cv2
import numpy as np

from lift_localizer.features.sift import sift_keypoints
from lift_localizer.synthetic import make_texture


def test_clockwise_turn_adds_ninety_degrees():
    image = make_texture(200, seed=5).astype(np.float32)
    turned = cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE)     # (x, y) → (H − 1 − y, x)
    xy0, _, a0, _ = sift_keypoints(image, 300)
    xy1, _, a1, _ = sift_keypoints(turned, 300)
    moved = np.stack([image.shape[0] - 1 - xy0[:, 1], xy0[:, 0]], 1)
    d = np.linalg.norm(moved[:, None] - xy1[None], axis=2)
    pairs = [(i, int(d[i].argmin())) for i in range(len(xy0)) if d[i].min() < 0.6]
    assert len(pairs) > 50
    diff = np.array([np.angle(np.exp(1j * (a1[j] - a0[i] - np.pi / 2))) for i, j in pairs])
    # Most corresponding keypoints get the same orientation turned by +90° (a few have several).
    assert np.mean(np.abs(diff) < np.radians(5)) > 0.7


def test_strongest_first_and_scores_are_responses():
    """Keypoints come strongest first, so a prefix is a top-k set; the extractor's scores are the
    DoG responses (equal-count comparisons cut by score)."""
    from lift_localizer.features.extractors import make_extractor
    from lift_localizer.features.sift import sift_detect

    image = make_texture(200, seed=5).astype(np.float32)
    _, _, _, response, desc = sift_detect(image, 300)
    assert len(response) == len(desc) > 50
    assert np.all(np.diff(response) <= 0)
    f = make_extractor("sift", {"max_keypoints": 300})(image)
    assert np.allclose(f.scores, response)
