"""build-map → localize → evaluate through the command line, on bags of the synthetic room."""
import json

import numpy as np
import pytest
from conftest import run_cli

from lift_localizer.geometry.pose import T_from_tq, pose_error
from lift_localizer.synthetic import room_sequence

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def bags(room_bags):
    root, _, truth = room_bags
    return root, truth


@pytest.fixture(scope="module")
def built(room_bags):
    root, stdout, _ = room_bags
    return root / "map", stdout


def test_build_map_summary(built):
    out, stdout = built
    assert "[sift] 10 images" in stdout and "[lift] 10 images" in stdout and f"map written to {out}" in stdout
    assert (out / "alt" / "lift" / "map.json").exists()


def test_localize_writes_tum_poses_without_ground_truth(bags, built, tmp_path):
    root, truth = bags
    poses = tmp_path / "poses.txt"
    code, stdout, stderr = run_cli("localize", "--map", built[0], "--bag", root / "query_no_gt", "--output", poses)
    assert code == 0, stderr
    assert "localized 3/3" in stdout
    lines = poses.read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        t, *v = line.split()
        sec, frac = t.split(".")
        assert len(frac) == 9
        stamp = int(sec) * 10**9 + int(frac)
        T = T_from_tq(np.array(v[:3], float), np.array(v[3:], float))
        dt, dr = pose_error(T, truth[stamp])
        assert dt < 0.1 and dr < 2


def test_evaluate_prints_recall_and_writes_report(bags, built, tmp_path):
    root, _ = bags
    code, stdout, stderr = run_cli("evaluate", "--map", built[0], "--bag", root / "query", "--report", tmp_path / "r",
                               "--json", tmp_path / "s.json")
    assert code == 0, stderr
    assert "[sift]" in stdout and "[lift]" in stdout and "(0.25 m, 2°)" in stdout and "median time" in stdout
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["lift"]["num_queries"] == 3 and summary["sift"]["recall"]["0.25m_2deg"] == 1.0
    assert (tmp_path / "r" / "trajectory_top_view.png").exists() and (tmp_path / "r" / "matches_best_lift.png").exists()
    assert "matches_best_lift.png" in (tmp_path / "r" / "report.html").read_text()


def test_evaluate_compares_the_sets_paired_and_with_an_earlier_run(bags, built, tmp_path):
    root, _ = bags
    code, stdout, stderr = run_cli("evaluate", "--map", built[0], "--bag", root / "query", "--report", tmp_path / "r",
                                   "--thresholds", "0.25,2", "0.001,0.1")
    assert code == 0, stderr
    assert "sift vs lift, paired on 3 queries" in stdout and "(0.001 m, 0.1°)" in stdout
    assert "(5 cm, 5°)" not in stdout and "(0.05 m, 5°)" not in stdout  # only the thresholds asked for
    # the same run again, compared with its own table: every query tied, the interval exactly zero
    code, stdout, stderr = run_cli("evaluate", "--map", built[0], "--bag", root / "query", "--features", "sift",
                                   "--compare-with", f"before={tmp_path / 'r' / 'queries_sift.csv'}",
                                   "--json", tmp_path / "s.json")
    assert code == 0, stderr
    paired = json.loads((tmp_path / "s.json").read_text())["sift"]["paired"]
    assert [p["b"] for p in paired] == ["before"]
    assert all(r["lost"] == r["won"] == 0 and r["ci95"] == [0.0, 0.0] for r in paired[0]["rows"])
    assert "scene-scaled thresholds" in stderr + stdout
    # a table of other queries is refused, not compared
    other = tmp_path / "other.csv"
    other.write_text("name,translation_error_m,rotation_error_deg\n1,0.1,1\n")
    code, _, stderr = run_cli("evaluate", "--map", built[0], "--bag", root / "query", "--compare-with", f"x={other}")
    assert code == 2 and "no result for 3 of the 3 queries" in stderr


