import json
import shutil
from pathlib import Path

import pytest

from lift_localizer.nets.det import DET, START_SIGMA_FACTOR, analytic_init
from lift_localizer.features.lift import Lift
from safetensors.torch import load_file

from lift_localizer.weights import WEIGHTS_DIR, WeightsError, load_network, tensors_sha256
from lift_localizer.cli import main as cli
from lift_localizer.weights.initial import ShippedWeightsError, write_initial


@pytest.fixture()
def copy(tmp_path):
    for p in WEIGHTS_DIR.glob("*.safetensors"):
        shutil.copy(p, tmp_path)
    for p in WEIGHTS_DIR.glob("*.json"):
        shutil.copy(p, tmp_path)
    return tmp_path


def test_shipped_weights_load_and_say_which_are_untrained(tmp_path):
    for kind in ("det", "ori", "desc"):
        assert load_network(kind).card["network"] == kind
    # DESC and ORI by the paper's phases (training/train_lift.py), DET by `train det-stable`.
    phases = {"desc": "desc", "ori": "ori", "det": "det-stable"}
    for kind, phase in phases.items():
        card = load_network(kind).card
        assert card["trained"] and card["training"]["phase"] == phase
        assert card["split"].startswith("lift_localizer/training/splits.json")
    det_quality = load_network("det").card["quality"]
    assert det_quality["val_repeatability"] > det_quality["val_repeatability_init"]
    # ORI's card names the DESC it ships with: the one it was trained with, or one it was checked with.
    ori_card = load_network("ori").card
    assert ori_card.get("shipped_with_desc_sha256", ori_card["training"]["stages"][-1]["desc_sha256"]) \
        == load_network("desc").sha256
    assert Lift({"max_keypoints": 10}).untrained_warning is None
    # Untrained weights (the starting points) are named loudly.
    write_initial(tmp_path)
    warning = Lift({"max_keypoints": 10, "weights": {"det": str(tmp_path / "det")}}).untrained_warning
    assert warning and "UNTRAINED" in warning and "DET" in warning and "ORI" not in warning and "DESC" not in warning


def test_untrained_starting_points_are_reproducible(tmp_path):
    write_initial(tmp_path)
    again = tmp_path / "again"
    write_initial(again)
    for kind in ("det", "ori", "desc"):
        assert tensors_sha256(load_file(tmp_path / f"{kind}.safetensors")) == \
            tensors_sha256(load_file(again / f"{kind}.safetensors"))
    # The documented start: |LoG| of 1.1 × the keypoint scale, the constant DET training starts from too.
    assert START_SIGMA_FACTOR == 1.1
    assert tensors_sha256(analytic_init(DET(), 1.1).state_dict()) == load_network("det", tmp_path / "det").sha256
    assert tensors_sha256(analytic_init(DET(), 1.0).state_dict()) != load_network("det", tmp_path / "det").sha256
    from lift_localizer.training.det_stable import default_conf as det_stable_conf

    assert det_stable_conf["init_sigma"] == START_SIGMA_FACTOR
    assert load_network("det", tmp_path / "det").card["init_sigma"] == START_SIGMA_FACTOR
    assert load_network("desc", tmp_path / "desc").trained is False and load_network("ori", tmp_path / "ori").trained is False


def _shipped_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(WEIGHTS_DIR.iterdir()) if p.suffix in (".json", ".safetensors")}


@pytest.fixture()
def recorded_saves(monkeypatch):
    """Where the command would save: a command that wrongly chose the package folder records it
    here instead of replacing the shipped files."""
    written: list[Path] = []
    monkeypatch.setattr("lift_localizer.weights.initial.save_network",
                        lambda kind, module, stem, card: written.append(Path(stem)) or Path(stem))
    return written


def test_initial_command_writes_where_told(tmp_path, capsys):
    before = _shipped_files()
    assert cli(["initial-weights", "--output", str(tmp_path / "start")]) == 0
    assert sorted(p.name for p in (tmp_path / "start").iterdir()) == sorted(
        f"{k}.{ext}" for k in ("det", "ori", "desc") for ext in ("json", "safetensors"))
    assert load_network("det", tmp_path / "start" / "det").trained is False
    assert _shipped_files() == before


