"""The benchmark command: its operation counts and its report (not its speed)."""
from __future__ import annotations

import json

import pytest
import torch

from lift_localizer.cli import main
from lift_localizer.evaluation import benchmark
from lift_localizer.evaluation.benchmark import count_macs, peak_gmacs
from lift_localizer.nets.desc import DESC
from lift_localizer.nets.det import DET


def test_mac_counts_match_hand_counts():
    conv = torch.nn.Conv2d(3, 8, 5)
    assert count_macs(conv, torch.zeros(1, 3, 20, 20)) == 16 * 16 * 8 * 3 * 25
    assert count_macs(DET(), torch.zeros(1, 1, 124, 124)) == 100 * 100 * 16 * 625
    # The floor: about 51 MMAC per DESC patch.
    assert count_macs(DESC(), torch.zeros(1, 1, 64, 64)) == pytest.approx(51e6, rel=0.02)


def test_peak_is_n_cubed_over_the_fastest_product(monkeypatch):
    # A clock that makes the 5 timed products take these times: the peak is n³ MACs over the fastest.
    durations = iter([0.5, 0.25, 0.8, 0.3, 0.4])
    ticks = []

    class Clock:
        @staticmethod
        def perf_counter():
            ticks.append(ticks[-1] + next(durations) if len(ticks) % 2 else 100.0 * len(ticks))
            return ticks[-1]

    monkeypatch.setattr(benchmark, "time", Clock)
    assert peak_gmacs(torch.device("cpu"), n=256) == pytest.approx(256**3 / 0.25 / 1e9, rel=1e-12)
    assert len(ticks) == 10


def test_peak_of_this_cpu_is_plausible():
    # Measured for real: more than 10 MMAC/s and less than 100 TMAC/s on any CPU that runs the tests.
    assert 0.01 < peak_gmacs(torch.device("cpu"), n=256) < 1e5


def test_benchmark_reports_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--size", "160x120", "--repeat", "1", "--max-keypoints", "50", "--map-images", "50",
                 "--backends", "torch", "--preset", "fast", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("decode", "det", "nms", "ori", "desc", "netvlad", "retrieval", "matching", "pnp", "end to end",
                  "× floor", "DET per level", "the dense DET module"):
        assert label in printed
    report = json.loads(out.read_text())
    result = report["results"][0]
    assert result["backend"] == "torch" and 0 < result["keypoints"] <= 50
    assert result["macs"]["desc"] == pytest.approx(result["keypoints"] * 51e6, rel=0.02)
    # DET's 16 filters of 25×25 over every level, without its 12-pixel margin.
    assert result["macs"]["det"] == sum((lv["height"] - 24) * (lv["width"] - 24) for lv in result["levels"]) * 16 * 625
    stages = {k: v["median_ms"] for k, v in result["stages"].items()}   # one run: the medians are its times
    assert stages["end_to_end"] == pytest.approx(sum(stages[k] for k in ("decode", "total", "netvlad", "retrieval",
                                                                          "matching", "pnp")), rel=1e-9)
    lift_stages = [k for k in ("det", "nms", "ori_patches", "ori", "desc_patches", "desc") if k in stages]
    assert {"det", "nms", "ori", "desc"} <= set(lift_stages) and sum(stages[k] for k in lift_stages) <= stages["total"]
    # Dense stages against the CPU's peak: GMAC, fraction of the peak and × floor are one measurement.
    peak = report["peaks_gmacs"]["cpu_fp32"]
    rows = {line[2:16].strip(): line[16:].split() for line in printed.splitlines() if line.startswith("  ")}
    for k in ("det", "ori", "desc"):
        st = result["stages"][k]
        assert st["gmac"] == pytest.approx(result["macs"][k] / 1e9, rel=1e-12)
        assert st["fraction_of_peak"] == pytest.approx(st["gmac"] / (st["median_ms"] / 1000) / peak, rel=1e-9)
        assert st["times_floor"] == pytest.approx(1 / st["fraction_of_peak"], rel=1e-9)
        assert float(rows[k][-1]) == pytest.approx(st["times_floor"], abs=0.051)   # printed with one decimal
        assert float(rows[k][-2].rstrip("%")) == pytest.approx(100 * st["fraction_of_peak"], abs=0.051)
    # The warm-up call is timed on its own: a node's first extraction at a new size.
    assert result["first_call_ms"] > 0 and f"  first call     {result['first_call_ms']:10.1f}  (" in printed
    d = result["det_conv"]
    assert f"the dense DET module {d['dense_levels_ms']:.1f} ms ({d['dense_levels_ms'] / d['levels_ms']:.1f}×)" in printed
    assert main(["benchmark", "--backends", "tensorrt-fp16", "--repeat", "1"]) == 2


def test_benchmark_times_the_weights_it_is_given(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--size", "160x120", "--repeat", "1", "--max-keypoints", "50", "--map-images", "50",
                 "--backends", "torch", "--desc", "desc_fast", "--json", str(out)]) == 0
    assert "DESC desc_fast" in capsys.readouterr().out
    result = json.loads(out.read_text())["results"][0]
    assert result["macs"]["desc"] == pytest.approx(result["keypoints"] * 6.3e6, rel=0.02)


def test_compare_sift_times_the_baselines_on_the_same_image(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--size", "320x240", "--repeat", "2", "--max-keypoints", "200", "--map-images", "50",
                 "--backends", "torch", "--preset", "fast", "--compare-sift", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    base, result = report["baselines"], report["results"][0]
    assert set(base) == {"sift", "orb"} and all(b["median_ms"] > 0 and 0 < b["keypoints"] <= 200 for b in base.values())
    lift_ms = result["stages"]["total"]["median_ms"]
    for name, b in base.items():
        assert result["ratio_to"][name] == pytest.approx(lift_ms / b["median_ms"])
        assert f"{result['ratio_to'][name]:.1f}× {name.upper()}" in printed