def test_other_feature_set_and_solver(bags, built, tmp_path):
    root, _ = bags
    code, stdout, _ = run_cli("localize", "--map", built[0], "--bag", root / "query", "--output", tmp_path / "p.txt",
                          "--features", "lift", "--solver", "opencv")
    assert code == 0 and "localized 3/3" in stdout
    code, _, stderr = run_cli("localize", "--map", built[0], "--bag", root / "query", "--output", tmp_path / "p.txt",
                          "--features", "nope")
    assert code == 2 and "no 'nope' features" in stderr


def test_clear_errors(bags, tmp_path):
    root, _ = bags
    code, _, stderr = run_cli("build-map", "--bag", root / "query_no_gt", "--output", tmp_path / "m")
    assert code == 2 and "no pose topic '/ground_truth/pose'" in stderr and not (tmp_path / "m").exists()
    code, _, stderr = run_cli("build-map", "--bag", tmp_path / "nothing", "--output", tmp_path / "m")
    assert code == 2 and "no such bag" in stderr
    code, _, stderr = run_cli("localize", "--map", tmp_path / "nomap", "--bag", root / "query", "--output", tmp_path / "p")
    assert code == 2 and "no such map directory" in stderr
    code, _, stderr = run_cli("evaluate", "--map", tmp_path, "--bag", root / "query")
    assert code == 2 and "not a map" in stderr
    code, _, stderr = run_cli("build-map", "--folder", tmp_path, "--output", tmp_path / "m")
    assert code == 2 and "no transforms.json" in stderr


def test_build_map_from_a_nerf_folder(bags, tmp_path):
    import cv2

    K, mapping, _ = room_sequence(10, 1, image_size=(240, 320))
    frames = []
    for i, (im, T) in enumerate(mapping):
        cv2.imwrite(str(tmp_path / f"{i}.png"), im)
        frames.append({"file_path": f"{i}.png", "transform_matrix": (T @ np.diag([1.0, -1, -1, 1])).tolist()})
    (tmp_path / "transforms.json").write_text(json.dumps({"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2],
                                                          "cy": K[1, 2], "w": 320, "h": 240, "frames": frames}))
    code, stdout, stderr = run_cli("build-map", "--folder", tmp_path, "--output", tmp_path / "map", "--features", "sift")
    assert code == 0, stderr
    assert "[sift] 10 images" in stdout


# ---------------------------------------------------------------- index-map and the global index


def _copy_map(built, target):
    import shutil

    shutil.copytree(built[0], target, ignore=shutil.ignore_patterns("alt"))
    return target


@pytest.fixture()
def other_netvlad(tmp_path, monkeypatch):
    """A NetVLAD for SIFT other than the shipped one (as after `train netvlad`), picked up by index-map."""
    import torch

    import lift_localizer.retrieval.retriever as retriever
    from lift_localizer.weights import load_network, save_network

    shipped = load_network("netvlad", "netvlad_sift")
    with torch.no_grad():
        shipped.module.centroids.mul_(1.01)
    stem = tmp_path / "models" / "netvlad_sift"
    save_network("netvlad", shipped.module, stem, {k: v for k, v in shipped.card.items() if k != "tensors_sha256"})
    monkeypatch.setattr(retriever, "model_stem", lambda name: str(tmp_path / "models" / f"netvlad_{name}"))
    return load_network("netvlad", stem), load_network("netvlad", "netvlad_sift")


class Interrupted(BaseException):
    """What a kill or Ctrl-C does to index-map: nothing after it runs."""


