"""Reading posed sequences from rosbag2 (sqlite3 and mcap), and every way a bag can be wrong."""
import shutil

import numpy as np
import pytest

from lift_localizer.images import ImageError
from lift_localizer.geometry.camera import Camera
from lift_localizer.bags.reader import BagError, bag_topics, read_frames
from lift_localizer.bags.writer import write_bag
from lift_localizer.mapping.frames import Frame
from lift_localizer.synthetic import look_at

from conftest import shared_path

K = np.array([[100.0, 0, 39.5], [0, 100.0, 29.5], [0, 0, 1]])
CAM = Camera(80, 60, K, [0.01, -0.002, 0, 0, 0])


def frames(n=3, colour=False):
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        image = rng.integers(0, 256, (60, 80, 3) if colour else (60, 80)).astype(np.uint8)
        T = look_at(np.array([0.1 * i, 0, 0]), np.array([0.1 * i, 0, 1.0]))
        out.append(Frame(str(i), CAM, T, stamp_ns=1_700_000_000_000_000_000 + i * 100_000_000,
                         loader=lambda im=image: im))
    return out


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("colour,compressed", [(False, False), (True, False), (True, True)])
def test_round_trip(tmp_path, storage, colour, compressed):
    src = frames(colour=colour)
    write_bag(tmp_path / "bag", src, compressed=compressed, storage=storage)
    back = read_frames(tmp_path / "bag", pose_topic="/ground_truth/pose")
    assert [f.name for f in back] == [str(f.stamp_ns) for f in src]
    for a, b in zip(src, back):
        assert b.stamp_ns == a.stamp_ns and b.error is None
        np.testing.assert_allclose(b.camera.K, K)
        np.testing.assert_allclose(b.camera.dist, [0.01, -0.002, 0, 0, 0])
        np.testing.assert_allclose(b.T_map_camera, a.T_map_camera, atol=1e-12)
        image = b.image()
        if compressed:
            assert image.shape == a.image().shape
        else:
            np.testing.assert_array_equal(image, a.image())


def test_without_pose_topic_no_pose_is_read(tmp_path):
    write_bag(tmp_path / "bag", frames())
    assert all(f.T_map_camera is None for f in read_frames(tmp_path / "bag"))


def test_the_db3_file_path_works_too(tmp_path):
    write_bag(tmp_path / "bag", frames())
    db = next((tmp_path / "bag").glob("*.db3"))
    assert len(read_frames(db)) == 3
    assert bag_topics(tmp_path / "bag")["/camera/image_raw"] == ("sensor_msgs/msg/Image", 3)


def test_frames_without_pose_get_none(tmp_path):
    src = frames()
    src[1] = Frame(src[1].name, CAM, None, src[1].stamp_ns, loader=src[1].loader)
    write_bag(tmp_path / "bag", src)
    back = read_frames(tmp_path / "bag", pose_topic="/ground_truth/pose")
    assert [f.T_map_camera is None for f in back] == [False, True, False]


def test_missing_topics(tmp_path):
    write_bag(tmp_path / "bag", frames(), with_poses=False)
    with pytest.raises(BagError, match="no pose topic '/ground_truth/pose'"):
        read_frames(tmp_path / "bag", pose_topic="/ground_truth/pose")
    with pytest.raises(BagError, match="no camera_info topic '/other/info'"):
        read_frames(tmp_path / "bag", camera_info_topic="/other/info")
    with pytest.raises(BagError, match="no topic '/nope'"):
        read_frames(tmp_path / "bag", image_topic="/nope")
    with pytest.raises(BagError, match="is a sensor_msgs/msg/CameraInfo"):
        read_frames(tmp_path / "bag", image_topic="/camera/camera_info")


def test_images_before_any_camera_info(tmp_path):
    """A frame with no camera_info at or before it is an error on that frame, not a guess."""
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    write_bag(tmp_path / "full", frames())
    ts = get_typestore(Stores.LATEST)
    with Reader(tmp_path / "full") as r, Writer(tmp_path / "late", version=8) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections}
        for c, t, raw in r.messages():
            if c.topic == "/camera/camera_info" and t == min(f.stamp_ns for f in frames()):
                continue
            w.write(conns[c.id], t, raw)
    back = read_frames(tmp_path / "late")
    assert back[0].error == "no camera_info (none at or before this image)" and back[0].camera is None
    assert back[1].error is None
    with pytest.raises(ImageError, match="no camera_info"):
        back[0].image()


def test_unknown_encoding_fails_that_frame_only(tmp_path):
    from rosbags.rosbag2 import Reader, Writer
    from rosbags.typesys import Stores, get_typestore

    write_bag(tmp_path / "ok", frames())
    ts = get_typestore(Stores.LATEST)
    with Reader(tmp_path / "ok") as r, Writer(tmp_path / "bad", version=8) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections}
        for c, t, raw in r.messages():
            if c.topic == "/camera/image_raw" and t == frames()[1].stamp_ns:
                m = ts.deserialize_cdr(raw, c.msgtype)
                m.encoding = "32FC1"
                raw = ts.serialize_cdr(m, c.msgtype)
            w.write(conns[c.id], t, raw)
    back = read_frames(tmp_path / "bad")
    with pytest.raises(ImageError, match="32FC1"):
        back[1].image()
    assert back[0].image().shape == (60, 80) and back[2].image().shape == (60, 80)


def test_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="no such bag"):
        read_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BagError, match="not a readable rosbag2"):
        read_frames(tmp_path / "empty")


def test_corrupt_and_truncated_database(tmp_path):
    write_bag(tmp_path / "bag", frames(6))
    db = next((tmp_path / "bag").glob("*.db3"))
    shutil.copytree(tmp_path / "bag", tmp_path / "garbage")
    (tmp_path / "garbage" / db.name).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BagError, match="garbage"):
        read_frames(tmp_path / "garbage")
    shutil.copytree(tmp_path / "bag", tmp_path / "trunc")
    data = db.read_bytes()
    (tmp_path / "trunc" / db.name).write_bytes(data[: len(data) // 2])
    with pytest.raises(BagError, match="trunc"):
        read_frames(tmp_path / "trunc")


def test_real_bags():
    kitti = read_frames(shared_path("bags", "kitti_seq1", "mapping"), pose_topic="/ground_truth/pose")
    assert len(kitti) == 17 and all(f.T_map_camera is not None for f in kitti)
    assert kitti[0].camera.width == 1226 and np.isclose(kitti[0].camera.K[0, 0], 707.0912)
    assert kitti[0].image().shape == (370, 1226)
    fox = read_frames(shared_path("bags", "fox", "query"))
    assert len(fox) == 33 and fox[0].image().shape == (1920, 1080, 3)
    assert fox[0].camera.has_distortion and fox[0].T_map_camera is None
