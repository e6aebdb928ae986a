"""LIFT training quadruplets (training/: scenes, quadruplets, homographies, patches, the data file): geometry,
angle convention, file layout."""
import json
import math
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch

from lift_localizer.features.patches import PatchSampler, crop_patches
from lift_localizer.features.sift import opencv_angle
from lift_localizer.nets.scale_space import SUPPORT_PER_SCALE
from lift_localizer.geometry.camera import Camera
from lift_localizer.bags.writer import write_bag
from lift_localizer.cli import main as cli
from lift_localizer.mapping.frames import posed_frames
from lift_localizer.synthetic import make_texture, room_sequence
from lift_localizer.training import data
from lift_localizer.training.homographies import homography_quads, transfer
from lift_localizer.training.options import SPLITS_FILE, DataError, default_conf, merge_options
from lift_localizer.training.patches import render
from lift_localizer.training.quadruplets import Quads, inside, sfm_quads, webcam_quads
from lift_localizer.training.scenes import scene_from_frames, wrap
from lift_localizer.training import splits
from lift_localizer.training.splits import read_split, select_sources
from lift_localizer.training.webcams import load_webcam, register_translation, webcam_sift

pytest.importorskip("pycolmap")

ROOM_HALF = np.array([3.0, 1.2, 3.0])   # synthetic.room(): the box [-3, 3] × [-1.2, 1.2] × [-3, 3]


def ncc(a, b):
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def centre(p):
    return p[..., 32:96, 32:96]


@pytest.fixture(scope="module")
def room():
    K, mapping, _ = room_sequence(16, 0, image_size=(240, 320))
    cam = Camera(320, 240, K)
    frames = posed_frames(mapping, cam, 10**18)
    return K, frames


@pytest.fixture(scope="module")
def scene(room):
    _, frames = room
    return scene_from_frames("room", frames, {"max_keypoints": 600})


@pytest.fixture(scope="module")
def quads(scene):
    return sfm_quads(scene, 300, np.random.default_rng(0), {"max_keypoints": 600})


def raycast(K, T, xy):
    """Where the rays through pixels xy of a camera inside the synthetic room hit its walls."""
    d = np.c_[(xy - K[:2, 2]) / np.diag(K)[:2], np.ones(len(xy))] @ T[:3, :3].T
    c = T[:3, 3]
    with np.errstate(divide="ignore"):
        t = np.maximum((ROOM_HALF - c) / d, (-ROOM_HALF - c) / d).min(axis=1)
    return c + d * t[:, None]


def project(K, T, X):
    x = (X - T[:3, 3]) @ T[:3, :3]
    return (x[:, :2] / x[:, 2:]) * np.diag(K)[:2] + K[:2, 2]


# Angle convention ----------------------------------------------------------------------------------------


def test_opencv_angle_points_along_y_down():
    """An image brighter below its keypoint: OpenCV says 90°, i.e. +y (down) in our convention."""
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float32)
    blob = np.exp(-((xx - 48) ** 2 + (yy - 48) ** 2) / (2 * 9.0 ** 2))
    image = np.clip(100 + 80 * blob * (1 + (yy - 48) / 9), 0, 255)
    xy, sigma, angle, _ = webcam_sift(image, 5)
    k = int(np.argmin(np.linalg.norm(xy - 48, axis=1)))
    assert abs(angle[k] - np.pi / 2) < np.radians(10)


