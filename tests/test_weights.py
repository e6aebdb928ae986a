import json
import shutil

import pytest

from lift_localizer.features.lift import Lift
from safetensors.torch import load_file

from lift_localizer.weights import WEIGHTS_DIR, WeightsError, load_network, tensors_sha256
from lift_localizer.weights.initial import write_initial


@pytest.fixture()
def copy(tmp_path):
    for p in WEIGHTS_DIR.glob("*.safetensors"):
        shutil.copy(p, tmp_path)
    for p in WEIGHTS_DIR.glob("*.json"):
        shutil.copy(p, tmp_path)
    return tmp_path


def test_shipped_weights_load_and_say_which_are_untrained():
    for kind in ("det", "ori", "desc"):
        assert load_network(kind).card["network"] == kind
    # DESC and ORI are trained (training/train_lift.py); DET is the analytic starting point (its
    # training ran but was less repeatable: README).
    assert load_network("desc").trained and load_network("ori").trained and not load_network("det").trained
    for kind in ("desc", "ori"):
        card = load_network(kind).card
        assert card["training"]["phase"] == kind and card["split"].startswith("lift_localizer/training/splits.json")
    # ORI's card names the DESC it ships with: the one it was trained with, or one it was checked with.
    ori_card = load_network("ori").card
    assert ori_card.get("shipped_with_desc_sha256", ori_card["training"]["stages"][-1]["desc_sha256"]) \
        == load_network("desc").sha256
    warning = Lift({"max_keypoints": 10}).untrained_warning
    assert warning and "UNTRAINED" in warning and "DET" in warning and "ORI" not in warning and "DESC" not in warning


def test_untrained_starting_points_are_reproducible(tmp_path):
    write_initial(tmp_path)
    assert tensors_sha256(load_file(tmp_path / "det.safetensors")) == load_network("det").sha256
    assert load_network("desc", tmp_path / "desc").trained is False and load_network("ori", tmp_path / "ori").trained is False


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
