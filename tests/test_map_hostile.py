"""Maps handed to us by someone else: corrupt or hostile files give one-line errors (or, for the global
index, descriptor-vote retrieval with a note), never a traceback, an unbounded allocation, or a read
outside the map directory."""
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import run_cli

from lift_localizer.geometry.camera import Camera
from lift_localizer.bags.writer import write_bag
from lift_localizer.mapping.frames import posed_frames
from lift_localizer.mapping.io import MapError, load_map
from lift_localizer.synthetic import room_sequence

pytest.importorskip("pycolmap")
pytest.importorskip("faiss")

# What a localize run may use: a regression that allocates what a file states fails instead of
# taking the machine's memory.
MEMORY_LIMIT = 2 << 30


def run_limited(*argv, timeout=120):
    """The command line in a child process whose address space is capped at MEMORY_LIMIT."""
    return run_limited_each([argv], timeout)[0]


def run_limited_each(runs, timeout=120):
    """Each command line of ``runs`` in turn, in one child process whose address space is capped at
    MEMORY_LIMIT (one process: a child pays ~2 s for torch alone), each through conftest.run_cli:
    [(code, stdout, stderr)]."""
    script = textwrap.dedent(f"""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT}))
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from conftest import run_cli
        print(json.dumps([run_cli(*argv) for argv in json.loads(sys.argv[1])]))
    """)
    runs = [[str(a) for a in argv] for argv in runs]
    p = subprocess.run([sys.executable, "-c", script, json.dumps(runs)], capture_output=True, text=True,
                       timeout=timeout * len(runs), env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0 and p.stdout.strip(), p.stderr
    return [tuple(r) for r in json.loads(p.stdout.strip().splitlines()[-1])]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    K, mapping, query = room_sequence(10, 2, image_size=(240, 320))
    cam = Camera(320, 240, K)

    write_bag(root / "mapping", posed_frames(mapping, cam, 10**18))
    write_bag(root / "query", posed_frames(query, cam, 2 * 10**18))
    return root


@pytest.fixture(scope="module")
def built(bags, tmp_path_factory):
    """A SIFT map (fast to build) with NetVLAD retrieval."""
    out = tmp_path_factory.mktemp("map") / "map"
    code, _, stderr = run_cli("build-map", "--bag", bags / "mapping", "--output", out, "--features", "sift",
                          "--max-keypoints", "300")
    assert code == 0, stderr
    return out


@pytest.fixture()
def copy(built, tmp_path):
    return shutil.copytree(built, tmp_path / "map")


def edit_meta(directory, change):
    meta = json.loads((directory / "map.json").read_text())
    change(meta)
    (directory / "map.json").write_text(json.dumps(meta))


def forget_hashes(directory):
    """map.json as maps written before it recorded the global files' hashes."""
    edit_meta(directory, lambda m: m["retrieval"].pop("sha256"))


def record_hashes(directory):
    """map.json naming the files' current hashes, as someone who changed them would write it."""
    from lift_localizer.weights import file_sha256

    edit_meta(directory, lambda m: m["retrieval"].update(
        sha256={n: file_sha256(directory / n) for n in ("global.h5", "global.index")}))


def one_line_error(code, stderr):
    lines = stderr.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr


# ---------------------------------------------------------------- 1. the faiss index and global.h5


def poke(path, offset, fmt, value):
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


# Offsets in a flat index: fourcc 0, d 4, ntotal 8, is_trained 28, metric 29, vector size 33.
INDEX_DAMAGE = {
    "vector size": lambda p: poke(p, 33, "<Q", 1 << 36),
    "dimension": lambda p: poke(p, 4, "<i", 1 << 30),
    "count": lambda p: poke(p, 8, "<q", 1 << 40),
    "four header bytes": lambda p: poke(p, 37, "<I", 0x10),
    "type": lambda p: p.write_bytes(b"IxPQ" + p.read_bytes()[4:]),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:100]),
    "garbage": lambda p: p.write_bytes(os.urandom(5000)),
    "trailing bytes": lambda p: p.write_bytes(p.read_bytes() + b"\0" * 8),
}


