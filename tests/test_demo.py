"""The demo: synthetic views with known homographies, features that agree with the geometry."""
import contextlib
import io

import h5py
import numpy as np
import pytest

from lift_localizer.cli import main
from lift_localizer.evaluation.features import score_pair
from lift_localizer.features.io import read_features
from lift_localizer.synthetic import demo_views, make_texture, transfer


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--output", str(out_dir), "--max-keypoints", "300"]) == 0
    return out_dir, printed.getvalue()


def test_demo_runs_and_writes_its_views(demo):
    out_dir, out = demo
    assert "view pairs (0, k)" in out and out.count("LIFT rep") == 4 and out.count("SIFT rep") == 4
    with h5py.File(out_dir / "features.h5") as f:
        assert sorted(f) == [f"view_{k}.png" for k in range(5)]
    assert (out_dir / "view_0.png").exists()


def test_features_follow_the_true_homography(demo):
    # Keypoints in a frontal and a 20°-rotated view must coincide under the rendering homography:
    # any error in coordinate conventions (half pixels, level ratios) shows up here.
    out_dir, _ = demo
    views = demo_views(make_texture())
    f0 = read_features(out_dir / "features.h5", "view_0.png")
    f1 = read_features(out_dir / "features.h5", "view_1.png")
    h01 = views[1].H @ np.linalg.inv(views[0].H)
    s = score_pair(f0.keypoints, f0.descriptors, f0.image_size, f1.keypoints, f1.descriptors, f1.image_size,
                   lambda p: transfer(h01, p), lambda p: transfer(np.linalg.inv(h01), p), threshold=2.0)
    assert s.repeatability > 0.5
    assert s.precision > 0.7 and s.correct > 100
