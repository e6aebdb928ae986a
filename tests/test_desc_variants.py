"""Networks of another architecture (the thin DESC, the fast ORI and DESC) in a map: localization
finds the shipped weights the map was built with, and a DESC distilled from the NetVLAD's DESC
keeps it."""
from __future__ import annotations

import shutil

import pytest
import torch

import lift_localizer.weights as weights
from lift_localizer.features.extractors.lift import LiftExtractor
from lift_localizer.retrieval.retriever import compatible_model
from lift_localizer.weights import build_module, load_network, save_network

LOCALIZER = {"backend": "torch", "device": "cpu", "precision": None, "preset": "default"}


def _shipped_with_thin(tmp_path, monkeypatch, distilled_from: str | None):
    for p in list(weights.WEIGHTS_DIR.glob("*.safetensors")) + list(weights.WEIGHTS_DIR.glob("*.json")):
        shutil.copy(p, tmp_path)
    torch.manual_seed(0)
    card = {"trained": True, "input": dict(load_network("desc").card["input"])}
    if distilled_from:
        card["distilled_from_sha256"] = distilled_from
    save_network("desc", build_module("desc", "lift-desc-thin-v1"), tmp_path / "desc_thin", card)
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path)
    return load_network("desc", "desc_thin")


def test_queries_use_the_shipped_weights_the_map_was_built_with(tmp_path, monkeypatch):
    thin = _shipped_with_thin(tmp_path, monkeypatch, None)
    shipped = {k: load_network(k).sha256 for k in ("det", "ori")}
    features = {"name": "lift", "weights": {**shipped, "desc": thin.sha256}}
    conf = LiftExtractor.query_conf({"max_keypoints": 100}, features, LOCALIZER)
    assert conf["weights"] == {"det": "det", "ori": "ori", "desc": "desc_thin"}
    extractor = LiftExtractor(conf)
    assert extractor.identity()["weights"] == features["weights"]
    # Weights that are not shipped are not guessed: the localizer refuses the map as before.
    features["weights"]["desc"] = "0" * 64
    assert "desc" not in LiftExtractor.query_conf({"max_keypoints": 100}, features, LOCALIZER)["weights"]


def test_netvlad_of_the_teacher_fits_a_distilled_desc_only(tmp_path, monkeypatch):
    teacher = load_network("desc").sha256
    for distilled_from, fits in ((teacher, True), (None, False)):
        monkeypatch.undo()
        (tmp_path / str(fits)).mkdir()
        thin = _shipped_with_thin(tmp_path / str(fits), monkeypatch, distilled_from)
        identity = LiftExtractor({"weights": {"desc": "desc_thin"}, "backend": "torch"}).identity()
        assert identity["weights"]["desc"] == thin.sha256
        net, why = compatible_model(identity)
        assert (net is not None) == fits, why
        if not fits:
            assert "retrain it" in why



@pytest.mark.parametrize("networks", [{"desc": "desc_thin"}, {"ori": "ori_fast", "desc": "desc_fast"}],
                         ids=["thin", "fast"])
def test_build_map_with_cheaper_networks_and_localize_against_it(tmp_path, networks):
    """build-map --desc desc_thin (or --ori ori_fast --desc desc_fast) records those networks;
    evaluate, given no weights, loads them too, and the shipped NetVLAD (trained on the full DESC's
    descriptors) indexes the map."""
    import json

    from conftest import run_cli

    from lift_localizer.bags.writer import write_bag
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.synthetic import room_sequence

    pytest.importorskip("pycolmap")
    K, mapping, query = room_sequence(10, 3, image_size=(240, 320))
    cam = Camera(320, 240, K)
    write_bag(tmp_path / "mapping", posed_frames(mapping, cam, 10**18))
    write_bag(tmp_path / "query", posed_frames(query, cam, 2 * 10**18))
    code, _, err = run_cli("build-map", "--bag", tmp_path / "mapping", "--output", tmp_path / "map",
                           "--max-keypoints", "400", *(a for k, v in networks.items() for a in (f"--{k}", v)),
                           "--features", "lift")
    assert code == 0, err
    meta = json.loads((tmp_path / "map" / "map.json").read_text())
    for kind, stem in networks.items():
        assert meta["features"]["weights"][kind] == load_network(kind, stem).sha256
    assert meta["retrieval"] and meta["retrieval"]["method"] == "netvlad"
    code, out, err = run_cli("evaluate", "--map", tmp_path / "map", "--bag", tmp_path / "query")
    assert code == 0, err
    assert "localized 3/3" in out and "retrieval (netvlad)" in out


def test_unusable_network_weights_are_refused_before_anything_is_read(tmp_path):
    from conftest import run_cli

    # The bag does not exist either: the weights are checked first, with their reason.
    code, _, err = run_cli("build-map", "--bag", tmp_path / "no_bag", "--output", tmp_path / "map",
                           "--desc", "no_such_desc")
    assert code == 2 and "--desc no_such_desc" in err and "card missing" in err
    assert not (tmp_path / "map").exists()
    code, _, err = run_cli("build-map", "--bag", tmp_path / "no_bag", "--output", tmp_path / "map",
                           "--ori", "desc_fast")
    assert code == 2 and "card is for network 'desc', not 'ori'" in err
    code, _, err = run_cli("benchmark", "--ori", "no_such_ori", "--repeat", "1")
    assert code == 2 and "--ori no_such_ori" in err


def test_weights_that_are_not_shipped_are_given_to_the_localizer_by_name(tmp_path):
    """build-map --det STEM with a DET of one's own (here the analytic start of `initial-weights`):
    evaluate without it refuses the map, with the same --det it localizes; a missing stem is refused
    before the bag is read."""
    from conftest import run_cli

    from lift_localizer.bags.writer import write_bag
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.synthetic import room_sequence

    pytest.importorskip("pycolmap")
    assert run_cli("initial-weights", "--output", tmp_path / "init")[0] == 0
    det = str(tmp_path / "init" / "det")
    K, mapping, query = room_sequence(10, 3, image_size=(240, 320))
    cam = Camera(320, 240, K)
    write_bag(tmp_path / "mapping", posed_frames(mapping, cam, 10**18))
    write_bag(tmp_path / "query", posed_frames(query, cam, 2 * 10**18))
    code, _, err = run_cli("build-map", "--bag", tmp_path / "mapping", "--output", tmp_path / "map",
                           "--max-keypoints", "400", "--det", det, "--features", "lift")
    assert code == 0, err
    code, _, err = run_cli("evaluate", "--map", tmp_path / "map", "--bag", tmp_path / "query")
    assert code == 2 and "rebuild the map" in err
    code, out, err = run_cli("evaluate", "--map", tmp_path / "map", "--bag", tmp_path / "query", "--det", det)
    assert code == 0, err
    assert "localized 3/3" in out
    code, _, err = run_cli("localize", "--map", tmp_path / "map", "--bag", tmp_path / "no_bag", "--output",
                           tmp_path / "poses.txt", "--det", str(tmp_path / "no_det"))
    assert code == 2 and "--det" in err and "card missing" in err