@pytest.mark.parametrize("hashes", ["none", "recorded again"])
def test_damaged_index_is_refused_before_faiss_reads_it(bags, copy, tmp_path, hashes):
    """Whatever map.json says of the hashes, the index's sizes are checked against the map first;
    localize falls back to descriptor votes with a note, within a 2 GB address space."""
    for what, damage in INDEX_DAMAGE.items():
        directory = shutil.copytree(copy, tmp_path / what.replace(" ", "_"))
        damage(directory / "global.index")
        forget_hashes(directory) if hashes == "none" else record_hashes(directory)
    results = run_limited_each([("localize", "--map", tmp_path / what.replace(" ", "_"), "--bag", bags / "query",
                                 "--output", tmp_path / "p.txt") for what in INDEX_DAMAGE])
    for what, (code, stdout, stderr) in zip(INDEX_DAMAGE, results):
        assert code == 0 and "Traceback" not in stderr, (what, stderr)
        assert "note: retrieval by descriptor votes" in stderr and "global.index" in stderr, (what, stderr)


def test_check_index_file_accepts_what_faiss_writes_and_refuses_any_other_size(tmp_path):
    from lift_localizer.retrieval.index import IndexFileError, build_index, check_index_file, load_index, save_index

    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    for kind in ("flat", "hnsw"):
        path = tmp_path / kind
        save_index(build_index(x, kind)[0], path)
        check_index_file(path, 16, 300)
        assert load_index(path, 16, 300).ntotal == 300
        with pytest.raises(IndexFileError, match="holds 300 16-D vectors, the map 299"):
            check_index_file(path, 16, 299)
        data = path.read_bytes()
        # Every 8-byte word of the file's first 200 bytes set to a huge number: refused, or the same index.
        for offset in range(4, 200, 4):
            damaged = bytearray(data)
            struct.pack_into("<Q", damaged, offset, 1 << 40)
            path.write_bytes(bytes(damaged))
            try:
                check_index_file(path, 16, 300)
            except IndexFileError:
                continue
            assert load_index(path, 16, 300).ntotal == 300


DESCRIPTOR_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:len(p.read_bytes()) // 2]),
    "64-D": lambda p: _rewrite_global(p, dim=64),
    "names of other length": lambda p: _rewrite_global(p, names=1),
    "integer descriptors": lambda p: _rewrite_global(p, dtype=np.int32),
}


def _rewrite_global(path, dim=None, names=0, dtype=np.float32):
    with h5py.File(path, "r") as f:
        stored, desc, attrs = f["names"][()], f["descriptors"][()], dict(f.attrs)
    with h5py.File(path, "w") as f:
        f.create_dataset("names", data=stored[names:], dtype=h5py.string_dtype())
        f.create_dataset("descriptors", data=desc[:, :dim or desc.shape[1]].astype(dtype))
        f.attrs.update(attrs)


@pytest.mark.parametrize("what", DESCRIPTOR_DAMAGE)
def test_damaged_global_descriptors_fall_back_to_votes(bags, copy, tmp_path, what):
    from lift_localizer.retrieval.index import build_index, save_index

    DESCRIPTOR_DAMAGE[what](copy / "global.h5")
    if what == "64-D":   # and an index that agrees with them
        save_index(build_index(np.eye(10, 64, dtype=np.float32))[0], copy / "global.index")
    record_hashes(copy)
    code, stdout, stderr = run_cli("localize", "--map", copy, "--bag", bags / "query", "--output", tmp_path / "p.txt")
    assert code == 0 and "note: retrieval by descriptor votes" in stderr and "global.h5" in stderr, stderr


# ---------------------------------------------------------------- 2. map.json's schema


