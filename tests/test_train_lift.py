"""LIFT training phases end to end on a tiny quadruplet file (the real data is built by training/data.py)."""
from __future__ import annotations

import contextlib
import io
import json

import h5py
import numpy as np
import pytest
import torch

from lift_localizer.cli import main
from lift_localizer.synthetic import make_texture
from lift_localizer.training.train_lift import centre_crops, train_phase
from lift_localizer.weights import load_network


@pytest.fixture(scope="module")
def quadruplets(tmp_path_factory):
    """48 points: P1 and P2 the same texture spot with a little noise, P3 another spot, P4 flat."""
    path = tmp_path_factory.mktemp("data") / "q.h5"
    tex = make_texture(512, seed=3).astype(np.float32)
    rng = np.random.default_rng(0)
    n = 48
    corners = rng.integers(0, 512 - 128, (n, 2))
    p1 = np.stack([tex[y:y + 128, x:x + 128] for x, y in corners])
    p2 = np.clip(p1 + rng.normal(0, 4, p1.shape), 0, 255)
    p3 = p1[np.roll(np.arange(n), 1)]
    p4 = np.full_like(p1, 128.0)
    with h5py.File(path, "w") as f:
        for k, v in (("p1", p1), ("p2", p2), ("p3", p3), ("p4", p4)):
            f[k] = v.astype(np.uint8)
        for k in ("angle1", "angle2", "angle3"):
            f[k] = np.zeros(n, np.float32)
        f.attrs["sources"] = json.dumps(["synthetic:test"])
    return path


def test_centre_crop_is_the_descriptor_support():
    big = torch.arange(128 * 128, dtype=torch.float32).view(1, 1, 128, 128)
    crop = centre_crops(big, None)
    # The central 64×64 pixels, resampled 1:1 (support 64 px → 64 samples).
    torch.testing.assert_close(crop[0, 0], big[0, 0, 32:96, 32:96], rtol=0, atol=1e-3)


def test_desc_phase_trains_saves_and_resumes(quadruplets, tmp_path):
    conf = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "chunk": 64}
    card = train_phase("desc", quadruplets, tmp_path / "desc", conf, checkpoint=tmp_path / "ckpt", log=lambda *a: None)
    assert card["trained"] and card["training"]["phase"] == "desc" and len(card["training"]["loss_log"]) == 1
    net = load_network("desc", tmp_path / "desc")
    assert net.trained and net.sha256 != load_network("desc").sha256
    card = train_phase("desc", quadruplets, tmp_path / "desc2", {**conf, "epochs": 2}, checkpoint=tmp_path / "ckpt",
                       resume=True, log=lambda *a: None)
    assert [e["epoch"] for e in card["training"]["loss_log"]] == [1, 2]


def test_ori_phase_keeps_desc_fixed(quadruplets, tmp_path):
    desc_before = load_network("desc").sha256
    card = train_phase("ori", quadruplets, tmp_path / "ori", {"epochs": 1, "batch_size": 8, "val_fraction": 0.2},
                       log=lambda *a: None)
    assert card["training"]["desc_sha256"] == desc_before and load_network("ori", tmp_path / "ori").trained


def test_cli_refuses_a_file_that_is_not_training_data(tmp_path):
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["train", "desc", "--data", str(tmp_path / "bad.h5"), "--output", str(tmp_path / "d")])
    assert code == 2 and "not a LIFT training file" in err.getvalue()


def test_upright_desc_ignores_the_angles():
    from lift_localizer.training.train_lift import default_conf, desc_step

    g = torch.Generator().manual_seed(0)
    batch = {f"p{k}": torch.rand(4, 1, 128, 128, generator=g) * 255 for k in (1, 2, 3)}
    turned = {**batch, **{f"angle{k}": torch.rand(4, generator=g) * 6 - 3 for k in (1, 2, 3)}}
    zero = {**batch, **{f"angle{k}": torch.zeros(4) for k in (1, 2, 3)}}
    desc = load_network("desc")
    upright = {**default_conf, "upright": True}
    with torch.no_grad():
        assert torch.allclose(desc_step(desc, turned, upright), desc_step(desc, zero, default_conf), atol=1e-5)
        assert not torch.allclose(desc_step(desc, turned, default_conf), desc_step(desc, zero, default_conf), atol=1e-3)


def test_det_phase_keeps_ori_and_desc_fixed_and_sets_a_threshold(quadruplets, tmp_path):
    card = train_phase("det", quadruplets, tmp_path / "det", {"epochs": 1, "batch_size": 8, "val_fraction": 0.2},
                       log=lambda *a: None)
    assert card["training"]["desc_sha256"] == load_network("desc").sha256
    assert card["training"]["ori_sha256"] == load_network("ori").sha256
    assert isinstance(card["score_threshold"], float)
    assert {"val_class", "val_pair", "val_median_offset_px"} <= set(card["quality"]["held_out_after"])
    net = load_network("det", tmp_path / "det")
    assert net.trained and net.sha256 != load_network("det").sha256


