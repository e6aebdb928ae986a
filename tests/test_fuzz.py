"""The hostile-input script (tools/fuzz.py): it reports what each input did, and it can fail."""
import json
import sys
from pathlib import Path

import pytest

from lift_localizer.evaluation import fuzz

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from fuzz import main  # noqa: E402

pytest.importorskip("pycolmap")
pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")


@pytest.fixture(scope="module")
def kept(tmp_path_factory):
    """One --keep folder for both halves: the synthetic room's map is built once."""
    return tmp_path_factory.mktemp("fuzz")


def test_a_kept_scene_is_used_again(tmp_path, monkeypatch):
    for name in ("mapping/metadata.yaml", "query/metadata.yaml", "map/map.json"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")

    def no_build(*args, **kwargs):
        raise AssertionError("a kept scene was built again")

    monkeypatch.setattr(fuzz.subprocess, "run", no_build)
    good_map, query, cam, views = fuzz.make_scene(tmp_path)
    assert (good_map, query) == (tmp_path / "map", tmp_path / "query") and len(views) == 4 and cam.width == 320
    # Without the map (an earlier run stopped before it was written) the bags are written again and it is built.
    (tmp_path / "map" / "map.json").unlink()
    with pytest.raises(AssertionError, match="built again"):
        fuzz.make_scene(tmp_path)
    assert (tmp_path / "query" / "metadata.yaml").stat().st_size > 0


def test_cli_inputs_are_handled_and_tabled(tmp_path, kept, capsys):
    out = tmp_path / "rows.json"
    code = main(["--only", "cli", "--match", "bomb|NaN 3D|4 header bytes|storage file truncated|working directory",
                      "--json", str(out), "--keep", str(kept)])
    rows = json.loads(out.read_text())
    text = capsys.readouterr().out
    assert code == 0, text
    by_case = {(r["group"], r["case"]): r for r in rows}
    assert len(rows) == 6 and all(r["ok"] for r in rows)
    assert by_case[("extract", "bomb.png")]["outcome"].startswith("exit 1: error:")
    assert "exit 2: error:" in by_case[("localize: map", "a NaN 3D point")]["outcome"]
    assert "descriptor votes" in by_case[("localize: map", "global.index: 4 header bytes changed")]["outcome"]
    assert "not playing /boom" in by_case[("play", fuzz.EVIL_TYPE)]["outcome"]
    assert all(0 < r["peak_mb"] < fuzz.MAX_MEMORY_MB for r in rows)
    assert "6/6 inputs handled" in text


def test_node_inputs_are_handled_and_a_bound_can_fail(tmp_path, kept, capsys):
    out = tmp_path / "rows.json"
    # 100 MB is below any node's resident memory: every row must then say it failed.
    code = main(["--only", "node", "--match", "300 distinct|plumb_bob|features\\.h5 truncated",
                      "--max-memory-mb", "100", "--json", str(out), "--keep", str(kept)])
    rows = json.loads(out.read_text())
    assert code == 1 and len(rows) == 3 and not any(r["ok"] for r in rows)
    for r in rows:
        assert r["outcome"].startswith("FAILED: peak") and r["peak_mb"] > 100
    by_case = {r["case"]: r for r in rows}
    assert "failure keys in /diagnostics" in by_case["300 distinct bad images"]["outcome"]
    assert "3 coefficients" in by_case["plumb_bob with 3 coefficients"]["outcome"]
    assert "map not loaded" in by_case["features.h5 truncated"]["outcome"]