META_DAMAGE = {
    "features a string": (lambda m: m.update(features="lift"), "features is the string \"lift\", expected an object"),
    "format_version a string": (lambda m: m.update(format_version="1"), "format_version is \"1\", not an integer"),
    "format_version true": (lambda m: m.update(format_version=True), "not an integer"),
    "image_names an object": (lambda m: m.update(image_names={}), "image_names is an object, expected an array"),
    "image name a number": (lambda m: m["image_names"].__setitem__(0, 5), "image_names[0] is an integer"),
    "repeated image names": (lambda m: m["image_names"].__setitem__(1, m["image_names"][0]), "repeated"),
    "no features name": (lambda m: m["features"].pop("name"), "features has no 'name'"),
    "features name a list": (lambda m: m["features"].update(name=["sift"]), "features.name is an array"),
    "unknown features": (lambda m: m["features"].update(name="surf"), "unknown features 'surf'"),
    "resize_max a string": (lambda m: m["features"].update(resize_max="big"), "features.resize_max is the string"),
    "weights a list": (lambda m: m["features"].update(weights=[]), "features.weights is an array"),
    "retrieval a list": (lambda m: m.update(retrieval=[]), "retrieval is an array"),
    "retrieval model a number": (lambda m: m["retrieval"].update(model=3), "retrieval.model is an integer"),
    "retrieval files a string": (lambda m: m["retrieval"].update(files="global.h5"), "retrieval.files is the string"),
    "retrieval file outside": (lambda m: m["retrieval"].update(files=["../x.h5", "global.index"]), "two file names"),
    "retrieval sha256 a list": (lambda m: m["retrieval"].update(sha256=[]), "retrieval.sha256 is an array"),
    "retrieval dim a string": (lambda m: m["retrieval"].update(dim="256"), "retrieval.dim is the string"),
    "model an absolute path": (lambda m: m["retrieval"].update(model="/etc/netvlad"), "neither a model shipped"),
    "model outside the map": (lambda m: m["retrieval"].update(model="../netvlad_sift"), "neither a model shipped"),
    "not an object": (lambda m: None, "not a lift_localizer map"),
}


@pytest.mark.parametrize("what", META_DAMAGE)
def test_map_json_of_wrong_types_is_a_one_line_map_error(bags, copy, tmp_path, what):
    change, message = META_DAMAGE[what]
    if what == "not an object":
        (copy / "map.json").write_text("[1, 2]")
    else:
        edit_meta(copy, change)
    with pytest.raises(MapError, match="map.json|format"):
        load_map(copy)
    code, _, stderr = run_cli("localize", "--map", copy, "--bag", bags / "query", "--output", tmp_path / "p.txt")
    assert one_line_error(code, stderr) and message in stderr, stderr
    code, _, stderr = run_cli("evaluate", "--map", copy, "--bag", bags / "query")
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


# ---------------------------------------------------------------- 3. links out of the map