def test_sift_angles_and_patches_follow_a_90_degree_rotation():
    """SIFT on an image and on it rotated 90° clockwise (cv2.rotate): corresponding keypoints' angles,
    converted with features.sift.opencv_angle, differ by +90°, and crop_patches cuts the same patch at them."""
    img = make_texture(384, seed=3)[40:340, 20:360].astype(np.float32)
    rot = cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE)
    h = img.shape[0]
    xy1, s1, a1, _ = webcam_sift(img, 400)
    xy2, s2, a2, _ = webcam_sift(rot, 400)
    mapped = np.c_[h - 1 - xy1[:, 1], xy1[:, 0]]            # (x, y) → (H − 1 − y, x)
    d = np.linalg.norm(mapped[:, None] - xy2[None], axis=2)
    j = d.argmin(1)
    same = (d.min(1) < 0.3) & (np.abs(s1 - s2[j]) < 0.05 * s1)
    diff = wrap(a2[j] - a1)[same]
    assert same.sum() > 50
    assert np.mean(np.abs(wrap(diff - np.pi / 2)) < np.radians(5)) > 0.6     # SIFT has several angles per place
    assert np.mean(np.abs(wrap(diff + np.pi / 2)) < np.radians(5)) < 0.1
    # crop_patches: the same patch at (xy, θ) in the image and (mapped xy, θ + 90°) in the rotated one.
    t1, t2 = torch.from_numpy(img)[None, None], torch.from_numpy(rot)[None, None]
    c = torch.tensor([[150.0, 140.0]])
    cr = torch.tensor([[h - 1 - 140.0, 150.0]])
    theta = torch.tensor([0.7])
    sup = torch.tensor([60.0])
    p1 = crop_patches(t1, c, sup, theta, 32)
    p2 = crop_patches(t2, cr, sup, theta + math.pi / 2, 32)
    p_wrong = crop_patches(t2, cr, sup, theta - math.pi / 2, 32)
    # Equal up to float rounding of the sampling positions (~1e-5 px) times the texture's steepest
    # gradients (~100 grey levels a pixel): measured 1.5e-3; a wrong angle differs by > 10 on average.
    assert (p1 - p2).abs().max() < 0.02
    assert (p1 - p_wrong).abs().mean() > 10


def test_map_keypoints_and_orientations_are_converted(scene):
    """The SIFT map's keypoints and orientations (features/sift.py, as it is) come out at the position
    of the unbiased OpenCV keypoint (precise upscale; OpenCV's default is 0.25 px right and down) and
    with opencv_angle of its angle."""
    gray = scene.gray(0)
    kps = cv2.SIFT_create(nfeatures=600, enable_precise_upscale=True).detect(gray.astype(np.uint8), None)
    xy = np.array([k.pt for k in kps])
    d = np.linalg.norm(scene.keypoints[0][:, None] - xy[None], axis=2)
    j = d.argmin(1)
    same = (d.min(1) < 0.1) & (np.abs(scene.sigmas[0] * 2 / np.array([k.size for k in kps])[j] - 1) < 0.03)
    assert same.sum() > 50
    assert np.all(np.abs(np.mean(scene.keypoints[0][same] - xy[j[same]], axis=0)) < 0.05)   # no bias left
    ours = wrap(opencv_angle([kps[k].angle for k in j[same]]))
    assert np.mean(np.abs(wrap(scene.angles[0][same] - ours)) < np.radians(5)) > 0.5   # ties: several angles per place
    assert np.mean(np.abs(wrap(scene.angles[0][same] + ours)) < np.radians(5)) < 0.2


# SfM quadruplets on the synthetic room ------------------------------------------------------------------


def test_p1_p2_are_one_3d_point_p3_another(scene, quads, room):
    K, frames = room
    assert len(quads) == 300
    poses = [f.T_map_camera for f in frames]
    by_name = {f.name: k for k, f in enumerate(frames)}
    T = [poses[by_name[n]] for n in scene.names]
    i1, i2, i3 = quads.image[:, 0], quads.image[:, 1], quads.image[:, 2]
    assert np.all(i1 != i2)
    assert np.all(quads.point[:, 0] != quads.point[:, 1])
    X = np.array([scene.points[int(p)] for p in quads.point[:, 0]])
    for k, im in ((0, i1), (1, i2)):
        err = np.array([np.linalg.norm(project(K, T[i], X[n:n + 1])[0] - quads.xy[n, k]) for n, i in enumerate(im)])
        assert err.max() < 2.0 and np.median(err) < 1.0
    # Independent of the triangulation: the ray through P1 hits the room where P2's camera sees P2.
    hit = np.array([raycast(K, T[i], quads.xy[n:n + 1, 0])[0] for n, i in enumerate(i1)])
    err = np.array([np.linalg.norm(project(K, T[i], hit[n:n + 1])[0] - quads.xy[n, 1]) for n, i in enumerate(i2)])
    assert np.median(err) < 1.0 and np.quantile(err, 0.9) < 2.0
    X3 = np.array([scene.points[int(p)] for p in quads.point[:, 1]])
    assert np.all(np.linalg.norm(X3 - X, axis=1) > 1e-3)
    for n, i in enumerate(i3):   # P3 is an observation of its point
        assert np.linalg.norm(project(K, T[i], X3[n:n + 1])[0] - quads.xy[n, 2]) < 2.0
    # Each keypoint's own angle; the cameras do not roll, so the two views' angles mostly agree.
    assert np.mean(np.abs(wrap(quads.angle[:, 0] - quads.angle[:, 1])) < np.radians(20)) > 0.7
    # Many different points.
    assert len(np.unique(quads.point[:, 0])) > 150


