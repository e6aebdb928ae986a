"""build-map --ray: the extraction and matching tasks on a local 2-CPU Ray give the map the
single-process build gives; a failed task is retried or named; an interrupted build leaves no map."""
import sys
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from conftest import run_cli
from lift_localizer.geometry.camera import Camera
from lift_localizer.images import ImageError
from lift_localizer.mapping.executors import Task, TaskFailed
from lift_localizer.mapping.frames import Frame, posed_frames
from lift_localizer.synthetic import room_sequence

pytest.importorskip("pycolmap")


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray", reason="ray is not installed (build-map --ray's optional dependency)")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def room():
    K, mapping, _ = room_sequence(10, 0, image_size=(240, 320))
    return Camera(320, 240, K), mapping


def bad_image() -> np.ndarray:
    raise ImageError("truncated JPEG")


def build(frames, output, executor=None) -> tuple[dict, list[str]]:
    from lift_localizer.mapping.build import build_map

    logged: list[str] = []
    summary = build_map(frames, output, ("sift", "lift"), {"max_keypoints": 400}, log=logged.append,
                        executor=executor)
    return summary, logged


def test_a_ray_started_for_the_build_is_shut_down_however_it_ends():
    ray = pytest.importorskip("ray", reason="ray is not installed (build-map --ray's optional dependency)")
    if ray.is_initialized():
        pytest.skip("a Ray already runs in this process (this test runs before the module's cluster)")
    from lift_localizer.mapping.ray_build import ray_executor

    with pytest.raises(KeyboardInterrupt):
        with ray_executor(num_cpus=1):
            assert ray.is_initialized()
            raise KeyboardInterrupt
    assert not ray.is_initialized()


def test_the_same_map_with_and_without_ray(ray, room, tmp_path):
    from lift_localizer.mapping.io import load_map
    from lift_localizer.mapping.ray_build import RayExecutor

    cam, views = room
    frames = [Frame(f"map_{i}", cam, T, stamp_ns=i, loader=lambda im=im: im) for i, (im, T) in enumerate(views)]
    frames.insert(3, Frame("broken", cam, views[3][1], stamp_ns=99, loader=bad_image))
    here, here_log = build(frames, tmp_path / "here")
    there, there_log = build(frames, tmp_path / "ray", RayExecutor())
    # A bad image is skipped with the same warning, not retried.
    assert [m for m in here_log if "broken" in m] == [m for m in there_log if "broken" in m] != []
    for name, subdir in (("sift", ""), ("lift", "alt/lift")):
        a, b = here[name], there[name]
        assert (a["images"], a["pairs"], a["matched_pairs"]) == (b["images"], b["pairs"], b["matched_pairs"]) == \
            (10, a["pairs"], a["matched_pairs"]), name
        assert a["points"] > 20 and abs(a["points"] - b["points"]) <= 0.01 * a["points"], (name, a, b)
        ma, mb = load_map(tmp_path / "here" / subdir), load_map(tmp_path / "ray" / subdir)
        assert [im.name for im in ma.images] == [im.name for im in mb.images]
        # Every point of one map has a point of the other within 1 mm (the room is metres across).
        d = np.linalg.norm(ma.xyz[:, None] - mb.xyz[None], axis=2)
        assert np.mean(d.min(axis=1) < 1e-3) >= 0.99, name


def test_a_transient_failure_is_retried(ray, tmp_path):
    from lift_localizer.mapping.ray_build import RayExecutor

    def flaky(marker: str) -> str:
        # Fails the first time it runs anywhere (the marker is on this machine's disk), then succeeds.
        path = Path(marker)
        if not path.exists():
            path.touch()
            raise OSError(f"{marker}: not there yet")
        return "done"

    with tqdm(total=1, disable=True) as bar:
        assert RayExecutor().run(flaky, [Task("image 7", (str(tmp_path / "marker"),))], bar) == ["done"]


def test_tasks_run_torch_on_one_thread_per_ray_cpu(ray):
    from lift_localizer.mapping.ray_build import RayExecutor

    def threads() -> int:
        import torch

        return torch.get_num_threads()

    with tqdm(total=2, disable=True) as bar:
        assert RayExecutor().run(threads, [Task("a", ()), Task("b", ())], bar) == [1, 1]


def test_results_come_in_the_tasks_order_as_they_complete(ray):
    from lift_localizer.mapping.ray_build import RayExecutor

    def late_first(i: int) -> int:
        import time

        time.sleep(2.0 if i == 0 else 0.0)
        return i

    class Bar:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    bar = Bar()
    results = RayExecutor(tasks_in_flight=4).each(late_first, [Task(f"image {i}", (i,)) for i in range(8)], bar)
    assert next(results) == 0
    # Tasks behind the slow first one were done before it, and held until it came.
    assert bar.n >= 4
    assert list(results) == list(range(1, 8)) and bar.n == 8


def test_a_failing_task_is_named_and_not_retried(ray, tmp_path):
    from lift_localizer.mapping.ray_build import RayExecutor

    def broken(calls: str, i: int) -> int:
        with open(calls, "a") as f:
            f.write("call\n")
        if i == 2:
            raise ValueError("descriptor size 64, expected 128")
        return i

    calls = tmp_path / "calls"
    tasks = [Task(f"features of image {i}", (str(calls), i)) for i in range(4)]
    with tqdm(total=4, disable=True) as bar, pytest.raises(TaskFailed) as e:
        RayExecutor().run(broken, tasks, bar)
    assert str(e.value) == ("features of image 2 failed on the Ray cluster: ValueError: descriptor size 64, "
                            "expected 128")
    assert calls.read_text().count("call") <= 4   # no second try of image 2 (others may be cancelled first)


def test_an_interrupted_build_leaves_no_map(ray, room, tmp_path, monkeypatch):
    from lift_localizer.bags.writer import write_bag

    cam, views = room
    write_bag(tmp_path / "bag", posed_frames(views, cam, 10**18))
    out = tmp_path / "maps"
    out.mkdir()
    wait, waits, partial = ray.wait, [], []

    def interrupted_wait(*args, **kwargs):
        # Ctrl-C while matching (the 10 images' extraction waits come first), with the map half written.
        waits.append(1)
        if len(waits) == 13:
            partial.extend(out.iterdir())
            raise KeyboardInterrupt
        return wait(*args, **kwargs)

    monkeypatch.setattr(ray, "wait", interrupted_wait)
    with pytest.raises(KeyboardInterrupt):
        run_cli("build-map", "--bag", tmp_path / "bag", "--output", out / "room", "--features", "sift", "--ray")
    assert len(waits) == 13 and len(partial) == 1
    assert list(out.iterdir()) == []
    monkeypatch.undo()
    # The cancelled tasks give their CPUs back.
    for _ in range(100):
        if ray.available_resources().get("CPU") == 2:
            break
        import time

        time.sleep(0.2)
    assert ray.available_resources().get("CPU") == 2


def test_ray_flag_without_ray_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # `import ray` raises ImportError
    code, _, err = run_cli("build-map", "--folder", tmp_path, "--output", tmp_path / "map", "--ray")
    assert code == 2 and "pip install 'ray" in err, err
    assert not (tmp_path / "map").exists()



def test_ray_cpus_is_for_the_ray_started_here(tmp_path):
    for extra in ([], ["--ray", "auto"]):
        code, _, err = run_cli("build-map", "--folder", tmp_path, "--output", tmp_path / "map", "--ray-cpus", 2, *extra)
        assert code == 2 and "--ray-cpus sets the CPUs of the Ray that --ray (without ADDRESS) starts here" in err


def test_an_unreachable_cluster_is_one_clear_line(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (build-map --ray's optional dependency)")
    import socket

    with socket.socket() as s:   # a port that nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for address, why in ((f"127.0.0.1:{port}", "cannot connect"), ("nowhere", "expected auto, HOST:PORT")):
            code, _, err = run_cli("build-map", "--folder", tmp_path, "--output", tmp_path / "map", "--ray", address)
            assert code == 2 and why in err, err

def test_pairs_by_blocks_are_those_of_the_whole_matrix(monkeypatch):
    from lift_localizer.mapping import pairs

    def whole_matrix(poses, num_neighbours, max_view_angle_deg):
        centres = np.array([T[:3, 3] for T in poses])
        axes = np.array([T[:3, 2] for T in poses])
        dist = np.linalg.norm(centres[:, None] - centres[None], axis=2)
        dist[np.clip(axes @ axes.T, -1, 1) < np.cos(np.radians(max_view_angle_deg))] = np.inf
        np.fill_diagonal(dist, np.inf)
        return sorted({(min(i, int(j)), max(i, int(j))) for i in range(len(poses))
                       for j in np.argsort(dist[i], kind="stable")[:num_neighbours] if np.isfinite(dist[i, j])})

    rng = np.random.default_rng(3)
    poses = []
    for _ in range(300):
        R, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        T = np.eye(4)
        # Centres on a coarse grid: many equal distances, where the order of ties decides.
        T[:3, :3], T[:3, 3] = R * np.sign(np.linalg.det(R)), rng.integers(0, 4, 3)
        poses.append(T)
    monkeypatch.setattr(pairs, "PAIR_BLOCK_ELEMENTS", 300 * 7)   # blocks of 7 rows, the last one shorter
    for k, angle in ((8, 75.0), (1, 180.0), (299, 60.0), (400, 75.0)):
        assert pairs.select_pairs(poses, k, angle) == whole_matrix(poses, k, angle), (k, angle)