@pytest.mark.parametrize("name", ["map.json", "features.h5", "points.h5", "global.index", "sparse/points3D.bin"])
def test_symbolic_link_out_of_the_map_is_refused(bags, copy, tmp_path, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.move(copy / name, outside / "file")
    (copy / name).symlink_to(outside / "file")
    with pytest.raises(MapError, match="leads outside the map directory"):
        load_map(copy)
    code, _, stderr = run_cli("localize", "--map", copy, "--bag", bags / "query", "--output", tmp_path / "p.txt")
    assert one_line_error(code, stderr) and "leads outside the map directory" in stderr, stderr


def test_links_inside_the_map_are_followed(copy):
    shutil.move(copy / "points.h5", copy / "sparse" / "points.h5")
    (copy / "points.h5").symlink_to("sparse/points.h5")
    assert len(load_map(copy).point_ids) > 0


def test_alternate_that_links_out_of_the_map_is_refused(copy, tmp_path):
    shutil.copytree(copy, tmp_path / "other")
    edit_meta(tmp_path / "other", lambda m: m["features"].update(name="lift"))
    (copy / "alt").mkdir()
    (copy / "alt" / "lift").symlink_to(tmp_path / "other")
    with pytest.raises(MapError, match="leads outside the map directory"):
        load_map(copy, "lift")


def _external_image_group(directory, outside):
    with h5py.File(outside, "w") as f:
        f.create_group("stolen")
    with h5py.File(directory / "features.h5", "a") as f:
        name = next(iter(f))
        f.move(name, "moved")
        f[name] = h5py.ExternalLink(str(outside), "/stolen")


def _external_storage(directory, outside):
    outside.write_bytes(np.zeros(30, np.float64).tobytes())
    with h5py.File(directory / "points.h5", "a") as f:
        del f["xyz"]
        f.create_dataset("xyz", shape=(len(f["ids"]), 3), dtype=np.float64, external=[(str(outside), 0, 1 << 20)])


def _virtual_dataset(directory, outside):
    with h5py.File(outside, "w") as f:
        f["xyz"] = np.zeros((1, 3))
    with h5py.File(directory / "points.h5", "a") as f:
        n = len(f["ids"])
        layout = h5py.VirtualLayout(shape=(n, 3), dtype=np.float64)
        layout[:1] = h5py.VirtualSource(str(outside), "xyz", shape=(1, 3))
        del f["xyz"]
        f.create_virtual_dataset("xyz", layout, fillvalue=0)


def _soft_link(directory, outside):
    with h5py.File(directory / "points.h5", "a") as f:
        f.move("xyz", "hidden")
        f["xyz"] = h5py.SoftLink("/hidden")


@pytest.mark.parametrize("damage", [_external_image_group, _external_storage, _virtual_dataset, _soft_link])
def test_hdf5_that_reads_other_files_is_refused(copy, tmp_path, damage):
    damage(copy, tmp_path / "outside.h5")
    with pytest.raises(MapError, match="refused"):
        # The points at load; an image's group, before anything in it is read, when it is first asked for.
        with load_map(copy) as m:
            for im in m.images:
                im.features


def test_global_file_with_an_external_link_falls_back_to_votes(copy, tmp_path):
    from lift_localizer.localization.localizer import Localizer

    with h5py.File(tmp_path / "outside.h5", "w") as f:
        f["d"] = np.zeros((10, 256), np.float32)
    with h5py.File(copy / "global.h5", "a") as f:
        del f["descriptors"]
        f["descriptors"] = h5py.ExternalLink(str(tmp_path / "outside.h5"), "/d")
    record_hashes(copy)
    localizer = Localizer(load_map(copy))
    assert localizer.retrieval.name == "vote" and "ExternalLink; refused" in localizer.retrieval_note


def test_model_trained_elsewhere_is_copied_into_the_map(copy, tmp_path, monkeypatch):
    import torch

    import lift_localizer.retrieval.retriever as retriever
    from lift_localizer.localization.localizer import Localizer
    from lift_localizer.mapping.build import index_map
    from lift_localizer.weights import load_network, save_network

    shipped = load_network("netvlad", "netvlad_sift")
    with torch.no_grad():
        shipped.module.centroids.mul_(1.01)
    stem = tmp_path / "models" / "netvlad_sift"
    save_network("netvlad", shipped.module, stem, {k: v for k, v in shipped.card.items() if k != "tensors_sha256"})
    monkeypatch.setattr(retriever, "model_stem", lambda name: str(stem))
    index_map(copy, log=lambda *a: None)
    model = json.loads((copy / "map.json").read_text())["retrieval"]["model"]
    assert model.startswith("netvlad/") and (copy / f"{model}.safetensors").is_file()
    shutil.rmtree(tmp_path / "models")   # the map no longer needs it
    localizer = Localizer(load_map(copy))
    assert localizer.retrieval.name == "netvlad", localizer.retrieval_note


# ---------------------------------------------------------------- 4. sizes before allocation, finite points


def _set_dataset(directory, file, key, make, image=True):
    with h5py.File(directory / file, "a") as f:
        g = f[next(iter(f))] if image else f
        del g[key]
        make(g, key)


FEATURE_DAMAGE = {
    # Declared, never written: a dataset of a terabyte that takes no room in the file.
    "a terabyte of keypoints": (lambda g, k: g.create_dataset(k, shape=(1 << 37, 2), dtype=np.float32,
                                                              chunks=(1024, 2)), "keypoints; a map image holds"),
    "64-D descriptors": (lambda g, k: g.create_dataset(k, data=np.zeros((len(g["scores"]), 64), np.float32)),
                         "descriptors has shape"),
    "fewer scales": (lambda g, k: g.create_dataset(k, data=np.zeros(3, np.float32)), "scales has shape"),
    "string descriptors": (lambda g, k: g.create_dataset(k, data=np.array(["a"] * len(g["scores"]), "S1")),
                           "descriptors has shape"),
}


@pytest.mark.parametrize("what", FEATURE_DAMAGE)
def test_feature_sizes_are_checked_before_reading(bags, copy, tmp_path, what):
    make, message = FEATURE_DAMAGE[what]
    key = {"a terabyte of keypoints": "keypoints", "fewer scales": "scales"}.get(what, "descriptors")
    _set_dataset(copy, "features.h5", key, make)
    code, _, stderr = run_limited("localize", "--map", copy, "--bag", bags / "query", "--output", tmp_path / "p")
    assert one_line_error(code, stderr) and message in stderr, stderr


def test_expanding_datasets_are_refused(copy):
    """A compressed file whose datasets hold far more than its size (all images' descriptors zero)."""
    with h5py.File(copy / "features.h5", "a") as f:
        for name in f:
            n = 100_000
            for key, shape in (("keypoints", (n, 2)), ("descriptors", (n, 128))):
                del f[name][key]
                f[name].create_dataset(key, shape=shape, dtype=np.float32, compression="gzip")
            for key in ("scales", "orientations", "scores", "point3D_ids"):
                del f[name][key]
                f[name].create_dataset(key, shape=(n,), dtype=np.float32 if key != "point3D_ids" else np.int64,
                                       compression="gzip", fillvalue=-1 if key == "point3D_ids" else 0)
    with pytest.raises(MapError, match="larger than the file could hold"):
        load_map(copy).observations(0)   # an image's datasets are read when it is first asked for


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_points_are_refused(copy, value):
    with h5py.File(copy / "points.h5", "a") as f:
        xyz = f["xyz"][()]
        xyz[3, 1] = value
        f["xyz"][...] = xyz
    with pytest.raises(MapError, match="1 3D point.s. are not finite"):
        load_map(copy)


def test_build_never_writes_non_finite_points(tmp_path):
    import pycolmap

    from lift_localizer.mapping.build import drop_non_finite_points
    from lift_localizer.mapping.io import write_map

    rec = pycolmap.Reconstruction()
    good = rec.add_point3D(np.array([1.0, 2, 3]), pycolmap.Track())
    bad = rec.add_point3D(np.array([np.nan, 0, 1]), pycolmap.Track())
    point_ids = [np.array([good, bad, -1, bad], np.int64)]
    assert drop_non_finite_points(rec, point_ids) == 1
    assert list(rec.points3D) == [good] and point_ids[0].tolist() == [good, -1, -1, -1]
    with pytest.raises(ValueError, match="non-finite"):
        write_map(tmp_path / "m", {"features": {"name": "sift"}}, [], np.array([1]), np.array([[np.inf, 0, 0]]),
                  np.zeros(1), np.ones(1, np.int64))
    assert not (tmp_path / "m").exists()


# ---------------------------------------------------------------- 5. builds: leftovers, --output, replacement


def _dead_pid():
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(p.stdout)


def test_a_killed_builds_leftovers_are_removed_at_the_next_build(tmp_path):
    from lift_localizer.mapping.io import atomic_directory

    dead, alive = _dead_pid(), os.getppid()
    leftovers = [tmp_path / f".map.partial-{dead}-x1", tmp_path / ".map.partial-unnamed", tmp_path / f".map.old-{dead}"]
    running = tmp_path / f".map.partial-{alive}-x2"
    for d in [*leftovers, running]:
        (d / "sparse").mkdir(parents=True)
        (d / "features.h5").write_bytes(b"\0" * 1000)
    (tmp_path / ".other.partial-1-x").mkdir()
    with atomic_directory(tmp_path / "map") as tmp:
        (tmp / "map.json").write_text("{}")
    assert not any(d.exists() for d in leftovers)
    assert running.exists() and (tmp_path / ".other.partial-1-x").exists() and (tmp_path / "map" / "map.json").exists()


@pytest.mark.parametrize("case", ["existing file", "parent is a file", "folder that is not a map", "the source"])
def test_bad_output_is_found_before_the_build_starts(bags, tmp_path, monkeypatch, case):
    import lift_localizer.commands.build_map as build_map

    monkeypatch.setattr(build_map, "load_frames", lambda *a, **k: pytest.fail("the build started"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("mine")
    output = {"existing file": tmp_path / "file", "parent is a file": tmp_path / "file" / "map",
              "folder that is not a map": tmp_path / "folder", "the source": bags}[case]
    code, _, stderr = run_cli("build-map", "--bag", bags / "mapping", "--output", output)
    assert one_line_error(code, stderr) and "--output" in stderr, stderr
    assert (tmp_path / "folder" / "notes.txt").exists() and (tmp_path / "file").read_text() == "x"


def test_replacing_a_map_never_leaves_its_path_missing(built, tmp_path, monkeypatch):
    """Each rename step is watched: the map's path names a whole map before and after each."""
    import lift_localizer.mapping.io as mio

    target = shutil.copytree(built, tmp_path / "map")
    real_exchange, real_rename = mio._renameat2(), os.rename
    if real_exchange is None:
        pytest.skip("no renameat2 on this system")
    steps = []

    def watched(step):
        def call(*args):
            assert (target / "map.json").is_file()
            result = step(*args)
            assert (target / "map.json").is_file()
            steps.append(step)
            return result
        return call

    monkeypatch.setattr(mio, "_renameat2", lambda: watched(real_exchange))
    monkeypatch.setattr(os, "rename", watched(real_rename))
    with mio.atomic_directory(target) as tmp:
        shutil.copytree(built, tmp, dirs_exist_ok=True)
        (tmp / "new").write_text("")
    assert steps == [real_exchange], "replaced by a swap of the two names, in one step"
    assert (target / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["map"]


def test_a_replacement_cut_between_two_renames_is_recovered(built, tmp_path):
    """Where no swap is possible: a process killed between the two renames leaves the old map
    aside, and the next load puts it back."""
    target = shutil.copytree(built, tmp_path / "map")
    new = shutil.copytree(built, tmp_path / "new")
    (new / "new").write_text("")
    script = textwrap.dedent(f"""
        import os, pathlib
        import lift_localizer.mapping.io as mio
        mio.exchange = lambda a, b: False
        rename, calls = os.rename, []
        def killed_at_the_second(*args):
            calls.append(args)
            if len(calls) == 2:
                os._exit(9)
            rename(*args)
        os.rename = killed_at_the_second
        mio.replace_directory(pathlib.Path({str(new)!r}), pathlib.Path({str(target)!r}))
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert not target.exists() and list(tmp_path.glob(".map.old-*"))
    assert len(load_map(target).images) == 10 and not (target / "new").exists()


def test_corrupt_hdf5_structure_is_a_map_error(copy):
    """HDF5 reports a damaged B-tree or heap as RuntimeError."""
    data = bytearray((copy / "points.h5").read_bytes())
    data[128:144] = b"\xff" * 16   # inside the root group's B-tree
    (copy / "points.h5").write_bytes(bytes(data))
    with pytest.raises(MapError, match="points.h5"):
        load_map(copy)


# ---------------------------------------------------------------- images.h5, the table of cameras and poses


def test_the_image_table_gives_the_records_the_groups_give(copy):
    from lift_localizer.mapping.io import IMAGES_FILE

    with load_map(copy) as fast:
        records = [(im.name, im.camera.to_dict(), im.T_map_camera) for im in fast.images]
    (copy / IMAGES_FILE).unlink()   # a map written before the table: each image's group is read
    with load_map(copy) as slow:
        assert [(im.name, im.camera.to_dict()) for im in slow.images] == [(n, c) for n, c, _ in records]
        assert all(np.array_equal(im.T_map_camera, T) for im, (_, _, T) in zip(slow.images, records))
    assert len(records) == 10


def _rewrite(path, key, data, **kw):
    with h5py.File(path, "a") as f:
        if callable(data):
            data = data(f[key])
        del f[key]
        f.create_dataset(key, data=data, **kw)


IMAGE_TABLE_DAMAGE = {
    "names in another order": (lambda f: _rewrite(f, "names", lambda d: np.array(d.asstr()[()][::-1], dtype=object),
                                                  dtype=h5py.string_dtype()), "not map.json's"),
    "a pose with NaN": (lambda f: _rewrite(f, "T_map_camera", np.full((10, 4, 4), np.nan)), "not finite"),
    "poses of 3×4": (lambda f: _rewrite(f, "T_map_camera", np.zeros((10, 3, 4))), "T_map_camera has shape"),
    "a camera index out of range": (lambda f: _rewrite(f, "camera_index", np.full(10, 7, np.int64)), "out of range"),
    "more cameras than images": (lambda f: _rewrite(f, "cameras", np.array(["{}"] * 11, dtype=object),
                                             dtype=h5py.string_dtype()), "at most 10 strings"),
    "a camera that is not JSON": (lambda f: _rewrite(f, "cameras", np.array(["{"], dtype=object),
                                                     dtype=h5py.string_dtype()), "cannot be read"),
    "truncated": (lambda f: f.write_bytes(f.read_bytes()[:300]), "images.h5"),
}


@pytest.mark.parametrize("what", IMAGE_TABLE_DAMAGE)
def test_a_damaged_image_table_is_a_map_error(copy, what):
    from lift_localizer.mapping.io import IMAGES_FILE

    damage, message = IMAGE_TABLE_DAMAGE[what]
    damage(copy / IMAGES_FILE)
    with pytest.raises(MapError, match=message):
        load_map(copy)