def test_p4_is_far_from_every_keypoint(scene, quads):
    conf = default_conf
    for n in range(len(quads)):
        i = quads.image[n, 3]
        xy, s = quads.xy[n, 3], quads.sigma[n, 3]
        d = np.linalg.norm(scene.keypoints[i] - xy, axis=1)
        assert np.all(d >= conf["min_separation_sigmas"] * np.maximum(s, scene.sigmas[i]) - 1e-9)
        assert inside(xy, [s], scene.sizes[i], conf["border_sigmas"])[0]
        assert np.any(np.isclose(s, np.concatenate(scene.sigmas)))      # a scale some keypoint has
    assert np.all(quads.angle[:, 3] == 0)


def test_patches_are_cut_as_inference_cuts_them(scene, quads):
    quads = Quads(*(getattr(quads, k)[:120] for k in ("image", "xy", "sigma", "angle", "point")))
    patches = render(scene, quads)
    assert patches.shape == (120, 4, 128, 128) and patches.dtype == np.uint8
    n = 40
    for k in range(4):
        for i in np.unique(quads.image[:n, k]):
            sel = np.flatnonzero(quads.image[:n, k] == i)
            sampler = PatchSampler(torch.from_numpy(scene.gray(int(i)))[None, None], 64)
            ref = sampler(torch.from_numpy(quads.xy[sel, k]).float(),
                          torch.from_numpy(SUPPORT_PER_SCALE * quads.sigma[sel, k]).float())[:, 0].numpy()
            assert np.abs(centre(patches[sel, k]).astype(np.float32) - ref).max() <= 0.5 + 1e-3
    # The two views of a point look alike, more than two points do.
    same = np.mean([ncc(centre(p[0]), centre(p[1])) for p in patches])
    other = np.mean([ncc(centre(p[0]), centre(p[2])) for p in patches])
    assert same > 0.6 and same > other + 0.4


# Homographies --------------------------------------------------------------------------------------------


def test_homography_transfers_position_scale_and_angle():
    a = np.radians(30)
    H = np.array([[1.5 * np.cos(a), -1.5 * np.sin(a), 20], [1.5 * np.sin(a), 1.5 * np.cos(a), -5], [0, 0, 1]])
    xy, s, t, front = transfer(H, np.array([[100.0, 50.0]]), np.array([3.0]), np.array([0.2]))
    assert front[0] and np.allclose(xy, (H @ [100, 50, 1])[:2]) and np.isclose(s[0], 4.5) and np.isclose(t[0], 0.2 + a)
    # A projective one: the transferred angle is the image of a short step along the keypoint's direction.
    H = np.array([[1.1, 0.2, 3], [-0.1, 0.9, 7], [4e-4, -3e-4, 1]])
    x0, t0 = np.array([[120.0, 80.0]]), np.array([1.0])
    step = x0 + 1e-4 * np.c_[np.cos(t0), np.sin(t0)]
    _, _, t, _ = transfer(H, x0, np.array([2.0]), t0)
    d = transfer(H, step, [2.0], t0)[0] - transfer(H, x0, [2.0], t0)[0]
    assert np.isclose(t[0], np.arctan2(d[0, 1], d[0, 0]), atol=1e-5)


