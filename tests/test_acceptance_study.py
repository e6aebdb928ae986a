"""tools/acceptance_study.py --choose: the bounds come from the right held-out poses, with margins."""
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from acceptance_study import choose, replay  # noqa: E402


def _table(path, error_variance: float = 1.0):
    """200 right held-out poses (coverage ≥ 0.4, rival ratio ≤ 0.2) whose errors follow their
    covariance times ``error_variance``, one wrong and one false pose."""
    rng = np.random.default_rng(0)
    rows = []
    for k in range(200):
        cov = np.diag([1e-4] * 3 + [1e-6] * 3)
        e = rng.multivariate_normal(np.zeros(6), cov * error_variance)
        rows.append({"set": "a", "features": "lift", "query": str(k), "negative": "0", "cluster": "0", "inliers": "50",
                     "matches": "100", "coverage": f"{0.4 + 0.001 * k}", "rival_inliers": str(10 - k // 20),
                     "depth": "2.0", "t_err": f"{np.linalg.norm(e[:3])}", "r_err": "0.1",
                     "error": " ".join(map(str, e)), "covariance": " ".join(map(str, cov.ravel())),
                     "floor": " ".join(["0"] * 6)})
    rows.append({**rows[0], "query": "far", "t_err": "1.0"})          # wrong: not counted as right
    rows.append({**rows[0], "query": "other/x", "negative": "1", "t_err": ""})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def test_choose_takes_the_loosest_bounds_that_keep_every_right_pose(tmp_path):
    out = choose([_table(tmp_path / "t.csv")])
    assert out["min_coverage"] == 0.2 and out["max_rival_ratio"] == 0.25
    # errors that follow the covariance: nothing to fit
    assert out["covariance_scale"] == 1.0 and out["covariance_decorrelation"] == 0.0


def test_choose_proposes_an_inflation_for_an_overconfident_covariance(tmp_path):
    out = choose([_table(tmp_path / "t.csv", error_variance=9.0)])
    assert out["covariance_scale"] * (1 + out["covariance_decorrelation"]) > 3


def test_replay_takes_each_images_first_cluster_pose_that_passes():
    base = {"table": "t", "set": "a", "features": "lift", "negative": "0", "depth": "2.0", "r_err": "0.1"}
    rows = [{**base, "query": "1", "cluster": "1", "inliers": "50", "t_err": "1.0"},    # passes, but far off
            {**base, "query": "1", "cluster": "0", "inliers": "10", "t_err": "0.01"},   # first, refused
            {**base, "query": "2", "cluster": "0", "inliers": "50", "t_err": "0.01"},
            {**base, "query": "2", "cluster": "1", "inliers": "50", "t_err": "1.0"},    # never reached
            {**base, "query": "3", "cluster": "0", "inliers": "50", "t_err": "0.08"},   # beyond 3 % of 2 m
            {**base, "query": "4", "cluster": "0", "inliers": "5", "t_err": "0.01"},
            {**base, "query": "b/x", "negative": "1", "cluster": "0", "inliers": "50", "t_err": ""}]
    out = replay(rows, lambda r: int(r["inliers"]) >= 20, "≥ 20 inliers")
    assert out == {"accepted": 3, "images": 4, "far": 1, "beyond_depth": 1, "negatives_accepted": 1, "negatives": 1}
