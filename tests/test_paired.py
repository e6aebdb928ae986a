"""Paired comparison of two runs on the same queries, scene-scaled thresholds and per-query tables."""
import numpy as np
import pytest

from lift_localizer.evaluation.paired import align, bootstrap_mean_interval, compare
from lift_localizer.evaluation.report import read_query_errors
from lift_localizer.evaluation.thresholds import scaled_thresholds

INF = np.inf


def errors(hits: list[bool], hit=(0.01, 0.5), miss=(INF, INF)) -> np.ndarray:
    return np.array([hit if h else miss for h in hits], float)


def test_counts_won_lost_tied_per_threshold():
    a = np.array([[0.01, 1.0], [0.10, 1.0], [INF, INF], [0.01, 1.0]])
    b = np.array([[0.10, 1.0], [0.01, 1.0], [0.01, 1.0], [0.01, 1.0]])
    c = compare(a, b, [(0.05, 5.0), (1.0, 5.0)], "lift", "sift")
    fine, coarse = c.rows
    assert (fine.won, fine.lost, fine.tied) == (1, 2, 1)
    assert (coarse.won, coarse.lost, coarse.tied) == (0, 1, 3)
    assert fine.recall_a == 0.5 and fine.recall_b == 0.75
    assert c.both_localized == 3


def test_a_clear_win_has_an_interval_above_zero_and_a_tie_does_not():
    n = 60
    clear = compare(errors([True] * n), errors([i % 2 == 0 for i in range(n)]), [(0.05, 5.0)])
    assert clear.rows[0].low > 0 and clear.rows[0].verdict == "better"
    # one query of 34 more: the interval holds zero, whatever the recalls say
    one = compare(errors([True] * 34), errors([True] * 33 + [False]), [(0.05, 5.0)])
    assert one.rows[0].difference > 0
    assert one.rows[0].low <= 0 <= one.rows[0].high and one.rows[0].verdict == "no difference shown"
    worse = compare(errors([i % 2 == 0 for i in range(n)]), errors([True] * n), [(0.05, 5.0)])
    assert worse.rows[0].verdict == "worse"


def test_identical_runs_give_a_zero_interval_and_unit_error_ratio():
    e = np.array([[0.01, 1.0], [0.02, 0.5], [INF, INF]])
    c = compare(e, e.copy(), [(0.05, 5.0)])
    assert (c.rows[0].low, c.rows[0].high) == (0.0, 0.0)
    assert c.error_ratio == pytest.approx((1.0, 1.0, 1.0))


def test_error_ratio_is_the_geometric_mean_over_queries_both_localize():
    a = np.array([[0.01, 1.0], [0.04, 1.0], [0.5, 1.0], [INF, INF]])
    b = np.array([[0.02, 1.0], [0.02, 1.0], [INF, INF], [0.01, 1.0]])
    c = compare(a, b, [(0.05, 5.0)])
    assert c.both_localized == 2
    assert c.error_ratio[0] == pytest.approx(1.0)  # ×0.5 and ×2
    assert c.error_ratio[1] <= 1.0 <= c.error_ratio[2]


def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(200):
        a = rng.random(80) < 0.8
        b = rng.random(80) < 0.7
        low, high = bootstrap_mean_interval(a.astype(float) - b, samples=2000, seed=trial)
        covered += low <= 0.1 <= high
    assert 0.88 <= covered / 200 <= 0.99


def test_different_queries_are_refused():
    with pytest.raises(ValueError, match="same queries"):
        compare(np.zeros((3, 2)), np.zeros((4, 2)), [(1, 1)])
    with pytest.raises(ValueError, match="no result for 1 of the 2"):
        align(["1", "2"], {"1": (0.0, 0.0)}, "hloc")


def test_scaled_thresholds_judge_an_object_in_millimetres():
    assert scaled_thresholds(0.65) == ((0.0052, 0.46), (0.002, 0.17), (0.00065, 0.057))
    assert scaled_thresholds(float("nan")) == ()


def test_per_query_table_round_trip_and_bad_tables(tmp_path):
    good = tmp_path / "q.csv"
    good.write_text("name,localized,translation_error_m,rotation_error_deg,reason\n"
                    "1,1,0.01,0.5,\n2,0,,,too few inliers\n")
    assert read_query_errors(good) == {"1": (0.01, 0.5), "2": (INF, INF)}
    bad = tmp_path / "bad.csv"
    bad.write_text("query,error\n1,0.1\n")
    with pytest.raises(ValueError, match="expected a CSV with the columns"):
        read_query_errors(bad)
    twice = tmp_path / "twice.csv"
    twice.write_text("name,translation_error_m,rotation_error_deg\n1,0.1,1\n1,0.2,1\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_query_errors(twice)
    text = tmp_path / "text.csv"
    text.write_text("name,translation_error_m,rotation_error_deg\n1,abc,1\n")
    with pytest.raises(ValueError, match="not a number"):
        read_query_errors(text)
