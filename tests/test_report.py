"""The evaluation report folder, written from small made-up localization results (no map, no
network): its page links every plot, its CDFs start at 0, its tables carry units."""
import csv
import re

import numpy as np
import pytest

from lift_localizer.evaluation.metrics import summarize
from lift_localizer.evaluation.plots import cdf_steps, top_view_axes
from lift_localizer.evaluation.replay import QueryOutcome
from lift_localizer.evaluation.report import pick_queries, write_report
from lift_localizer.features.types import Features
from lift_localizer.geometry.camera import Camera
from lift_localizer.localization.localizer import LocalizationResult
from lift_localizer.mapping.frames import Frame

W, H = 160, 120
CAMERA = Camera(W, H, np.array([[100.0, 0, 79.5], [0, 100.0, 59.5], [0, 0, 1]]))


def _pose(x: float) -> np.ndarray:
    T = np.eye(4)
    T[0, 3] = x
    return T


def _outcome(k: int, gt: np.ndarray, shift: float | None, rng) -> QueryOutcome:
    """A query whose pose is ``gt`` moved by ``shift`` metres forward; None: a rejected pose."""
    xyz = np.c_[rng.uniform(-2, 2, (40, 2)) + [gt[0, 3], 0], rng.uniform(4, 8, 40)]
    uv = (xyz - gt[:3, 3]) @ CAMERA.K.T
    kp = uv[:, :2] / uv[:, 2:]
    inliers = np.arange(40) < (30 if shift is not None else 8)
    kp[~inliers] += rng.uniform(-20, 20, (int((~inliers).sum()), 2))
    features = Features(kp.astype(np.float32), np.ones(40), np.zeros(40), np.ones(40), np.zeros((40, 128)), (H, W))
    T = gt.copy()
    T[2, 3] += shift or 0.3
    ok = shift is not None
    result = LocalizationResult(ok, None if ok else "too few inliers (8 < 20)", T, None, int(inliers.sum()), 40,
                                features, [], np.arange(40), xyz, inliers,
                                {"extract": 0.5, "retrieve": 0.01, "match": 0.02, "pnp": 0.003})
    image = rng.integers(0, 255, (H, W), dtype=np.uint8)
    frame = Frame(f"{1000 + k}", CAMERA, gt, 1000 + k, loader=lambda: image)
    return QueryOutcome(frame, result, result.reason)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    rng = np.random.default_rng(0)
    gts = [_pose(0.5 * k) for k in range(6)]
    shifts = [0.02, 0.30, None, 0.005, 0.08, "unreadable"]
    outcomes = [_outcome(k, gt, s, rng) if s != "unreadable" else
                QueryOutcome(Frame(f"{1000 + k}", CAMERA, gt, 1000 + k), None, "unreadable image: broken")
                for k, (gt, s) in enumerate(zip(gts, shifts))]
    err = np.full((len(gts), 2), np.inf)
    for k, s in enumerate(shifts):
        if isinstance(s, float):
            err[k] = s, 0.1
    summary = summarize(err, [o.reason for o in outcomes], [o.result.timings for o in outcomes if o.result])
    # NEES of the localized queries: 3 of 4 inside the 95 % ellipsoid (12.59)
    summary.nees = np.array([2.0, 40.0, np.nan, 5.0, 9.0, np.nan])
    folder = tmp_path_factory.mktemp("report")
    (folder / "matches_best_lift_1.png").write_bytes(b"from an earlier run")
    page = write_report(folder, {"lift": (summary, outcomes)}, gts, "made-up room")
    return folder, page, outcomes, err