def test_homography_quads_see_the_same_content(scene):
    conf = {"homography": {"gamma": [1.0, 1.0], "contrast": [1.0, 1.0], "brightness": 0.0, "blur": [0.0, 0.0],
                           "noise": [0.0, 0.0], "perspective": 0.05}}
    q, warps = homography_quads(scene, 120, np.random.default_rng(1), conf)
    assert len(q) == 120 and len(warps) >= 3
    assert np.all(q.image[:, 1] >= len(scene)) and np.all(q.image[:, 0] < len(scene))
    # Rotated by their angles, the central supports of P1 and P2 agree (upright they would not).
    patches = torch.from_numpy(render(scene, q, warps)).float()
    c = torch.full((1, 2), 63.5)

    def rotated(p, angle):
        return crop_patches(p[None, None], c, torch.tensor([64.0]), torch.tensor([float(angle)]), 32)[0, 0].numpy()
    good = [ncc(rotated(p[0], q.angle[n, 0]), rotated(p[1], q.angle[n, 1])) for n, p in enumerate(patches)]
    upright = [ncc(rotated(p[0], 0), rotated(p[1], 0)) for p in patches]
    assert np.median(good) > 0.8 and np.median(good) > np.median(upright) + 0.2


# The file --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(room, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_bag(root / "bags" / "room" / "mapping", room[1])
    split = {"lift": {"train": ["bags/room/mapping", "raw/absent"], "test": ["bags/room/query", "raw/webcam/elsewhere"]}}
    (root / "splits.json").write_text(json.dumps(split))
    return root