def test_ori_warm_start_moves_towards_the_sift_angles(quadruplets, tmp_path):
    # The fixture's angles are all 0 and the untrained ORI outputs 0: the warm start's objective is
    # met already, so its logged loss is small, and the epochs are logged with their objective.
    from lift_localizer.weights.initial import write_initial

    write_initial(tmp_path)
    card = train_phase("ori", quadruplets, tmp_path / "ori_out", {"epochs": 1, "pretrain_epochs": 1, "batch_size": 8,
                                                                  "val_fraction": 0.2}, log=lambda *a: None,
                       init_weights=tmp_path / "ori")
    log = card["training"]["loss_log"]
    assert [e["objective"] for e in log] == ["angle", "pair"] and log[0]["loss"] < 0.2
    assert "val_median_angle_error_to_sift_deg" in card["quality"]["held_out_after"]


def test_cli_zero_epochs_only_for_the_ori_warm_start(quadruplets, tmp_path):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["train", "desc", "--data", str(quadruplets), "--output", str(tmp_path / "d"), "--epochs", "0"]) == 2
    assert "--epochs must be positive" in err.getvalue()
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "ori", "--data", str(quadruplets), "--output", str(tmp_path / "o"), "--epochs", "0",
                     "--pretrain-epochs", "1", "--batch-size", "8"]) == 0
    card = json.loads((tmp_path / "o.json").read_text())
    assert [e["objective"] for e in card["training"]["loss_log"]] == ["angle"]


def test_training_on_some_sources_of_the_file(quadruplets, tmp_path):
    from lift_localizer.training.train_lift import Quadruplets, default_conf

    assert len(Quadruplets(quadruplets, {**default_conf, "sources": ["synthetic:test"]}).train) == \
        len(Quadruplets(quadruplets, default_conf).train)
    with pytest.raises(ValueError, match="no source webcam:x"):
        Quadruplets(quadruplets, {**default_conf, "sources": ["webcam:x"]})


def test_joint_phase_trains_all_three_saves_three_cards_and_resumes(quadruplets, tmp_path):
    conf = {"epochs": 1, "batch_size": 8, "val_fraction": 0.2, "lr": 1e-4}
    card = train_phase("joint", quadruplets, tmp_path / "joint", conf, checkpoint=tmp_path / "ckpt",
                       log=lambda *a: None)
    assert card["training"]["init_sha256"] == {k: load_network(k).sha256 for k in ("desc", "ori", "det")}
    assert isinstance(card["score_threshold"], float)
    assert {"val_class_accuracy", "val_nn_accuracy", "val_nn_accuracy_at_sfm_points"} <= \
        set(card["quality"]["held_out_after"])
    nets = {k: load_network(k, tmp_path / "joint" / k) for k in ("desc", "ori", "det")}
    for kind, net in nets.items():
        assert net.trained and net.card["training"]["phase"] == "joint", kind
        assert net.sha256 != load_network(kind).sha256, kind
        assert net.card["training"]["trained_with_sha256"] == {k: n.sha256 for k, n in nets.items() if k != kind}
    from safetensors.torch import load_file

    # One checkpoint holds all three networks (and their Adam moments).
    saved = load_file(str(tmp_path / "ckpt.safetensors"))
    assert {k.split(".")[1] for k in saved if k.startswith("model.")} == {"desc", "ori", "det"}
    card = train_phase("joint", quadruplets, tmp_path / "joint2", {**conf, "epochs": 2}, checkpoint=tmp_path / "ckpt",
                       resume=True, log=lambda *a: None)
    assert [e["epoch"] for e in card["training"]["loss_log"]] == [1, 2]
    assert [e["objective"] for e in card["training"]["loss_log"]] == ["global"] * 2


def test_cli_joint_starts_from_the_given_weights(quadruplets, tmp_path):
    from lift_localizer.weights.initial import write_initial

    write_initial(tmp_path / "start")
    with contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", "joint", "--data", str(quadruplets), "--output", str(tmp_path / "out"),
                     "--batch-size", "8", "--det", str(tmp_path / "start" / "det"), "--ori",
                     str(tmp_path / "start" / "ori"), "--no-hard-negatives"]) == 0
    card = json.loads((tmp_path / "out" / "ori.json").read_text())
    assert card["training"]["init_weights"]["ori"] == str(tmp_path / "start" / "ori")
    assert card["training"]["init_sha256"]["ori"] == load_network("ori", tmp_path / "start" / "ori").sha256
    assert card["training"]["init_weights"]["desc"] is None and card["training"]["lr"] == 1e-4
    assert card["training"]["hard_negatives"] is False
