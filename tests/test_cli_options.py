"""The options several commands share: one keypoint budget, back end and device by default, and one
list of back ends, whose absent members are refused with the reason instead of by argparse."""
import argparse
import sys

import cv2
import pytest

from lift_localizer.backends import BACKEND_NAMES, BackendUnavailable, make_backend, unavailable
from lift_localizer.cli import build_parser, main
from lift_localizer.localization.localizer import default_conf
from lift_localizer.ros import params
from lift_localizer.synthetic import make_texture


def subparser(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


REQUIRED = {
    "extract": ["x.png", "-o", "f.h5"],
    "localize": ["--map", "m", "--bag", "b", "-o", "p.txt"],
    "evaluate": ["--map", "m", "--bag", "b"],
    "retrieve": ["--map", "m", "--bag", "b", "-o", "p.txt"],
    "build-map": ["--bag", "b", "-o", "m"],
    "benchmark-node": ["--map", "m", "--bag", "b"],
}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_one_keypoint_budget_by_default(command):
    args = build_parser().parse_args([command, *REQUIRED[command]])
    assert args.max_keypoints == default_conf["max_keypoints"]


@pytest.mark.parametrize("command", ["extract", "localize", "evaluate"])
def test_one_back_end_and_device_by_default(command):
    args = build_parser().parse_args([command, *REQUIRED[command]])
    assert (args.backend, args.device) == (default_conf["backend"], default_conf["device"])
    assert tuple(option(subparser(command), "--backend").choices) == BACKEND_NAMES


def test_every_back_end_list_is_the_one_list():
    assert BACKEND_NAMES == ("auto", "torch", "onnx", "tensorrt")
    assert params.BY_NAME["backend"].choices == BACKEND_NAMES
    assert set(option(subparser("export"), "--backend").choices) <= set(BACKEND_NAMES)


def test_the_map_is_built_with_the_queries_budget():
    from lift_localizer.mapping.build import default_conf as build_conf

    assert build_conf["max_keypoints"] == default_conf["max_keypoints"]


def test_a_map_preset_sets_lifts_levels_not_its_budget_nor_sift():
    from lift_localizer.mapping.build import extractor_conf
    from lift_localizer.nets.presets import PRESETS

    assert build_parser().parse_args(["build-map", "--bag", "B", "--output", "M"]).preset == "default"
    paper = extractor_conf("lift", {"preset": "paper", "max_keypoints": 2000})
    assert all(paper[k] == v for k, v in PRESETS["paper"].items())
    fast = extractor_conf("lift", {"preset": "fast", "max_keypoints": 2000})
    assert fast["levels_per_octave"] == 3 and fast["max_keypoints"] == 2000
    assert extractor_conf("sift", {"preset": "paper", "max_keypoints": 2000}) == extractor_conf("sift", {})


def test_benchmark_node_measures_the_node_as_launched():
    args = build_parser().parse_args(["benchmark-node", *REQUIRED["benchmark-node"]])
    assert args.qos == params.BY_NAME["qos_reliability"].default == "best_effort"
    assert args.max_keypoints == params.BY_NAME["max_keypoints"].default
    assert args.top_k == params.BY_NAME["top_k"].default


@pytest.fixture
def no_tensorrt(monkeypatch):
    """TensorRT absent, whatever this machine has (a None entry makes the import fail)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def test_tensorrt_is_a_choice_where_it_is_absent(no_tensorrt):
    assert build_parser().parse_args(["localize", *REQUIRED["localize"], "--backend", "tensorrt"]).backend == "tensorrt"
    why = unavailable("tensorrt")
    assert why.startswith("tensorrt: the tensorrt Python package is not installed")
    with pytest.raises(BackendUnavailable, match="tensorrt Python package is not installed"):
        make_backend("tensorrt", {})
    assert "tensorrt Python package is not installed" in params.check("backend", "tensorrt")


@pytest.mark.parametrize("command", ["extract", "localize", "evaluate"])
def test_an_absent_back_end_exits_2_with_the_reason(command, no_tensorrt, tmp_path, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), make_texture(64, seed=1))
    argv = {"extract": [str(image), "-o", str(tmp_path / "f.h5")],
            "localize": ["--map", str(tmp_path / "map"), "--bag", str(tmp_path / "bag"), "-o", str(tmp_path / "p.txt")],
            "evaluate": ["--map", str(tmp_path / "map"), "--bag", str(tmp_path / "bag")]}[command]
    assert main([command, *argv, "--backend", "tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "error: --backend tensorrt: the tensorrt Python package is not installed" in err
    assert "Traceback" not in err
    assert not (tmp_path / "f.h5").exists() and not (tmp_path / "p.txt").exists()


def test_an_absent_onnxruntime_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    assert unavailable("onnx") == "onnx: the onnxruntime Python package is not installed (pip install onnxruntime)"
    assert main(["extract", str(tmp_path / "x.png"), "-o", str(tmp_path / "f.h5"), "--backend", "onnx"]) == 2
    assert "--backend onnx: the onnxruntime Python package is not installed" in capsys.readouterr().err


def test_back_end_not_available_is_said_in_a_subprocess(tmp_path):
    """The user's view: a message and exit code 2, no traceback."""
    import subprocess

    code = ("import sys; sys.modules['tensorrt'] = None\n"
            "from lift_localizer.cli import main\n"
            f"sys.exit(main(['extract', 'x.png', '-o', {str(tmp_path / 'f.h5')!r}, '--backend', 'tensorrt']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "tensorrt: the tensorrt Python package is not installed" in r.stderr
    assert "Traceback" not in r.stderr and "invalid choice" not in r.stderr


@pytest.mark.parametrize("command", ["localize", "evaluate"])
def test_the_ratio_test_reaches_the_localizer_within_the_nodes_range(command, capsys):
    from lift_localizer.commands import localizer_conf

    parse = build_parser().parse_args
    assert localizer_conf(parse([command, *REQUIRED[command]]))["ratio"] == default_conf["ratio"] == \
        params.BY_NAME["ratio"].default
    assert localizer_conf(parse([command, *REQUIRED[command], "--ratio", "0.8"]))["ratio"] == 0.8
    ratio = params.BY_NAME["ratio"]
    for edge in (ratio.low, ratio.high):
        assert localizer_conf(parse([command, *REQUIRED[command], "--ratio", str(edge)]))["ratio"] == edge
    for bad in ("0", "0.05", "1.5", "nan"):
        with pytest.raises(SystemExit):
            parse([command, *REQUIRED[command], "--ratio", bad])
        assert "--ratio" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["localize", "evaluate", "benchmark-scale"])
def test_the_ransac_seed_is_the_localizers_seed(command):
    from lift_localizer.commands import localizer_conf

    parse = build_parser().parse_args
    required = REQUIRED.get(command, [])
    assert localizer_conf(parse([command, *required]))["seed"] == default_conf["seed"]
    assert localizer_conf(parse([command, *required, "--ransac-seed", "7"]))["seed"] == 7
    if command == "benchmark-scale":   # its own --seed (the copies' transforms) is not RANSAC's
        assert localizer_conf(parse([command, "--seed", "5"]))["seed"] == default_conf["seed"]


def test_the_maps_pair_ratio_test_is_the_build_option_and_is_recorded():
    from lift_localizer.commands.build_map import map_conf
    from lift_localizer.mapping.options import default_conf as map_defaults

    parse = build_parser().parse_args
    assert map_conf(parse(["build-map", *REQUIRED["build-map"]]))["ratio"] == map_defaults["ratio"]
    conf = map_conf(parse(["build-map", *REQUIRED["build-map"], "--ratio", "0.75"]))
    assert conf["ratio"] == 0.75 and set(conf) <= set(map_defaults)
    with pytest.raises(SystemExit):
        parse(["build-map", *REQUIRED["build-map"], "--ratio", "1.01"])


@pytest.mark.parametrize("command", ["localize", "evaluate"])
def test_min_covisibility_reaches_the_localizer_and_zero_is_one_place(command, capsys):
    from lift_localizer.commands import localizer_conf

    parse = build_parser().parse_args
    assert localizer_conf(parse([command, *REQUIRED[command]]))["min_covisibility"] == default_conf["min_covisibility"]
    assert localizer_conf(parse([command, *REQUIRED[command], "--min-covisibility", "0"]))["min_covisibility"] == 0
    with pytest.raises(SystemExit):
        parse([command, *REQUIRED[command], "--min-covisibility", "-1"])
    assert "--min-covisibility" in capsys.readouterr().err


def test_guided_matching_is_the_build_option_and_is_recorded():
    from lift_localizer.commands.build_map import map_conf
    from lift_localizer.mapping.options import default_conf as map_defaults

    parse = build_parser().parse_args
    assert map_conf(parse(["build-map", *REQUIRED["build-map"]]))["guided_matching"] is map_defaults["guided_matching"]
    conf = map_conf(parse(["build-map", *REQUIRED["build-map"], "--guided-matching"]))
    assert conf["guided_matching"] is True and set(conf) <= set(map_defaults)


def test_benchmark_node_checks_the_bag_and_the_map_before_it_starts_a_node(tmp_path, capsys):
    """Exit 2 with the reason, before any node or player runs: a folder that is not a bag, a bag
    without ground truth (nothing to score /pose against), a folder that is not a map."""
    pytest.importorskip("rclpy", reason="rclpy (ros-rclpy wheels) is not installed")
    import numpy as np

    from lift_localizer.bags.writer import write_bag
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.frames import posed_frames

    cam = Camera(64, 48, np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]))
    views = [(make_texture(64, seed=k)[:48], np.eye(4)) for k in range(2)]
    write_bag(tmp_path / "posed", posed_frames(views, cam, 10**18))
    write_bag(tmp_path / "unposed", posed_frames(views, cam, 10**18), with_poses=False)
    (tmp_path / "not_a_map").mkdir()
    cases = [(tmp_path / "not_a_map", tmp_path / "not_a_map", "not a readable rosbag2"),
             (tmp_path / "not_a_map", tmp_path / "unposed", "no pose topic '/ground_truth/pose'"),
             (tmp_path / "not_a_map", tmp_path / "posed", "not a map (no map.json")]
    for map_dir, bag, reason in cases:
        assert main(["benchmark-node", "--map", str(map_dir), "--bag", str(bag)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and reason in err and err.count("\n") == 1, err   # no node's log after it
