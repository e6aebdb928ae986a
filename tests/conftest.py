import os
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from lift_localizer.cpus import local_cpus

# On the workers of `make test`, each process (and each command-line child it starts, which inherits
# the environment) runs its thread pools on its share of the cores. Left at one thread per core in
# every worker, two workers' OpenMP pools on two cores wait on each other's spinning threads.
if (workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))) > 1:
    share = str(max(1, local_cpus() // workers))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM"):
        os.environ.setdefault(variable, share)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# Modules whose tests start DDS participants (the node, clients, `play`). `make test` runs the suite on
# two pytest-xdist workers; these modules share one of them, in turn, so that no two of their nodes
# ever run at once (their ROS domains come from the process id: ros_harness.private_domain).
ROS_MODULES = {"test_bag_player", "test_fuzz", "test_jump_gate", "test_launch", "test_node", "test_node_hostile",
               "test_package", "test_play_hostile"}
# Modules that share a costly session fixture: one group, so that one worker builds it once.
SHARED_GROUPS = {"test_map_cli": "room_bags", "test_wrong_accepts": "room_bags"}


@pytest.hookimpl(tryfirst=True)   # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """One xdist group per module (its module-scoped fixtures are built once), one for ROS_MODULES,
    one per SHARED_GROUPS fixture."""
    for item in items:
        module = item.module.__name__ if item.module else ""
        item.add_marker(pytest.mark.xdist_group("ros" if module in ROS_MODULES else SHARED_GROUPS.get(module, module)))


@pytest.fixture(autouse=True)
def seeded():
    """The global random generators seeded before each test, so that a test draws the same numbers
    whatever ran before it in its process (the workers of `make test` share the tests out differently
    each run). torch is seeded once imported; it is not imported here, since some tests check what the
    command line imports."""
    random.seed(0)
    np.random.seed(0)
    if (torch := sys.modules.get("torch")) is not None:
        torch.manual_seed(0)


def run_cli(*argv) -> tuple[int, str, str]:
    """``lift-localizer ARGV`` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from lift_localizer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"real data not available: {p} is absent (tests that read ../shared/data skip without it)")
    return p


# The node tests' keypoint budget: the map of ``room_scene`` and the node they start use it.
NODE_KEYPOINTS = 300


def room_with_map(root: Path, num_query: int, features: tuple[str, ...], max_keypoints: int):
    """The synthetic room's 10 mapping views as the bag ROOT/mapping and a map of it built by the command
    line (ROOT/map): (camera, [(query image, T_map_camera)], build-map's stdout)."""
    pytest.importorskip("pycolmap")
    from lift_localizer.bags.writer import write_bag
    from lift_localizer.geometry.camera import Camera
    from lift_localizer.mapping.frames import posed_frames
    from lift_localizer.synthetic import room_sequence

    K, mapping, query = room_sequence(10, num_query, image_size=(240, 320))
    cam = Camera(320, 240, K)
    write_bag(root / "mapping", posed_frames(mapping, cam, 10**18))
    code, stdout, stderr = run_cli("build-map", "--bag", root / "mapping", "--output", root / "map",
                                   "--features", *features, "--max-keypoints", max_keypoints)
    assert code == 0, stderr
    return cam, query, stdout


@pytest.fixture(scope="session")
def room_scene(tmp_path_factory):
    """A rendered room's mapping bag and LIFT map (ROOT/mapping, ROOT/map, NODE_KEYPOINTS keypoints)
    and its query views: (ROOT, camera, [(image, T_map_camera)]). Shared by every module that uses
    it, so no test may change it: copy the map first."""
    root = tmp_path_factory.mktemp("room")
    cam, query, _ = room_with_map(root, 4, ("lift",), NODE_KEYPOINTS)
    return root, cam, query


@pytest.fixture(scope="session")
def room_bags(tmp_path_factory):
    """Bags of the synthetic room (ROOT/mapping; its 3 query views as ROOT/query, compressed, and as
    ROOT/query_no_gt, without poses) and a SIFT + LIFT map of it built by the command line (ROOT/map,
    400 keypoints): (ROOT, build-map's stdout, {query stamp: T_map_camera}). Shared, so no test may
    change it: copy the map first."""
    from lift_localizer.bags.writer import write_bag
    from lift_localizer.mapping.frames import posed_frames

    root = tmp_path_factory.mktemp("room_bags")
    cam, query, stdout = room_with_map(root, 3, ("sift", "lift"), 400)
    write_bag(root / "query", posed_frames(query, cam, 2 * 10**18), compressed=True)
    write_bag(root / "query_no_gt", posed_frames(query, cam, 2 * 10**18), with_poses=False)
    return root, stdout, {2 * 10**18 + i * 10**8: T for i, (_, T) in enumerate(query)}


@pytest.fixture(scope="session")
def lift_small():
    """LIFT with the shipped weights and a keypoint budget small enough for fast tests."""
    from lift_localizer.features.lift import Lift

    return Lift({"max_keypoints": 200})


@pytest.fixture(scope="module")
def networks():
    """The shipped DET, ORI and DESC."""
    from lift_localizer.features.lift import load_networks

    return load_networks()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, networks):
    """A folder with DET, ORI and DESC exported to ONNX and their manifest (no NetVLAD)."""
    pytest.importorskip("onnx", reason="onnx is not installed (needed for the export)")
    from lift_localizer.backends.export import export_onnx

    out = tmp_path_factory.mktemp("export")
    export_onnx(out, networks, netvlad=False)
    return out


@pytest.fixture(scope="module")
def trt_ready():
    """Skips, with the reason, unless TensorRT and a usable CUDA GPU are here."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack, or NVIDIA's Python wheels)")
    from lift_localizer.backends import tensorrt_backend as trtb

    ok, why = trtb.available()
    if not ok:
        pytest.skip(why)


def gaussian_blob(shape, center, sigma, amplitude=120.0, background=80.0):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    g = np.exp(-((xx - center[0]) ** 2 + (yy - center[1]) ** 2) / (2 * sigma**2))
    return (background + amplitude * g).astype(np.float32)
