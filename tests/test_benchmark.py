"""The benchmark command: its operation counts and its report (not its speed)."""
from __future__ import annotations

import json

import pytest
import torch

from lift_localizer.cli import main
from lift_localizer.evaluation.benchmark import count_macs, peak_gmacs
from lift_localizer.features.desc import DESC
from lift_localizer.features.det import DET


def test_mac_counts_match_hand_counts():
    conv = torch.nn.Conv2d(3, 8, 5)
    assert count_macs(conv, torch.zeros(1, 3, 20, 20)) == 16 * 16 * 8 * 3 * 25
    assert count_macs(DET(), torch.zeros(1, 1, 124, 124)) == 100 * 100 * 16 * 625
    # The floor: about 51 MMAC per DESC patch.
    assert count_macs(DESC(), torch.zeros(1, 1, 64, 64)) == pytest.approx(51e6, rel=0.02)


def test_peak_is_positive():
    assert peak_gmacs(torch.device("cpu"), n=256) > 0


def test_benchmark_reports_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIFT_LOCALIZER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "b.json"
    assert main(["benchmark", "--size", "160x120", "--repeat", "1", "--max-keypoints", "50", "--map-images", "50",
                 "--backends", "torch", "--preset", "fast", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    for label in ("decode", "det", "nms", "ori", "desc", "netvlad", "retrieval", "matching", "pnp", "end to end",
                  "× floor", "DET per level", "the dense DET module"):
        assert label in printed
    result = json.loads(out.read_text())["results"][0]
    assert result["backend"] == "torch" and result["macs"]["desc"] == pytest.approx(result["keypoints"] * 51e6, rel=0.02)
    assert result["stages"]["det"]["fraction_of_peak"] > 0
    assert main(["benchmark", "--backends", "tensorrt-fp16", "--repeat", "1"]) == 2
