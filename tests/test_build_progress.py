"""build-map's progress: one tqdm bar per stage (features, then per feature set matching,
triangulation and writing), each run to its end."""
import pytest
from tqdm import tqdm

from lift_localizer.geometry.camera import Camera
from lift_localizer.mapping import build
from lift_localizer.mapping.frames import Frame
from lift_localizer.synthetic import room_sequence

pytest.importorskip("pycolmap")


def test_every_stage_has_a_bar(tmp_path, monkeypatch):
    bars = []

    class Recording(tqdm):
        def __init__(self, *args, **kwargs):
            # Shown even off a terminal, so that the bar keeps its count (a closed bar reads disabled).
            self.hidden = kwargs.get("disable") is True
            super().__init__(*args, **{**kwargs, "disable": self.hidden})
            bars.append(self)

    monkeypatch.setattr(build, "tqdm", Recording)
    K, mapping, _ = room_sequence(8, 0, image_size=(240, 320))
    camera = Camera(320, 240, K)
    frames = [Frame(f"{i}", camera, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(mapping)]
    summary = build.build_map(frames, tmp_path / "map", ("sift",), {"max_keypoints": 300}, log=lambda m: None)
    assert summary["sift"]["points"] > 0
    shown = [b for b in bars if not b.hidden]
    assert [b.desc for b in shown] == ["features sift", "matching sift", "triangulation sift", "writing sift"]
    assert shown[0].n == len(frames) and shown[1].n == summary["sift"]["pairs"]
    for b in shown:
        assert b.total is not None and b.n == b.total, b.desc
