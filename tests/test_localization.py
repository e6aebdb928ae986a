"""Map building and localization end to end on the synthetic room, and how they fail."""
import json
import shutil

import h5py
import numpy as np
import torch
import pytest

from lift_localizer.geometry.camera import Camera
from lift_localizer.geometry.pose import pose_error
from lift_localizer.localization import localizer as loc
from lift_localizer.localization.localizer import Localizer, covisibility_clusters
from lift_localizer.mapping.build import MapBuildError, build_map, select_pairs
from lift_localizer.mapping.frames import Frame
from lift_localizer.mapping.io import MAP_FORMAT_VERSION, MapError, load_map
from lift_localizer.synthetic import look_at, room_sequence, warm_up_image

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def room():
    K, mapping, query = room_sequence(10, 3, image_size=(240, 320))
    cam = Camera(320, 240, K)
    frames = [Frame(f"map_{i}", cam, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
    return cam, frames, query


@pytest.fixture(scope="module")
def room_map(room, tmp_path_factory):
    cam, frames, _ = room
    out = tmp_path_factory.mktemp("maps") / "room"
    summary = build_map(frames, out, ("sift", "lift"), {"max_keypoints": 400}, log=lambda m: None)
    return out, summary


def test_map_directory_contents(room_map):
    out, summary = room_map
    for d in (out, out / "alt" / "lift"):
        assert (d / "map.json").is_file() and (d / "features.h5").is_file() and (d / "points.h5").is_file()
        assert {p.name for p in (d / "sparse").iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}
    meta = json.loads((out / "map.json").read_text())
    assert meta["format_version"] == MAP_FORMAT_VERSION and meta["features"]["name"] == "sift"
    assert summary["sift"]["points"] > 200 and summary["lift"]["points"] > 200
    assert summary["sift"]["mean_reprojection_error_px"] < 1.0
    # The COLMAP model opens in pycolmap with the poses we gave.
    import pycolmap

    rec = pycolmap.Reconstruction(str(out / "sparse"))
    assert rec.num_reg_images() == 10 and rec.num_points3D() == summary["sift"]["points"]
    m = load_map(out)
    ids = np.concatenate([im.point3D_ids[im.point3D_ids >= 0] for im in m.images])
    assert set(ids.tolist()) == set(m.point_ids.tolist())


def test_map_points_lie_on_the_room_walls(room_map):
    m = load_map(room_map[0])
    # room(): walls at |x| = 3 or |z| = 3, floor/ceiling at |y| = 1.2
    d = np.min(np.abs(np.stack([np.abs(m.xyz[:, 0]) - 3, np.abs(m.xyz[:, 2]) - 3, np.abs(m.xyz[:, 1]) - 1.2])), 0)
    assert np.median(d) < 0.01


@pytest.mark.parametrize("features", ["sift", "lift"])
def test_localize_queries(room, room_map, features):
    cam, _, query = room
    localizer = Localizer(load_map(room_map[0], features), {"max_keypoints": 400})
    for image, T in query:
        r = localizer(image, cam)
        assert r.success, r.reason
        dt, dr = pose_error(r.T_map_camera, T)
        # Small images, few points: centimetres, and within what the covariance predicts.
        assert dt < 0.1 and dr < 2.0
        assert r.covariance.shape == (6, 6) and np.all(np.isfinite(r.covariance))
        assert dt < 5 * np.sqrt(np.trace(r.covariance[:3, :3]))
        assert set(r.timings) >= {"extract", "retrieve", "match", "pnp"}


def test_all_solvers_agree(room, room_map):
    from lift_localizer.localization.absolute_pose import available_solvers

    cam, _, query = room
    m = load_map(room_map[0])
    localizers = [Localizer(m, {"solver": s}) for s in available_solvers()]
    for image, _ in query:
        ref, *others = [localize(image, cam) for localize in localizers]
        # The solvers refine differently, so they agree to within the pose's own standard deviation,
        # not to a fixed distance (measured: at most 0.63 σ, on the query with the fewest inliers).
        sigma_t = np.sqrt(np.trace(ref.covariance[:3, :3]))
        sigma_r = np.degrees(np.sqrt(np.trace(ref.covariance[3:, 3:])))
        for r in others:
            dt, dr = pose_error(r.T_map_camera, ref.T_map_camera)
            assert dt < sigma_t and dr < sigma_r


def test_failure_reasons(room, room_map):
    cam, _, _ = room
    localizer = Localizer(load_map(room_map[0]))
    blank = localizer(np.full((240, 320), 128, np.uint8), cam)
    assert not blank.success and blank.reason == loc.NO_FEATURES
    noise = np.random.default_rng(0).integers(0, 256, (240, 320)).astype(np.uint8)
    r = localizer(noise, cam)
    assert not r.success and r.reason.split(" (")[0] in (loc.TOO_FEW_INLIERS, loc.LOW_INLIER_RATIO, loc.PNP_FAILED,
                                                         loc.TOO_FEW_MATCHES, loc.NO_RETRIEVAL)
    strict = Localizer(load_map(room_map[0]), {"min_inliers": 10**6})
    image = room[2][0][0]
    r = strict(image, cam)
    assert not r.success and r.reason.startswith(loc.TOO_FEW_INLIERS) and r.T_map_camera is not None
    with pytest.raises(ValueError, match="camera"):
        localizer(image[:100], cam)


def test_covisibility_clusters(room_map):
    m = load_map(room_map[0])
    clusters = covisibility_clusters(m, np.array([0, 5, 1, 6]), 5)
    # Neighbouring headings share points; opposite sides of the room do not.
    assert [sorted(c.tolist()) for c in clusters] == [[0, 1], [5, 6]]
    # Sharing at least 0 points: every retrieved image is in the one place, best-ranked first.
    assert [c.tolist() for c in covisibility_clusters(m, np.array([0, 5, 1, 6]), 0)] == [[0, 5, 1, 6]]


def test_select_pairs_uses_position_and_direction():
    T = [look_at(np.array([x, 0, 0.0]), np.array([x, 0, 1.0])) for x in range(5)]
    T.append(look_at(np.array([0.5, 0, 0.0]), np.array([0.5, 0, -1.0])))   # looks the other way
    pairs = select_pairs(T, 2, 75.0)
    assert (0, 1) in pairs and (0, 2) in pairs and (0, 4) not in pairs
    assert not any(5 in p for p in pairs)


def test_map_errors(room_map, tmp_path):
    src = room_map[0]
    with pytest.raises(MapError, match="no such map"):
        load_map(tmp_path / "nothing")
    with pytest.raises(MapError, match="not a map"):
        load_map(tmp_path)
    bad = tmp_path / "v0"
    shutil.copytree(src, bad)
    meta = json.loads((bad / "map.json").read_text())
    (bad / "map.json").write_text(json.dumps({**meta, "format_version": 0}))
    with pytest.raises(MapError, match="format version 0"):
        load_map(bad)
    (bad / "map.json").write_text("{not json")
    with pytest.raises(MapError, match="corrupt"):
        load_map(bad)
    trunc = tmp_path / "trunc"
    shutil.copytree(src, trunc)
    data = (trunc / "features.h5").read_bytes()
    (trunc / "features.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(MapError, match="corrupt or incomplete"):
        load_map(trunc)
    with pytest.raises(MapError, match="no 'nope' features"):
        load_map(src, "nope")


def test_map_from_other_weights_is_refused(room_map, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(room_map[0] / "alt" / "lift", other)
    meta = json.loads((other / "map.json").read_text())
    meta["features"]["weights"]["desc"] = "0" * 64
    (other / "map.json").write_text(json.dumps(meta))
    with pytest.raises(MapError, match="other lift weights"):
        Localizer(load_map(other))


def test_failed_build_leaves_nothing(room, tmp_path):
    cam, frames, _ = room
    target = tmp_path / "map"
    with pytest.raises(MapBuildError):
        build_map(frames[:1], target, ("sift",), log=lambda m: None)
    unposed = [Frame(f.name, f.camera, None, loader=f.loader) for f in frames]
    with pytest.raises(MapBuildError, match="at least 2"):
        build_map(unposed, target, ("sift",), log=lambda m: None)
    # Poses that contradict the images: nothing verifies, nothing is triangulated, nothing written.
    shuffled = [Frame(f.name, f.camera, frames[(i * 3) % len(frames)].T_map_camera, loader=f.loader)
                for i, f in enumerate(frames)]
    with pytest.raises(MapBuildError, match="no 3D points"):
        build_map(shuffled, target, ("sift",), log=lambda m: None)
    assert not target.exists() and not any(tmp_path.iterdir())


def test_existing_map_survives_a_failed_rebuild(room_map, room, tmp_path):
    target = tmp_path / "map"
    shutil.copytree(room_map[0], target)
    before = (target / "map.json").read_text()
    with pytest.raises(MapBuildError):
        build_map(room[1][:1], target, ("sift",), log=lambda m: None)
    assert (target / "map.json").read_text() == before
    with h5py.File(target / "features.h5") as f:
        assert len(f.keys()) == 10


def test_sfm_recovers_poses_up_to_scale(tmp_path):
    from lift_localizer.geometry.pose import invert, rotation_angle_deg
    from lift_localizer.mapping.sfm import poses_from_sfm
    from lift_localizer.synthetic import render
    from lift_localizer.synthetic import room as room_scene

    scene = room_scene()
    K = np.array([[260.0, 0, 159.5], [0, 260.0, 119.5], [0, 0, 1]])
    truth = [look_at(np.array([x, 0.2 * np.sin(3 * x), -0.5 + 0.3 * x]), np.array([2.0, 0.3, 3.0]))
             for x in np.linspace(-0.8, 0.8, 8)]
    cam = Camera(320, 240, K)
    frames = [Frame(f"v{i}", cam, None, loader=lambda im=render(scene, K, T, (240, 320)): im)
              for i, T in enumerate(truth)]
    out = poses_from_sfm(frames, "sift", {"max_keypoints": 800}, log=lambda m: None)
    assert all(f.T_map_camera is not None for f in out)
    for a in range(len(out) - 1):
        est = invert(out[a].T_map_camera) @ out[a + 1].T_map_camera
        gt = invert(truth[a]) @ truth[a + 1]
        assert rotation_angle_deg(est[:3, :3].T @ gt[:3, :3]) < 0.5
        cos = est[:3, 3] @ gt[:3, 3] / np.linalg.norm(est[:3, 3]) / np.linalg.norm(gt[:3, 3])
        assert cos > np.cos(np.radians(5))
    summary = build_map(out, tmp_path / "sfm_map", ("sift",), log=lambda m: None)
    assert summary["sift"]["points"] > 100


def test_an_upright_map_localizes_upright(room, tmp_path):
    cam, frames, query = room
    out = tmp_path / "upright"
    build_map(frames, out, ("lift",), {"max_keypoints": 400, "upright": True}, log=lambda m: None)
    m = load_map(out, "lift")
    assert m.meta["features"]["upright"] is True
    assert all(np.all(im.features.orientations == 0) for im in m.images)
    localizer = Localizer(m, {"max_keypoints": 400})
    assert localizer.extractor.lift.conf["upright"] is True      # the queries follow the map
    r = localizer(query[0][0], cam)
    assert r.success, r.reason
    assert pose_error(r.T_map_camera, query[0][1])[0] < 0.1


def test_matching_on_a_device_gives_the_same_pose_and_keeps_few_map_images(room, room_map, monkeypatch):
    """Where LIFT runs on a GPU the localizer matches there, keeping the descriptors of the map images
    retrieved last; the same code runs here with the CPU standing in for the GPU."""
    import lift_localizer.localization.localizer as loc_module

    cam, _, query = room
    ref = Localizer(load_map(room_map[0], "sift"), {"max_keypoints": 400})
    dev = Localizer(load_map(room_map[0], "sift"), {"max_keypoints": 400})
    dev._match_device = torch.device("cpu")
    monkeypatch.setattr(loc_module, "MAX_ON_DEVICE", 2)
    seen = set()
    for image, _ in query:
        a, b = ref(image, cam), dev(image, cam)
        assert a.success and b.success
        np.testing.assert_allclose(b.T_map_camera, a.T_map_camera, atol=1e-9)
        assert 0 < len(dev._on_device) <= 2
        assert all(t.device.type == "cpu" for t in dev._on_device.values())
        seen |= set(dev._on_device)
    assert len(seen) > 2   # the bound was reached: older images left the device


def test_warm_up_extracts_a_full_budget_at_the_camera_size(room, room_map):
    """The node's warm-up: one extraction at the camera's size that runs ORI and DESC at the batch
    sizes real frames use (a blank image would detect nothing and warm up DET alone)."""
    cam, _, query = room
    localizer = Localizer(load_map(room_map[0], "lift"), {"max_keypoints": 400})
    sizes = []
    extract = localizer.extractor

    class Recording:
        conf = extract.conf

        def __call__(self, gray):
            sizes.append(gray.shape)
            return extract(gray)

    localizer.extractor = Recording()
    assert localizer.warm_up(cam) > 0
    assert sizes == [(cam.height, cam.width)]
    # A camera larger than the extractor works at is warmed up at that size, not allocated in full.
    big = Camera(8000, 6000, cam.K * [[25, 1, 25], [1, 25, 25], [1, 1, 1]])
    localizer.warm_up(big)
    assert sizes[-1] == (960, 1280) == (round(6000 * 1280 / 8000), extract.conf["resize_max"])
    image = warm_up_image(cam.height, cam.width)
    assert image.dtype == np.float32 and image.min() == 0 and image.max() == 255
    assert len(extract(image)) == 400
    assert localizer(query[0][0], cam).success   # nothing the warm-up leaves behind changes a frame
