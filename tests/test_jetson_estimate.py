"""The Jetson estimate's roofline (evaluation/jetson_estimate.py) on hand-computed cases."""
from __future__ import annotations

import pytest
import torch

from lift_localizer.evaluation import jetson_estimate as je


def test_traffic_counts_every_layer_input_and_output():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU())
    x = torch.zeros(1, 1, 10, 10)
    # conv: 100 in + 4*8*8 out; relu: 256 in + 256 out; the network's output written: 256
    assert je.count_traffic(net, x) == 100 + 256 + 256 + 256 + 256


def test_roofline_takes_the_larger_bound():
    dev = je.Device("toy", tensor_fp16_tmacs=1.0, bandwidth_gbs=100.0, source="test")
    work = {"det": {"macs": 1e9, "bytes": 1e6}, "desc": {"macs": 1e6, "bytes": 1e9}}
    est = je.estimate(work, dev, {"det": 0.5, "desc": 0.5})
    assert est["det"]["ms"] == pytest.approx(2.0) and est["det"]["bound"] == "compute"     # 1e9 / (0.5 * 1e12)
    assert est["desc"]["ms"] == pytest.approx(10.0) and est["desc"]["bound"] == "memory"   # 1e9 / 100e9
    assert est["networks"]["ms"] == pytest.approx(12.0)


def test_network_work_scales_with_keypoints_and_levels():
    a = je.network_work(240, 320, 100)
    b = je.network_work(240, 320, 200)
    assert b["desc"]["macs"] == pytest.approx(2 * a["desc"]["macs"]) and b["det"]["macs"] == a["det"]["macs"]
    paper = je.network_work(240, 320, 100, "paper")
    assert paper["det"]["levels"] > a["det"]["levels"] and paper["det"]["macs"] > a["det"]["macs"]


def test_steps_between_the_networks_are_counted_and_estimated():
    """DET's input packing, the NMS and the crops, as the CUDA graph runs them: kernels and bytes
    from the dispatch hook, time = kernels × KERNEL_US + 2 × bytes / bandwidth."""
    glue = je.glue_work(240, 320, 200)
    assert set(glue) == {"pack", "nms", "crops"}
    assert all(v["kernels"] > 0 and v["bytes"] > 0 for v in glue.values())
    more = je.glue_work(240, 320, 400)
    assert more["crops"]["bytes"] > 1.5 * glue["crops"]["bytes"]      # crops scale with the keypoints
    assert more["pack"] == glue["pack"]                                  # the packing does not
    dev = je.Device("toy", tensor_fp16_tmacs=1.0, bandwidth_gbs=100.0, source="test")
    est = je.estimate_glue({"nms": {"kernels": 100, "bytes": 1e8}}, dev, kernel_us=5.0)
    assert est["nms"]["ms"] == pytest.approx(0.5 + 2.0) and est["steps"]["ms"] == pytest.approx(2.5)