def test_file_layout_and_attrs(data_root, tmp_path, capsys):
    out = tmp_path / "train.h5"
    code = cli(["training-data", "--output", str(out), "--max-per-source", "60", "--data-root", str(data_root),
                   "--split-file", str(data_root / "splits.json"), "--max-keypoints", "600"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "sfm:room" in stdout and "skipped" in stdout and "raw/absent" in stderr
    with h5py.File(out) as f:
        n = len(f["p1"])
        assert n == 60 + 30
        for k in ("p1", "p2", "p3", "p4"):
            assert f[k].shape == (n, 128, 128) and f[k].dtype == np.uint8
        for k in ("angle1", "angle2", "angle3"):
            assert f[k].shape == (n,) and f[k].dtype == np.float32
            assert np.all(np.abs(f[k][:]) <= np.pi + 1e-6)
        assert f["source"].dtype == np.int16
        for k in ("point1", "point3"):
            assert f[k].shape == (n,) and f[k].dtype == np.int64 and f[k][:].min() >= 0
        assert np.all(f["point1"][:] != f["point3"][:])          # P3 is another point
        sources = json.loads(f.attrs["sources"])
        assert sources == ["sfm:room", "homography:room"]
        assert np.bincount(f["source"][:], minlength=2).tolist() == [60, 30]
        assert f["source"][:60].min() == 0 and f["source"][:60].max() == 1       # rows shuffled across sources
        assert int(f.attrs["patch_size"]) == 128
        split = json.loads(f.attrs["split"])
        assert split["section"] == "lift" and split["file"].endswith("splits.json")
        created = json.loads(f.attrs["created"])
        assert created["parameters"]["max_per_source"] == 60 and created["counts"] == {"sfm:room": 60,
                                                                                         "homography:room": 30}
        assert f["p1"][:].std() > 10 and f["p4"][:].std() > 5


def test_rows_stay_together_when_shuffled(tmp_path, monkeypatch):
    """Every row of the file holds one quadruplet's four patches, angles, point ids and source, whatever the shuffle."""
    monkeypatch.setattr(data, "WRITE_BLOCK", 128)
    sizes = (70, 500, 3)
    parts = []
    for k, n in enumerate(sizes):
        patches = np.zeros((n, 4, 128, 128), np.uint8)
        patches[:, :, 0, 0] = k
        patches[:, :, 0, 1] = (np.arange(n) % 251)[:, None]
        patches[:, :, 0, 2] = (np.arange(n) // 251)[:, None]
        patches[:, :, 0, 3] = np.arange(4)[None]
        angles = (k + np.arange(n)[:, None] * 1e-4 + np.arange(3)[None] * 10).astype(np.float32)
        points = np.stack([k * 1000 + np.arange(n), k * 1000 + np.arange(n) + 500], 1).astype(np.int64)
        np.save(tmp_path / f"{k}.npy", patches)
        np.save(tmp_path / f"{k}.a.npy", angles)
        np.save(tmp_path / f"{k}.i.npy", points)
        parts.append((f"s{k}", tmp_path / f"{k}.npy", tmp_path / f"{k}.a.npy", tmp_path / f"{k}.i.npy"))
    data._write(tmp_path / "f.h5", parts, default_conf, {"file": None, "section": None, "train": [], "test": []}, {}, 0.0)
    with h5py.File(tmp_path / "f.h5") as f:
        src = f["source"][:]
        assert np.bincount(src).tolist() == list(sizes) and not np.all(np.diff(src) >= 0)
        for c, key in enumerate(("p1", "p2", "p3", "p4")):
            head = f[key][:, 0, :4].astype(np.int64)
            assert np.all(head[:, 0] == src) and np.all(head[:, 3] == c)
            local = head[:, 1] + 251 * head[:, 2]
            for a in range(3):
                assert np.allclose(f[f"angle{a + 1}"][:], src + local * 1e-4 + a * 10, atol=1e-3)
            for k, n in enumerate(sizes):
                assert sorted(local[src == k]) == list(range(n))
            assert np.all(f["point1"][:] == src * 1000 + local) and np.all(f["point3"][:] == src * 1000 + local + 500)


def test_sources_and_clear_errors(data_root, tmp_path):
    conf = {"data_root": str(data_root), "split_file": str(data_root / "splits.json")}
    for token in ("elsewhere", "webcam:elsewhere", "bags/room/query"):
        with pytest.raises(DataError, match="test set"):
            data.build_dataset(tmp_path / "x.h5", {**conf, "sources": [token]})
    with pytest.raises(DataError, match="unknown source"):
        data.build_dataset(tmp_path / "x.h5", {**conf, "sources": ["sfm:nothing"]})
    with pytest.raises(DataError, match="every source was skipped"):
        data.build_dataset(tmp_path / "x.h5", {**conf, "sources": ["absent"]}, log=lambda m: None)
    assert not (tmp_path / "x.h5").exists()
    (data_root / "bad.json").write_text(json.dumps({"lift": {"train": ["raw/a"], "test": ["raw/a/b"]}}))
    with pytest.raises(DataError, match="overlaps"):
        read_split(data_root / "bad.json")


def test_project_split_keeps_test_sets_out():
    split = read_split(SPLITS_FILE)
    assert "raw/webcam/mexico" in split["train"] and "raw/webcam/chamonix" in split["test"]
    assert all(p.endswith("/mapping") for p in split["train"] if p.startswith("bags/"))
    assert {"bags/fox/query", "bags/kitti_seq1/query", "bags/tum_fr3_office/query", "raw/scannet_pairs"} <= set(split["test"])
    names = [s for e, ss in select_sources(split["train"], None) for s in ss]
    assert "webcam:mexico" in names and "sfm:sacre_coeur" in names and "homography:llff_fern" in names
    assert not any("chamonix" in s or "courbevoie" in s for s in names)
    assert "netvlad" in json.loads(SPLITS_FILE.read_text())


# Webcams ----------------------------------------------------------------------------------------------------


def test_translation_registration():
    img = make_texture(400, seed=5).astype(np.float32)
    shifted = cv2.warpAffine(img, np.float32([[1, 0, 1.5], [0, 1, -0.75]]), (400, 400), flags=cv2.INTER_LINEAR)
    xy0, _, _, d0 = webcam_sift(img, 800)
    xy1, _, _, d1 = webcam_sift(shifted, 800)
    t = register_translation(d0, xy0, d1, xy1, 15)
    assert np.allclose(t, [1.5, -0.75], atol=0.15)


def test_real_webcam_pairs(tmp_path):
    from conftest import shared_path

    folder = shared_path("raw", "webcam", "mexico")
    for p in sorted(folder.glob("*.png"))[:6]:
        (tmp_path / p.name).symlink_to(p)
    conf = merge_options(default_conf, {"max_keypoints": 1000, "webcam": {"min_repeats": 2}})
    scene = load_webcam("mexico", tmp_path, conf, log=lambda m: None)
    assert 4 <= len(scene) <= 6 and np.all(np.abs(scene.offsets) < 3)
    q = webcam_quads(scene, 150, np.random.default_rng(0), conf)
    assert len(q) == 150
    a, b = q.image[:, 0], q.image[:, 1]
    assert np.all(a != b) and np.all(q.image[:, 2] == b) and np.all(q.image[:, 3] == b)
    assert np.allclose(q.xy[:, 1] - q.xy[:, 0], scene.offsets[b] - scene.offsets[a])     # the same registered pixel
    assert np.all(q.sigma[:, 0] == q.sigma[:, 1]) and np.all(q.angle[:, 0] == q.angle[:, 1])
    ref1, ref3 = q.xy[:, 0] - scene.offsets[a], q.xy[:, 2] - scene.offsets[b]
    assert np.all(np.linalg.norm(ref3 - ref1, axis=1) >= 2 * np.maximum(q.sigma[:, 0], q.sigma[:, 2]) - 1e-9)
    patches = render(scene, q)
    same = np.median([ncc(centre(p[0]), centre(p[1])) for p in patches])
    other = np.median([ncc(centre(p[0]), centre(p[2])) for p in patches])
    assert same > 0.5 and same > other + 0.3


def test_fine_tuning_data_from_a_users_own_bag(data_root, tmp_path, capsys):
    # No split file, no data root: the user's bag is the training set.
    out = tmp_path / "mine.h5"
    bag = data_root / "bags" / "room" / "mapping"
    code = cli(["training-data", "--output", str(out), "--bag", str(bag), "--max-per-source", "40", "--max-keypoints", "600",
                   "--data-root", str(tmp_path / "nowhere"), "--split-file", str(tmp_path / "nosplit.json")])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    with h5py.File(out) as f:
        assert json.loads(f.attrs["sources"]) == ["sfm:mapping", "homography:mapping"] and len(f["p1"]) == 60
        split = json.loads(f.attrs["split"])
        assert split["file"] is None and split["train"] == [str(bag.resolve())]
    assert cli(["training-data", "--output", str(out), "--images", str(tmp_path / "absent")]) == 2
    assert "absent" in capsys.readouterr().err


def test_a_users_bags_beside_the_splits_sets_each_under_its_own_name(data_root, tmp_path, capsys):
    bags = [tmp_path / side / "mapping" for side in ("a", "b")]
    for bag in bags:
        shutil.copytree(data_root / "bags" / "room" / "mapping", bag)
    out = tmp_path / "more.h5"
    code = cli(["training-data", "--output", str(out), "--keep-split", "--bag", str(bags[0]), "--bag", str(bags[1]),
                "--max-per-source", "20", "--max-keypoints", "600", "--data-root", str(data_root),
                "--split-file", str(data_root / "splits.json")])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    with h5py.File(out) as f:
        assert json.loads(f.attrs["sources"]) == ["sfm:room", "homography:room", "sfm:a/mapping",
                                                  "homography:a/mapping", "sfm:b/mapping", "homography:b/mapping"]
        assert np.bincount(f["source"][:]).tolist() == [20, 10] * 3
        split = json.loads(f.attrs["split"])
        assert split["section"] == "lift" and split["train"][-2:] == [str(b.resolve()) for b in bags]
    # A set the split holds out is refused before anything is built.
    held_out = data_root / "raw" / "webcam" / "elsewhere"
    held_out.mkdir(parents=True, exist_ok=True)
    refused = tmp_path / "refused.h5"
    assert cli(["training-data", "--output", str(refused), "--keep-split", "--webcam", str(held_out),
                "--data-root", str(data_root), "--split-file", str(data_root / "splits.json")]) == 2
    assert "held out by the split" in capsys.readouterr().err and not refused.exists()


def test_user_sets_are_named_by_as_many_path_parts_as_tell_them_apart():
    names = splits._unique_names([Path("/x/a/mapping"), Path("/y/b/mapping"), Path("/z/c")], {"c"})
    assert names == ["a/mapping", "b/mapping", "z/c"]
    with pytest.raises(DataError, match="taken"):
        splits._unique_names([Path("/c")], {"c"})
