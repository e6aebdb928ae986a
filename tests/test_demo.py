"""The demo (map + localization on the synthetic room, LIFT beside SIFT), and LIFT's coordinate
conventions checked against exact rendering homographies."""
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from lift_localizer.cli import main
from lift_localizer.evaluation.features import score_pair
from lift_localizer.synthetic import Rectangle, demo_views, look_at, make_texture, render, transfer

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--output", str(out_dir), "--max-keypoints", "400", "--mapping-views", "10",
                     "--query-views", "3", "--width", "320", "--height", "240"]) == 0
    return out_dir, printed.getvalue()


def test_demo_builds_a_map_localizes_and_prints_errors(demo):
    out_dir, out = demo
    assert "map [lift]" in out and "map [sift]" in out
    assert out.count("query_0") == 3 and "FAILED" not in out
    summary = json.loads((out_dir / "report" / "summary.json").read_text())
    for name in ("lift", "sift"):
        assert summary[name]["num_localized"] == 3
        assert summary[name]["recall"]["0.25m_2deg"] == 1.0
        assert summary[name]["median_translation"] < 0.05
    for f in ("trajectory_top_view.png", "error_cdf.png", "queries_lift.csv", "queries_sift.csv"):
        assert (out_dir / "report" / f).stat().st_size > 0
    assert (out_dir / "map" / "map.json").exists() and (out_dir / "map" / "alt" / "sift" / "map.json").exists()


def test_demo_ends_with_a_command_the_user_can_run(demo, monkeypatch):
    """The last line names lift-localizer in a form this shell finds: on PATH, or by its path
    (after `make`, .venv/bin is not on PATH unless the venv is activated)."""
    import os
    import shlex
    import shutil

    from lift_localizer.demo import cli_command

    line = demo[1].strip().splitlines()[-1]
    assert line.startswith("the same from the command line: ")
    command = shlex.split(line.split(": ", 1)[1])
    assert command[1:3] == ["evaluate", "--map"] or command[1:4] == ["-m", "lift_localizer", "evaluate"]
    assert shutil.which(command[0]) is not None, command[0]
    monkeypatch.setenv("PATH", "")
    found = cli_command().split()[0]
    assert os.access(found, os.X_OK) and os.path.isfile(found), found
    monkeypatch.setenv("PATH", str(Path(found).absolute().parent))
    assert cli_command() in ("lift-localizer", f"{sys.executable} -m lift_localizer")


def test_demo_runs_on_a_dataset_folder_of_bags(demo, tmp_path):
    """The README's real-data example works on any folder with the documented layout: the demo's
    own bags (DATASET/mapping, DATASET/query) are one."""
    out_dir, _ = demo
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--bag", str(out_dir / "bags"), "--output", str(tmp_path / "real"),
                     "--features", "sift", "--max-keypoints", "400"]) == 0
    summary = json.loads((tmp_path / "real" / "report" / "summary.json").read_text())
    assert summary["sift"]["num_localized"] == 3 and summary["sift"]["recall"]["0.25m_2deg"] == 1.0
    assert main(["demo", "--bag", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x")]) == 2


def test_renderer_puts_known_points_where_the_camera_says():
    """A bright square at a known texture position appears where K and T_map_camera project its 3D
    centre: the renderer, the pose convention and the pixel-centre convention agree."""
    tex = np.zeros((400, 400), np.uint8)
    tex[290:311, 90:111] = 255                       # centre at texture pixel (100, 300)
    wall = Rectangle(np.array([-2.0, -2.0, 5.0]), np.array([4.0, 0, 0]), np.array([0, 4.0, 0]), tex)
    K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
    T = look_at(np.array([0.3, -0.2, 0.0]), np.array([0.0, 0.4, 5.0]))
    image = render([wall], K, T, (240, 320)).astype(float)
    X = wall.origin + wall.u * 100 / 399 + wall.v * 300 / 399
    Xc = (X - T[:3, 3]) @ T[:3, :3]
    expected = (K @ Xc)[:2] / Xc[2]
    ys, xs = np.mgrid[:240, :320]
    centroid = np.array([(xs * image).sum(), (ys * image).sum()]) / image.sum()
    np.testing.assert_allclose(centroid, expected, atol=0.1)


def test_features_follow_the_true_homography(lift_small):
    # Keypoints in a frontal and a 20°-rotated view must coincide under the rendering homography:
    # any error in coordinate conventions (half pixels, level ratios) shows up here.
    views = demo_views(make_texture())
    f0 = lift_small(views[0].image.astype(np.float32))
    f1 = lift_small(views[1].image.astype(np.float32))
    h01 = views[1].H @ np.linalg.inv(views[0].H)
    s = score_pair(f0.keypoints, f0.descriptors, f0.image_size, f1.keypoints, f1.descriptors, f1.image_size,
                   lambda p: transfer(h01, p), lambda p: transfer(np.linalg.inv(h01), p), threshold=2.0)
    assert s.repeatability > 0.5
    assert s.precision > 0.6 and s.correct > 50
