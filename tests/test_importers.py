"""Posed-folder importers: each format's axis conventions checked by projecting a known 3D point,
and the real raw sets against the bags made from them."""
import json

import cv2
import numpy as np
import pytest

from lift_localizer.geometry.pose import invert, make_T, matrix_to_quat, pose_error, rodrigues
from lift_localizer.mapping.importers import (ImportFormatError, load_colmap, load_kitti, load_nerf,
                                              load_posed_folder, load_tum)

from conftest import shared_path

K = np.array([[120.0, 0, 63.5], [0, 110.0, 47.5], [0, 0, 1]])
T_TRUE = make_T(rodrigues([0.2, -0.5, 0.1]), [1.0, -2.0, 0.5])    # T_map_camera, optical axes
X_MAP = T_TRUE[:3, :3] @ np.array([0.3, -0.2, 4.0]) + T_TRUE[:3, 3]  # a point 4 m in front
PIXEL = (K @ [0.3, -0.2, 4.0])[:2] / 4.0


def project(frame, X):
    Xc = invert(frame.T_map_camera) @ np.r_[X, 1]
    return (frame.camera.K @ Xc[:3])[:2] / Xc[2]


def write_image(path, w=128, h=96):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((h, w), np.uint8))


def test_nerf_opengl_axes(tmp_path):
    write_image(tmp_path / "images" / "a.png")
    c2w_gl = T_TRUE @ np.diag([1.0, -1, -1, 1])      # what NeRF tools store
    (tmp_path / "transforms.json").write_text(json.dumps({
        "fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2], "w": 128, "h": 96, "k1": 0.01,
        "frames": [{"file_path": "./images/a", "transform_matrix": c2w_gl.tolist()},
                   {"file_path": "images/missing.png", "transform_matrix": c2w_gl.tolist()}]}))
    fr = load_nerf(tmp_path / "transforms.json")
    np.testing.assert_allclose(project(fr[0], X_MAP), PIXEL, atol=1e-9)
    assert fr[0].name == "a.png" and fr[0].camera.dist[0] == 0.01 and fr[0].image().shape == (96, 128)
    assert "missing" in fr[1].error


def test_nerf_camera_angle_only(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "transforms.json").write_text(json.dumps({
        "camera_angle_x": 2 * np.arctan(64 / 120.0),
        "frames": [{"file_path": "a.png", "transform_matrix": np.eye(4).tolist()}]}))
    assert np.isclose(load_nerf(tmp_path / "transforms.json")[0].camera.K[0, 0], 120.0)


def test_colmap_model(tmp_path):
    pycolmap = pytest.importorskip("pycolmap")
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="PINHOLE", width=128, height=96, params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
                          camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    rec.add_image_with_trivial_frame(pycolmap.Image(name="a.png", camera_id=1, image_id=1),
                                     pycolmap.Rigid3d(invert(T_TRUE)[:3]))
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(tmp_path / "sparse" / "0"))
    write_image(tmp_path / "images" / "a.png")
    fr = load_posed_folder(tmp_path)
    np.testing.assert_allclose(project(fr[0], X_MAP), PIXEL, atol=1e-9)
    assert fr[0].name == "a.png" and fr[0].error is None
    assert load_colmap(tmp_path / "sparse" / "0", tmp_path / "nowhere")[0].error


def test_kitti(tmp_path):
    for i in range(3):
        write_image(tmp_path / "image_0" / f"{i:06d}.png")
    poses = np.stack([T_TRUE[:3].ravel()] * 2)   # only two poses for three images
    np.savetxt(tmp_path / "poses.txt", poses)
    P0 = np.c_[K, np.zeros(3)].ravel()
    (tmp_path / "calib.txt").write_text("P0: " + " ".join(map(str, P0)) + "\nP1: " + " ".join(map(str, P0)) + "\n")
    fr = load_posed_folder(tmp_path)
    np.testing.assert_allclose(project(fr[0], X_MAP), PIXEL, atol=1e-9)
    assert fr[2].T_map_camera is None and fr[0].camera.width == 128
    (tmp_path / "calib.txt").write_text("P0: 1 2 3\n")
    with pytest.raises(ImportFormatError, match="P0"):
        load_kitti(tmp_path / "poses.txt", tmp_path / "calib.txt", tmp_path / "image_0")


def test_tum(tmp_path):
    q = matrix_to_quat(T_TRUE[:3, :3])
    t = T_TRUE[:3, 3]
    (tmp_path / "groundtruth.txt").write_text("# time tx ty tz qx qy qz qw\n" + "".join(
        f"{s:.4f} {t[0]} {t[1]} {t[2]} {q[0]} {q[1]} {q[2]} {q[3]}\n" for s in (10.0, 10.01, 10.02)))
    write_image(tmp_path / "rgb" / "10.011.png")
    write_image(tmp_path / "rgb" / "11.500.png")
    with pytest.raises(ImportFormatError, match="intrinsics"):
        load_posed_folder(tmp_path)
    fr = load_posed_folder(tmp_path, intrinsics=(K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    np.testing.assert_allclose(project(fr[0], X_MAP), PIXEL, atol=1e-6)
    assert fr[0].stamp_ns == 10_011_000_000 and fr[1].T_map_camera is None
    with pytest.raises(ImportFormatError, match="8 numbers"):
        (tmp_path / "bad.txt").write_text("1 2 3\n")
        load_tum(tmp_path / "bad.txt", tmp_path / "rgb", (1, 1, 1, 1))


def test_unknown_folder(tmp_path):
    with pytest.raises(ImportFormatError, match="no transforms.json"):
        load_posed_folder(tmp_path)
    with pytest.raises(ImportFormatError, match="no such"):
        load_posed_folder(tmp_path / "x")


@pytest.mark.parametrize("name,kw", [("kitti_seq1", {}), ("fox", {}),
                                     ("tum_fr3_office", {"intrinsics": (535.4, 539.2, 320.1, 247.6)})])
def test_real_raw_sets_agree_with_their_bags(name, kw):
    """The bags were made from these raw sets: the same image has the same pose and camera."""
    from lift_localizer.bags.reader import read_frames

    raw = [f for f in load_posed_folder(shared_path("raw", name), **kw) if f.error is None and f.T_map_camera is not None]
    bag = [f for part in ("mapping", "query")
           for f in read_frames(shared_path("bags", name, part), pose_topic="/ground_truth/pose")]
    def grey(x):
        return x if x.ndim == 2 else cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)
    bag_images = [(f, grey(f.image())) for f in bag]
    for f in raw[:3]:
        g = grey(f.image())
        same = [b for b, im in bag_images if im.shape == g.shape and np.array_equal(im, g)]
        assert len(same) == 1, f"{name}/{f.name}: no identical image in the bags"
        dt, dr = pose_error(f.T_map_camera, same[0].T_map_camera)
        assert dt < 1e-6 and dr < 1e-6
        np.testing.assert_allclose(f.camera.K, same[0].camera.K, atol=1e-6)
