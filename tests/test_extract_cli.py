"""The `extract` command: the HDF5 contract of DESIGN.md and its handling of bad input."""
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from lift_localizer.cli import main
from lift_localizer.features.io import list_images, read_features
from lift_localizer.synthetic import make_texture


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    tex = make_texture(512, seed=5)
    grey = tex[100:260, 50:250]
    colour = cv2.merge([grey, np.roll(grey, 3, 0), 255 - grey])
    paths = {
        "grey": d / "grey.png", "colour": d / "colour.jpg", "deep": d / "deep16.png",
        "rgba": d / "alpha.png", "tiny": d / "tiny.png",
    }
    cv2.imwrite(str(paths["grey"]), grey)
    cv2.imwrite(str(paths["colour"]), colour)
    cv2.imwrite(str(paths["deep"]), grey.astype(np.uint16) * 257)
    cv2.imwrite(str(paths["rgba"]), cv2.merge([grey, grey, grey, np.full_like(grey, 255)]))
    cv2.imwrite(str(paths["tiny"]), grey[:6, :7])
    (d / "notes.png").write_text("this is not an image")
    paths["text"] = d / "notes.png"
    (d / "empty.png").write_bytes(b"")
    paths["empty"] = d / "empty.png"
    return paths


def test_extract_writes_the_contracted_file(images, tmp_path, capsys):
    out = tmp_path / "features.h5"
    names = [str(images[k]) for k in ("grey", "colour", "deep", "rgba", "tiny")]
    assert main(["extract", *names, "--output", str(out), "--max-keypoints", "60"]) == 0
    err = capsys.readouterr()
    assert "UNTRAINED" not in err.err  # DET, ORI and DESC ship trained
    assert "extracted 5 image(s), 0 failed" in err.out
    assert sorted(list_images(out)) == sorted(n.lstrip("/") for n in names)
    with h5py.File(out) as f:
        for name in names:
            g = f[name]
            n = g["keypoints"].shape[0]
            assert g["keypoints"].shape == (n, 2) and g["descriptors"].shape == (n, 128)
            for key in ("keypoints", "scales", "orientations", "scores", "descriptors"):
                assert g[key].dtype == np.float32
                assert g[key].shape[0] == n
            assert tuple(g.attrs["image_size"]) == cv2.imread(name, cv2.IMREAD_UNCHANGED).shape[:2]
        assert f.attrs["format_version"] == 1
        assert len(f.attrs["weights_desc_sha256"]) == 64
    grey = read_features(out, names[0])
    assert 0 < len(grey) <= 60
    assert np.all(np.diff(grey.scores) <= 0)  # best first
    h, w = grey.image_size
    assert np.all((grey.keypoints >= 0) & (grey.keypoints <= [w - 1, h - 1]))
    # 8-bit and full-range 16-bit versions of one image give the same features
    deep = read_features(out, names[2])
    np.testing.assert_allclose(deep.keypoints, grey.keypoints, atol=1e-3)
    assert len(read_features(out, names[4])) == 0  # tiny: handled, no keypoints


def test_extract_reports_bad_files_and_keeps_going(images, tmp_path, capsys):
    out = tmp_path / "features.h5"
    missing = tmp_path / "nope.png"
    args = [str(images["grey"]), str(missing), str(images["text"]), str(images["empty"]),
            str(tmp_path), str(images["colour"])]
    assert main(["extract", *args, "--output", str(out), "--max-keypoints", "30"]) == 1
    err = capsys.readouterr().err
    assert f"error: {missing}: no such file" in err
    assert f"error: {images['text']}: could not be decoded: not an image" in err
    assert f"error: {images['empty']}: empty file" in err
    assert f"error: {tmp_path}: is a directory" in err
    assert "failed: 4 image(s)" in err
    assert sorted(list_images(out)) == sorted(str(images[k]).lstrip("/") for k in ("grey", "colour"))


def test_extract_refuses_an_oversized_image_from_its_header(images, tmp_path, capsys, monkeypatch):
    from test_ros_convert import png_claiming

    (big := tmp_path / "big.png").write_bytes(png_claiming(12000, 100))
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or real(*a))
    out = tmp_path / "features.h5"
    assert main(["extract", str(big), str(images["grey"]), "--output", str(out), "--max-keypoints", "30"]) == 1
    assert f"error: {big}: image is 12000×100, larger than 8192 pixels a side" in capsys.readouterr().err
    assert len(decoded) == 1 and list_images(out) == [str(images["grey"]).lstrip("/")]
    assert main(["extract", str(big), "--output", str(out), "--max-image-side", "12000", "--max-keypoints", "30"]) == 0


def test_extract_replaces_groups_on_rerun(images, tmp_path):
    out = tmp_path / "f.h5"
    assert main(["extract", str(images["grey"]), "-o", str(out), "--max-keypoints", "40"]) == 0
    assert main(["extract", str(images["grey"]), "-o", str(out), "--max-keypoints", "20"]) == 0
    assert len(read_features(out, str(images["grey"]))) == 20


def test_extract_with_the_fast_networks_records_them(images, tmp_path, capsys):
    from lift_localizer.weights import load_network

    out = tmp_path / "fast.h5"
    assert main(["extract", str(images["grey"]), "-o", str(out), "--max-keypoints", "40",
                 "--ori", "ori_fast", "--desc", "desc_fast"]) == 0
    with h5py.File(out) as f:
        assert f.attrs["weights_ori_sha256"] == load_network("ori", "ori_fast").sha256
        assert f.attrs["weights_desc_sha256"] == load_network("desc", "desc_fast").sha256
        assert f.attrs["weights_det_sha256"] == load_network("det").sha256
    assert 0 < len(read_features(out, str(images["grey"]))) <= 40
    # Weights that do not exist stop it before anything is written, with the reason.
    assert main(["extract", str(images["grey"]), "-o", str(tmp_path / "none.h5"), "--desc", "no_such_desc"]) == 2
    assert "no_such_desc" in capsys.readouterr().err and not (tmp_path / "none.h5").exists()


def test_extract_usage_errors(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["extract", "x.png", "-o", str(tmp_path / "f.h5"), "--max-keypoints", "0"])
    assert e.value.code == 2
    assert main(["extract", "x.png", "-o", str(tmp_path / "missing_dir" / "f.h5")]) == 2


def test_help_explains_each_option():
    r = subprocess.run([sys.executable, "-m", "lift_localizer", "extract", "--help"],
                       capture_output=True, text=True, check=True)
    for option in ("--output", "--max-keypoints", "--backend", "--device", "--ori", "--desc"):
        assert option in r.stdout
    assert "keypoints (N×2" in r.stdout