def test_index_map_interrupted_at_any_step_leaves_a_map_that_loads(built, tmp_path, other_netvlad, monkeypatch):
    import os
    import pathlib
    import shutil

    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.build import index_map
    from lift_localizer.mapping.io import load_map

    new, old = other_netvlad
    step = 0
    while True:
        directory = _copy_map(built, tmp_path / f"map{step}")
        calls = [0]

        def interrupting(real):
            def run(*args, **kwargs):
                calls[0] += 1
                if calls[0] > step:
                    raise Interrupted
                return real(*args, **kwargs)
            return run

        with monkeypatch.context() as m:
            # Every step that changes what is on disk under a name: renames, copies, removals.
            m.setattr(os, "replace", interrupting(os.replace))
            m.setattr(shutil, "copyfile", interrupting(shutil.copyfile))
            m.setattr(pathlib.Path, "unlink", interrupting(pathlib.Path.unlink))
            try:
                index_map(directory, log=lambda *a: None)
                finished = True
            except Interrupted:
                finished = False
        localizer = Localizer(load_map(directory))
        assert localizer.retrieval.name == "netvlad", (step, localizer.retrieval_note)
        assert localizer.retrieval.net.sha256 in (old.sha256, new.sha256), step
        if finished:
            break
        step += 1
    assert step >= 8   # every rename, copy and removal was an interruption point once
    assert localizer.retrieval.net.sha256 == new.sha256
    # Done: the usual names, nothing left over.
    assert sorted(p.name for p in directory.iterdir() if "global" in p.name) == ["global.h5", "global.index"]
    assert not list(directory.glob(".*partial"))


def test_index_map_command_then_localize(bags, built, tmp_path, other_netvlad):
    root, _ = bags
    directory = _copy_map(built, tmp_path / "map")
    code, stdout, stderr = run_cli("index-map", directory)
    assert code == 0 and "NetVLAD" in stdout, stderr
    meta = json.loads((directory / "map.json").read_text())["retrieval"]
    assert meta["model_sha256"] == other_netvlad[0].sha256 and set(meta["sha256"]) == {"global.h5", "global.index"}
    code, stdout, stderr = run_cli("localize", "--map", directory, "--bag", root / "query", "--output", tmp_path / "p.txt")
    assert code == 0 and "localized 3/3" in stdout and "descriptor votes" not in stderr, stderr


def _corrupt_index(directory):
    (directory / "global.index").write_bytes(b"not a faiss index")


def _missing_descriptors(directory):
    (directory / "global.h5").unlink()


def _truncated_descriptors(directory):
    data = (directory / "global.h5").read_bytes()
    (directory / "global.h5").write_bytes(data[:len(data) // 2])


def _index_of(directory, n):
    """A valid flat index of n random vectors in place of the map's."""
    import numpy as np

    from lift_localizer.retrieval.index import build_index, save_index

    vectors = np.random.default_rng(0).normal(size=(n, 256)).astype(np.float32)
    save_index(build_index(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))[0], directory / "global.index")


def _without_hashes(directory):
    """map.json as maps written before it recorded the global files' hashes."""
    meta = json.loads((directory / "map.json").read_text())
    del meta["retrieval"]["sha256"]
    (directory / "map.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("hashes,damage,why", [
    (True, _missing_descriptors, "global.h5 is missing"),
    (True, _truncated_descriptors, "global.h5 is not the file map.json names"),
    (True, _corrupt_index, "global.index is not the file map.json names"),
    (True, lambda d: _index_of(d, 10), "global.index is not the file map.json names"),
    # Maps without recorded hashes: the files themselves are checked.
    (False, _truncated_descriptors, "global.h5: unreadable"),
    (False, _corrupt_index, "global.index: unreadable"),
    (False, lambda d: _index_of(d, 3), "holds 3 256-D vectors, the map 10 images"),
])
def test_unusable_global_index_falls_back_to_votes_with_a_note(bags, built, tmp_path, hashes, damage, why):
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.io import MapError, load_map

    root, _ = bags
    directory = _copy_map(built, tmp_path / "map")
    if not hashes:
        _without_hashes(directory)
    damage(directory)
    localizer = Localizer(load_map(directory))
    assert localizer.retrieval.name == "vote" and why in localizer.retrieval_note
    with pytest.raises(MapError, match="NetVLAD retrieval unavailable"):
        Localizer(load_map(directory), {"retrieval": "netvlad"})
    code, stdout, stderr = run_cli("localize", "--map", directory, "--bag", root / "query", "--output", tmp_path / "p.txt")
    assert code == 0 and "localized" in stdout and "note: retrieval by descriptor votes" in stderr and why in stderr
