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


def test_upscale_offset_and_angle_sign_against_unbiased_opencv():
    """sift_detect's keypoints sit UPSCALE_OFFSET_PX (0.25 px) right of and below OpenCV's unbiased
    ones (precise upscale), with the same angles (sign +1); true_positions removes the offset."""
    from lift_localizer.features.sift import UPSCALE_OFFSET_PX, opencv_angle, sift_detect, true_positions

    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    x, y = xx - 48.0, yy - 48.0
    blob = np.exp(-(x ** 2 + y ** 2) / (2 * 9.0 ** 2))
    image = np.clip(100 + 80 * blob * (1 + y / 9 + 0.5 * x / 9), 0, 255).astype(np.uint8)
    kps = cv2.SIFT_create(nfeatures=5, enable_precise_upscale=True).detect(image, None)
    xy, _, angle, _, _ = sift_detect(image.astype(np.float32), 5)
    assert kps and len(xy)
    k = max(kps, key=lambda p: p.response)
    j = int(np.argmin(np.linalg.norm(xy - np.array(k.pt), axis=1)))
    offset = float(np.round(np.mean(xy[j] - np.array(k.pt)) * 4) / 4)
    turn = float(np.angle(np.exp(1j * (angle[j] - opencv_angle(k.angle)))))
    assert (offset, UPSCALE_OFFSET_PX) == (0.25, 0.25) and abs(turn) < 1e-2
    assert np.allclose(true_positions(xy[j]), k.pt, atol=0.05)
    # The precise upscale has no offset.
    xy_p, *_ = sift_detect(image.astype(np.float32), 5, precise_upscale=True)
    assert np.min(np.linalg.norm(xy_p - np.array(k.pt), axis=1)) < 1e-3
