"""A map build keeps its features on disk: the spool gives back what was appended, matching holds
only the features of nearby tasks, and the build leaves no scratch file in the map."""
import gc
import weakref

import numpy as np
import pytest

from lift_localizer.features.types import Features
from lift_localizer.geometry.camera import Camera
from lift_localizer.geometry.pose import make_T
from lift_localizer.mapping import build
from lift_localizer.mapping.executors import InProcess
from lift_localizer.mapping.frames import Frame
from lift_localizer.mapping.spool import FeatureSpool
from lift_localizer.synthetic import room_sequence


def features(n: int, seed: int, size=(240, 320)) -> Features:
    rng = np.random.default_rng(seed)
    return Features(rng.uniform(0, 300, (n, 2)).astype(np.float32), rng.uniform(2, 9, n).astype(np.float32),
                    rng.uniform(-3, 3, n).astype(np.float32), rng.random(n).astype(np.float32),
                    rng.normal(size=(n, 128)).astype(np.float32), image_size=size)


def test_the_spool_gives_back_what_was_appended_and_removes_its_file(tmp_path):
    written = [features(n, seed) for seed, n in enumerate((50, 0, 7))]
    with FeatureSpool(tmp_path / "f.h5") as spool:
        for f in written:
            spool.append(f)
        assert len(spool) == 3 and (tmp_path / "f.h5").is_file()
        for f, back, kp, desc in zip(written, spool, spool.keypoints, spool.descriptors):
            for key in ("keypoints", "scales", "orientations", "scores", "descriptors"):
                assert np.array_equal(getattr(back, key), getattr(f, key)), key
            assert back.image_size == f.image_size
            assert np.array_equal(kp, f.keypoints) and np.array_equal(desc, f.descriptors)
        assert [len(d) for d in spool.descriptors[0:3:2]] == [50, 7]
        assert np.array_equal(spool[-1].descriptors, written[-1].descriptors)
        with pytest.raises(IndexError):
            spool[3]
    assert not (tmp_path / "f.h5").exists()


class Handle:
    """What the recording executor shares in place of an image's features."""

    def __init__(self, f: Features) -> None:
        self.f = f


class Recording(InProcess):
    """Runs tasks here, sharing each image's features as a Handle and counting the live ones."""

    def __init__(self) -> None:
        self.handles: weakref.WeakSet = weakref.WeakSet()
        self.most_alive = 0

    def share(self, obj):
        h = Handle(obj)
        self.handles.add(h)
        return h

    def each(self, fn, tasks, bar):
        def unwrap(fn):
            def call(conf, vi, fi, views, *fs):
                gc.collect()
                self.most_alive = max(self.most_alive, len(self.handles))
                return fn(conf, vi, fi.f, views, *(h.f for h in fs))
            return call
        return super().each(unwrap(fn), tasks, bar)


class CountingReads:
    def __init__(self, items: list[Features]) -> None:
        self.items, self.reads = items, [0] * len(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Features:
        self.reads[k] += 1
        return self.items[k]


def test_matching_holds_the_features_of_nearby_images_only():
    # 60 cameras along a corridor, each paired with its 4 nearest: image k is read once, when its
    # first task is made, and let go after its last.
    K = np.array([[200.0, 0, 160], [0, 200, 120], [0, 0, 1]])
    camera = Camera(320, 240, K)
    frames = [Frame(str(k), camera, make_T(np.eye(3), np.array([0.5 * k, 0.0, 0.0])), stamp_ns=k) for k in range(60)]
    pairs = build.select_pairs([f.T_map_camera for f in frames], 4, 60.0)
    feats = CountingReads([features(40, k) for k in range(60)])
    executor = Recording()
    build.match_pairs(pairs, feats, frames, build.default_conf, executor, "matching")
    assert feats.reads == [1] * 60
    # Sharing every image first, as a build that holds all its features does, would give 60.
    assert 2 <= executor.most_alive <= 10, executor.most_alive
    gc.collect()
    assert len(executor.handles) == 0


def test_a_built_map_holds_no_scratch_file(tmp_path):
    pytest.importorskip("pycolmap")
    K, mapping, _ = room_sequence(10, 0, image_size=(240, 320))
    camera = Camera(320, 240, K)
    frames = [Frame(f"{i}", camera, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
    build.build_map(frames, tmp_path / "map", ("sift", "lift"), {"max_keypoints": 400}, log=lambda m: None)
    left = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    assert not [p for p in left if build.SPOOL_DIR in p or p.endswith(".h5") and "spool" in p], left
    assert [p.name for p in tmp_path.iterdir()] == ["map"]
