"""False accepts made visible: accepted poses beyond a bound ("wrong accepted") and the accepted poses
of another scene's queries ("negatives"), from the metric up to ``evaluate --negatives`` on bags."""
import json

import numpy as np
import pytest
from conftest import run_cli

from lift_localizer.evaluation.metrics import WRONG_BOUND, count_wrong, summarize

INF = np.inf


# (translation m, rotation °); inf: not localized
MADE_UP = np.array([[0.01, 0.5],     # right under both bounds
                    [0.03, 0.5],     # wrong only under (0.02 m, 2°)
                    [0.10, 3.0],     # wrong only under (0.02 m, 2°): rotation
                    [0.25, 5.0],     # on the default bound: not beyond it
                    [0.26, 1.0],     # beyond 0.25 m
                    [0.01, 7.0],     # beyond 5° though close
                    [3.00, 40.0],    # far off
                    [INF, INF],      # a failure is not a wrong accept
                    [INF, INF]])


def test_wrong_accepted_counts_on_made_up_errors():
    assert count_wrong(MADE_UP) == 3
    assert count_wrong(MADE_UP, (0.02, 2.0)) == 6
    assert count_wrong(MADE_UP[7:]) == 0 and count_wrong(np.zeros((0, 2))) == 0
    s = summarize(MADE_UP, [None] * 7 + ["too few inliers", "too few inliers"], [],
                  wrong_bounds=(WRONG_BOUND, (0.02, 2.0)))
    assert s.wrong == {(0.25, 5.0): 3, (0.02, 2.0): 6}
    assert s.to_dict()["wrong_accepted"] == {"0.25m_5deg": 3, "0.02m_2deg": 6}
    rows = s.wrong_rows()
    assert rows == ["wrong accepted: 3 of 7 localized beyond (0.25 m, 5°)",
                    "wrong accepted: 6 of 7 localized beyond (0.02 m, 2°)"]
    # the default bound given twice is counted once
    assert summarize(MADE_UP, [None] * 9, [], wrong_bounds=(WRONG_BOUND, (0.25, 5))).wrong == {(0.25, 5.0): 3}


def test_wrong_bound_option_is_checked():
    for bad in ("0.02", "a,b", "0,2", "0.02,-1"):
        with pytest.raises(SystemExit):
            run_cli("evaluate", "--map", "m", "--bag", "b", "--wrong-bound", bad)


def test_report_shows_wrong_and_false_accepts(tmp_path):
    from lift_localizer.evaluation.report import _recall_section

    s = summarize(MADE_UP, [None] * 7 + ["x", "x"], [], wrong_bounds=(WRONG_BOUND, (0.02, 2.0)))
    s.negatives = {"num_queries": 6, "num_accepted": 2, "bags": {}}
    text = _recall_section({"lift": (s, [])})
    assert "wrong accepted, beyond (0.25 m, 5°)" in text and "wrong accepted, beyond (0.02 m, 2°)" in text
    assert "<td>3/7</td>" in text and "<td>6/7</td>" in text
    assert "negatives accepted (false)" in text and "<td>2/6</td>" in text


# ---- end to end, on bags of two synthetic rooms --------------------------------------------------

@pytest.fixture(scope="module")
def scenes(room_bags, tmp_path_factory):
    """A map of room 0 (SIFT and LIFT) and room 0's query bag with ground truth (conftest's
    room_bags), and room 1's query bag without: the same renderer, another scene."""
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.bags.writer import write_bag
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.synthetic import room_sequence

    other = tmp_path_factory.mktemp("scenes") / "other_query"
    K1, _, views = room_sequence(10, 2, image_size=(240, 320), seed=1)
    write_bag(other, posed_frames(views, Camera(320, 240, K1), 2 * 10**18 + 10**17), with_poses=False)
    root = room_bags[0]
    return {"map": root / "map", "query": root / "query", "other_query": other}


@pytest.fixture(scope="module")
def evaluated(scenes, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated")
    # the map's own queries among the negatives: accepted there, so a count stuck at 0 would show
    code, stdout, stderr = run_cli("evaluate", "--map", scenes["map"], "--bag", scenes["query"],
                               "--negatives", scenes["other_query"], scenes["query"],
                               "--wrong-bound", "0.0001,0.001", "--report", out / "r", "--json", out / "s.json")
    assert code == 0, stderr
    return stdout, json.loads((out / "s.json").read_text()), out


def test_negatives_match_what_localize_accepts(scenes, evaluated, tmp_path):
    stdout, summary, out = evaluated
    assert set(summary) == {"sift", "lift"}
    for name, s in summary.items():
        poses = tmp_path / f"{name}.txt"
        code, _, stderr = run_cli("localize", "--map", scenes["map"], "--bag", scenes["other_query"],
                              "--features", name, "--output", poses)
        assert code == 0, stderr
        accepted_other = len(poses.read_text().splitlines())
        bags = s["negatives"]["bags"]
        assert bags[str(scenes["other_query"])] == {"num_queries": 2, "num_accepted": accepted_other}
        assert bags[str(scenes["query"])] == {"num_queries": 3, "num_accepted": s["num_localized"]}
        assert s["negatives"]["num_queries"] == 5
        assert s["negatives"]["num_accepted"] == accepted_other + s["num_localized"]
        assert f"negatives: {s['negatives']['num_accepted']} of 5 accepted (false)" in stdout
    assert json.loads((out / "r" / "summary.json").read_text())["lift"]["negatives"] == summary["lift"]["negatives"]
    assert "negatives accepted (false)" in (out / "r" / "report.html").read_text()


def test_wrong_accepted_printed_for_both_bounds(evaluated):
    stdout, summary, _ = evaluated
    for name, s in summary.items():
        assert s["num_localized"] == 3          # the synthetic room localizes within millimetres
        # nothing is beyond the default bound, everything beyond a bound no estimate meets
        assert s["wrong_accepted"] == {"0.25m_5deg": 0, "0.0001m_0.001deg": 3}
    assert stdout.count("wrong accepted: 0 of 3 localized beyond (0.25 m, 5°)") == 2
    assert stdout.count("wrong accepted: 3 of 3 localized beyond (0.0001 m, 0.001°)") == 2


def test_default_bound_printed_once_and_negatives_not_needed(scenes, tmp_path):
    code, stdout, stderr = run_cli("evaluate", "--map", scenes["map"], "--bag", scenes["query"], "--features", "sift",
                               "--json", tmp_path / "s.json")
    assert code == 0, stderr
    assert stdout.count("wrong accepted:") == 1 and "negatives:" not in stdout
    s = json.loads((tmp_path / "s.json").read_text())["sift"]
    assert s["wrong_accepted"] == {"0.25m_5deg": 0} and s["negatives"] is None


def test_a_report_records_the_options_it_ran_with(scenes, tmp_path):
    code, _, stderr = run_cli("evaluate", "--map", scenes["map"], "--bag", scenes["query"], "--features", "sift",
                              "--ransac-seed", "3", "--ratio", "0.8", "--top-k", "4", "--report", tmp_path / "r")
    assert code == 0, stderr
    options = json.loads((tmp_path / "r" / "summary.json").read_text())["sift"]["options"]
    assert (options["seed"], options["ratio"], options["top_k"]) == (3, 0.8, 4)
    assert options["solver"] in ("pycolmap", "poselib", "opencv")
    assert options["extractor"]["max_keypoints"] == options["max_keypoints"]
    assert "top 4 map images, ratio 0.8, RANSAC threshold 8 px, RANSAC seed 3" in (tmp_path / "r" / "report.html").read_text()