def test_initial_command_writes_the_det_start_it_is_asked_for(tmp_path, capsys):
    import torch
    from lift_localizer.nets.det import DET, analytic_init

    assert cli(["initial-weights", "--output", str(tmp_path / "wide"), "--det-sigma", "1.3"]) == 0
    wide = load_network("det", tmp_path / "wide" / "det")
    assert wide.card["init_sigma"] == 1.3
    expected = analytic_init(DET(), 1.3).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in wide.module.state_dict().items())
    # Not the default start: a sigma that did nothing would pass the check above only by chance.
    default = analytic_init(DET(), START_SIGMA_FACTOR).state_dict()
    assert not torch.equal(default["conv.weight"], expected["conv.weight"])
    with pytest.raises(SystemExit) as e:
        cli(["initial-weights", "--output", str(tmp_path / "bad"), "--det-sigma", "0"])
    assert e.value.code == 2 and "--det-sigma" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_initial_command_has_no_default_folder(recorded_saves, capsys):
    with pytest.raises(SystemExit) as e:
        cli(["initial-weights"])
    assert e.value.code == 2 and "--output" in capsys.readouterr().err
    assert recorded_saves == []


def test_initial_command_refuses_the_shipped_folder(recorded_saves, monkeypatch, capsys):
    for spelling in (WEIGHTS_DIR, WEIGHTS_DIR / ".." / WEIGHTS_DIR.name):
        assert cli(["initial-weights", "--output", str(spelling)]) == 2
        assert "--overwrite-shipped" in capsys.readouterr().err
    monkeypatch.chdir(WEIGHTS_DIR)
    with pytest.raises(ShippedWeightsError):
        write_initial(Path("."))
    assert recorded_saves == []
    # Asked for explicitly, it writes there.
    assert cli(["initial-weights", "--output", str(WEIGHTS_DIR), "--overwrite-shipped"]) == 0
    assert recorded_saves == [WEIGHTS_DIR / k for k in ("det", "ori", "desc")]


def test_architecture_mismatch_is_refused(copy):
    card = json.loads((copy / "desc.json").read_text())
    card["architecture"] = "lift-desc-v0"
    (copy / "desc.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="architecture 'lift-desc-v0'"):
        load_network("desc", copy / "desc")


def test_changed_file_is_refused(copy):
    data = bytearray((copy / "det.safetensors").read_bytes())
    data[-1] ^= 0x40  # one bit of the last weight
    (copy / "det.safetensors").write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="does not match its card"):
        load_network("det", copy / "det")


def test_weights_of_another_network_are_refused(copy):
    shutil.copy(copy / "ori.safetensors", copy / "desc.safetensors")
    card = json.loads((copy / "desc.json").read_text())
    card["tensors_sha256"] = tensors_sha256(load_file(copy / "desc.safetensors"))
    (copy / "desc.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="tensors do not fit"):
        load_network("desc", copy / "desc")


def test_missing_or_corrupt_card(copy):
    (copy / "ori.json").unlink()
    with pytest.raises(WeightsError, match="card missing"):
        load_network("ori", copy / "ori")
    (copy / "det.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid JSON card"):
        load_network("det", copy / "det")


def test_a_desc_variant_saves_and_loads_with_its_architecture(tmp_path):
    import torch

    from lift_localizer.weights import build_module, save_network, shipped_stem

    torch.manual_seed(0)
    thin = build_module("desc", "lift-desc-thin-v1")
    save_network("desc", thin, tmp_path / "thin", {"trained": False, "input": {"mean": 110.0, "std": 60.0}})
    loaded = load_network("desc", tmp_path / "thin")
    assert loaded.card["architecture"] == "lift-desc-thin-v1" and loaded.module.conv2.out_channels == 32
    x = torch.randn(3, 1, 64, 64)
    assert torch.equal(loaded.module(x), thin(x)) and loaded.module(x).shape == (3, 128)
    # The card names the architecture: thin tensors under the full architecture's name do not fit.
    card = json.loads((tmp_path / "thin.json").read_text())
    card["architecture"] = "lift-desc-v1"
    (tmp_path / "thin.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="tensors do not fit"):
        load_network("desc", tmp_path / "thin")
    # Shipped weights are found by the hash a map records; others are not.
    assert shipped_stem("desc", load_network("desc").sha256) == "desc"
    assert shipped_stem("desc", loaded.sha256) is None
    assert shipped_stem("ori", load_network("desc").sha256) is None