def test_cdf_starts_at_zero_and_failures_keep_it_below_one():
    x, y = cdf_steps(np.array([0.3, np.inf, 0.1, 0.2]))
    np.testing.assert_allclose(x, [0.1, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(y, [0, 0.25, 0.5, 0.75])
    assert len(cdf_steps(np.array([np.inf]))[0]) == 0


def test_match_figures_are_best_median_worst_and_a_failure(report):
    folder, _, outcomes, err = report
    assert pick_queries(outcomes, err) == {"best": 3, "median": 0, "worst": 1, "failed": 2}
    assert sorted(p.name for p in folder.glob("matches_*.png")) == [
        "matches_best_lift.png", "matches_failed_lift.png", "matches_median_lift.png", "matches_worst_lift.png"]
    # Two localized queries: best and worst, no median drawn twice.
    two = np.full((6, 2), np.inf)
    two[0], two[3] = (0.1, 1), (0.2, 1)
    assert pick_queries(outcomes, two) == {"best": 0, "worst": 3, "failed": 2}


def test_page_links_every_plot_and_says_what_it_measures(report):
    folder, page, _, _ = report
    assert page == folder / "report.html"
    text = page.read_text()
    linked = set(re.findall(r'<img src="([^"]+)"', text))
    pictures = {p.name for p in folder.iterdir() if p.suffix in (".png", ".jpg", ".svg")}
    assert linked == pictures and {"trajectory_top_view.png", "error_cdf.png"} <= pictures
    assert "made-up room" in text and "(0.25 m, 2°)" in text
    assert "too few inliers" in text and "unreadable image" in text      # failures by reason
    assert "retrieve" in text and "pnp" in text                          # per-stage timings
    assert "<script" not in text and "http" not in text                  # self-contained
    assert "3/4 (75 %)" in text                                         # covariance calibration


def test_csv_columns_carry_units(report):
    folder, _, outcomes, err = report
    with open(folder / "queries_lift.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["name", "localized", "translation_error_m", "rotation_error_deg", "inliers",
                             "matches", "inlier_coverage", "rival_inliers", "position_std_m", "nees",
                             "extract_time_ms", "retrieve_time_ms", "match_time_ms", "pnp_time_ms",
                             "total_time_ms", "reason"]
    assert [r["nees"] for r in rows] == ["2", "40", "", "5", "9", ""]
    assert float(rows[1]["translation_error_m"]) == pytest.approx(0.30)
    assert float(rows[0]["extract_time_ms"]) == pytest.approx(500)
    assert rows[2]["translation_error_m"] == "" and rows[2]["reason"].startswith("too few inliers")
    assert rows[5]["total_time_ms"] == "" and rows[5]["localized"] == "0"


def test_top_view_of_a_straight_road_is_seen_from_above():
    """A car's path: straight along x, bouncing more in height (y, down) than it sways across (z).
    The positions alone would make height the second axis: a side view."""
    t = np.linspace(0, 100, 50)
    path = np.c_[t, 0.3 * np.sin(t), 0.05 * np.cos(t)]
    axes = top_view_axes(path, down=np.array([0, 1.0, 0]))
    np.testing.assert_allclose(np.abs(axes), [[1, 0, 0], [0, 0, 1]], atol=1e-3)
    assert np.cross(axes[0], axes[1]) @ [0, 1, 0] < 0          # from above: not mirrored
    # A path that spans the ground plane keeps that plane, the cameras' down axis is only a hint.
    circle = np.c_[np.cos(t), 0.01 * t, np.sin(t)]
    axes = top_view_axes(circle, down=np.array([0, 0.9, 0.3]))
    assert np.abs(axes[:, 1]).max() < 0.05


def _best_cells(page_text: str) -> list[str]:
    return re.findall(r'<td class="best">([^<]*)</td>', page_text)


@pytest.mark.parametrize("lead, shown", [(1, False), (30, True)])
def test_a_recall_lead_is_highlighted_only_where_the_paired_interval_shows_it(tmp_path, lead, shown):
    from lift_localizer.evaluation.paired import compare

    rng = np.random.default_rng(0)
    n = 40
    gts = [_pose(0.1 * k) for k in range(n)]
    outcomes = [_outcome(k, gt, 0.01, rng) for k, gt in enumerate(gts)]
    err_a = np.tile([0.01, 0.1], (n, 1))
    err_b = err_a.copy()
    err_b[:lead] = np.inf  # B misses the first ``lead`` queries
    a = summarize(err_a, [None] * n, [], thresholds=[(0.05, 5.0)])
    b = summarize(err_b, [None] * (n - lead) + ["too few inliers"] * lead, [], thresholds=[(0.05, 5.0)])
    a.paired = [compare(err_a, err_b, [(0.05, 5.0)], "a", "b")]
    assert a.paired[0].rows[0].verdict == ("better" if shown else "no difference shown")
    text = write_report(tmp_path, {"a": (a, outcomes), "b": (b, outcomes)}, gts, "made-up").read_text()
    assert ("100.0 %" in _best_cells(text)) == shown
    assert f"{lead} / 0 / {n - lead}" in text  # the paired section: won / lost / tied
