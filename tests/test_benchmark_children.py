"""`benchmark-node`'s child processes (the node, `play`) are bounded and, when they overstay, killed
with everything they started: a player stuck in DDS teardown must not outlive the benchmark."""
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lift_localizer.evaluation.node_benchmark import ChildTimeout, run_bounded, stop_group
from lift_localizer.stack_dump import ask_for_stacks

# A child that starts a grandchild (as the node or play could: a helper, a decoder) and writes its
# pid, then sleeps in a function of its own, registered for the stack dump as the command line and
# the node are; with IGNORE_INT it ignores Ctrl-C, as a process deadlocked in C code does. Else it
# sets Python's Ctrl-C handler itself: a shell that runs the tests in the background (`cmd &`) starts
# them with SIGINT ignored, and Python keeps an ignored SIGINT ignored.
PARENT = """
import signal, subprocess, sys, time
from lift_localizer.stack_dump import dump_stacks_on_signal
dump_stacks_on_signal()
signal.signal(signal.SIGINT, signal.SIG_IGN if sys.argv[2] == "IGNORE_INT" else signal.default_int_handler)
grandchild = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(300)"])
def stuck_in_publish():
    open(sys.argv[1], "w").write(str(grandchild.pid))
    time.sleep(300)
stuck_in_publish()
"""


def _gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether ``pid`` has ended (a zombie waiting for a reaper counts as ended)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def _grandchild(pid_file: Path) -> int:
    deadline = time.monotonic() + 30
    while not (pid_file.exists() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the child never started its grandchild"
        time.sleep(0.05)
    return int(pid_file.read_text())


def test_a_child_past_its_time_is_killed_with_what_it_started(tmp_path):
    pid_file, err = tmp_path / "grandchild.pid", tmp_path / "stderr"
    t0 = time.monotonic()
    with err.open("w") as stderr, pytest.raises(
            ChildTimeout, match=r"play did not finish within 3 s; killed it \(process group \d+; its threads' stacks are in its stderr\)"):
        run_bounded([sys.executable, "-c", PARENT, str(pid_file), "-"], 3, "play", stderr=stderr)
    assert time.monotonic() - t0 < 60
    assert _gone(_grandchild(pid_file)), "the grandchild outlived the killed child"
    # Asked before it was killed: where it was stuck (it started in 0.2 s, far within the 3 s).
    assert "in stuck_in_publish" in err.read_text(), err.read_text()


def test_a_child_asked_for_its_stacks_writes_them_and_goes_on(tmp_path):
    """The dump does not stop a process: `kill -USR1` on a node that seems stuck is safe."""
    ready, err = tmp_path / "ready", tmp_path / "stderr"
    with err.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-c", PARENT, str(ready), "-"], stderr=stderr, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "the child never got stuck"
            time.sleep(0.05)
        ask_for_stacks(proc, 0.5)
        assert proc.poll() is None, "the dump ended the child"
    finally:
        stop_group(proc, 2)
    dump = err.read_text()
    assert "Current thread" in dump and "in stuck_in_publish" in dump, dump


def test_a_child_in_time_gives_its_exit_code():
    assert run_bounded([sys.executable, "-c", "raise SystemExit(3)"], 60, "play") == 3


@pytest.mark.parametrize("ignores_ctrl_c", [False, True])
def test_stopping_a_child_ends_its_whole_group(tmp_path, ignores_ctrl_c):
    pid_file = tmp_path / "grandchild.pid"
    proc = subprocess.Popen([sys.executable, "-c", PARENT, str(pid_file), "IGNORE_INT" if ignores_ctrl_c else "-"],
                            start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        grandchild = _grandchild(pid_file)
        why = stop_group(proc, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode is not None
    if ignores_ctrl_c:
        assert why is not None and "did not stop within 2 s of Ctrl-C; killed it" in why
    else:
        assert why is None
    assert _gone(grandchild), "what the child started outlived it"
    assert stop_group(proc, 2) is None  # already stopped: nothing to do, nothing to say


def test_node_idle_reads_the_frames_the_node_has_pending():
    """The settle wait ends on `node_idle`, which reads the node's own `frames_pending`: a frame
    waiting in the slot or in the worker's hands keeps the benchmark waiting."""
    from lift_localizer.evaluation.node_benchmark import node_idle
    from lift_localizer.ros.frame_slot import FrameSlot
    from lift_localizer.ros.node_stats import NodeStats

    stats, slot = NodeStats(), FrameSlot()

    def diag() -> dict[str, str]:
        return dict(stats.report(slot.dropped, pending=slot.pending)[2])

    assert node_idle(diag())                        # nothing received yet
    slot.put("a")
    slot.put("b")                                   # a replaced, b waiting
    assert not node_idle(diag()) and diag()["frames_pending"] == "1" and diag()["frames_dropped"] == "1"
    slot.take(0)
    assert not node_idle(diag())                    # b in the worker's hands
    slot.done()
    assert node_idle(diag())
    # However many bad camera_info messages were counted (bad, with no frame in).
    stats.failure("corrupt", counter="bad")
    slot.put("c")
    assert not node_idle(diag())
    assert not node_idle({}) and not node_idle({**diag(), "frames_pending": "?"})
