"""``build-map --ray``: the map build's extraction and matching tasks on a Ray cluster.

    with ray_executor("auto") as executor:            # None: a Ray started here on this machine's CPUs
        build_map(frames, "out/map", executor=executor)

Each task takes one Ray CPU and runs torch on one thread per CPU it holds, so that the workers of a
node share its cores instead of each claiming all of them. A worker builds the extractors (network
weights) once, the first time it is sent the build's ExtractorSet (mapping/pairs.py). Images and
features go to the object store once (``share``) and tasks take references to them. Errors that another
try can cure (``TRANSIENT_ERRORS``) and lost workers are retried by Ray; any other error stops the build
with a message naming the image. On any exception, Ctrl-C included, the tasks still queued or running
are cancelled before it propagates.
"""
from __future__ import annotations

import contextlib
import copy
import os
import socket
import warnings
from typing import Any, Callable, Iterable, Iterator

import ray
from tqdm import tqdm

from ..cpus import local_cpus
from .executors import ExecutorError, Task, TaskFailed

# A file on a shared file system briefly missing or unreadable, a worker short of memory: another
# try can succeed. A bad image never reaches a task (the driver reads it and skips it with a warning).
TRANSIENT_ERRORS = (OSError, MemoryError)
MAX_RETRIES = 3
# Tasks submitted per cluster CPU: enough that a worker has its next task queued when one ends, few
# enough that the driver does not read far ahead of the cluster (images wait in the object store).
TASKS_PER_CPU = 2


class RayUnavailable(ExecutorError):
    """Ray could not be started or reached; the message says where and why."""


def _call(fn: Callable, *args: Any) -> Any:
    import torch

    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        # Arrays from the object store are read-only, and torch warns at tensors over them; the tasks
        # only read their arguments, so a copy of each image and descriptor set would buy nothing.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return fn(*args)


# One Ray CPU per task; Ray resolves the references among the arguments before the call.
_remote_call = ray.remote(num_cpus=1, max_retries=MAX_RETRIES, retry_exceptions=list(TRANSIENT_ERRORS))(_call)


class RayExecutor:
    """Runs an executor's tasks (mapping/executors.py) as Ray tasks on the cluster this process is
    connected to (``ray.init`` first, or use ``ray_executor``)."""

    def __init__(self, tasks_in_flight: int | None = None) -> None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.tasks_in_flight = tasks_in_flight or TASKS_PER_CPU * max(1, cpus)

    def share(self, obj: Any) -> ray.ObjectRef:
        return ray.put(obj)

    def each(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> Iterator:
        done: dict[int, Any] = {}     # results that came back before an earlier task's
        pending: dict[ray.ObjectRef, tuple[int, Task]] = {}
        following = 0                 # the index of the next result to yield
        try:
            for index, task in enumerate(tasks):
                pending[_remote_call.remote(fn, *task.args)] = (index, task)
                while len(pending) >= self.tasks_in_flight:
                    self._collect_one(pending, done, bar)
                while following in done:
                    yield done.pop(following)
                    following += 1
            while pending:
                self._collect_one(pending, done, bar)
                while following in done:
                    yield done.pop(following)
                    following += 1
        except BaseException:         # GeneratorExit included: the caller stopped reading
            for ref in pending:
                ray.cancel(ref)
            raise

    def run(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> list:
        return list(self.each(fn, tasks, bar))

    @staticmethod
    def _collect_one(pending: dict, results: dict, bar: tqdm) -> None:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        index, task = pending.pop(ref)
        try:
            # A copy in this process's memory: the object store's copy is freed, not pinned by the
            # build's features until the map is written.
            results[index] = copy.deepcopy(ray.get(ref))
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if e.cause is not None else e
            tries = f" (after {MAX_RETRIES + 1} tries)" if isinstance(cause, TRANSIENT_ERRORS) else ""
            raise TaskFailed(f"{task.what} failed on the Ray cluster{tries}: {type(cause).__name__}: "
                             f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}") from None
        except ray.exceptions.RayError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise TaskFailed(f"{task.what} failed on the Ray cluster: {type(e).__name__}: {first}") from None
        bar.update(task.weight)


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """RayUnavailable unless ``address`` ("HOST:PORT" or "ray://HOST:PORT"; "auto" is not checked)
    accepts a connection: ``ray.init`` itself retries an unreachable head for minutes."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"Ray address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise RayUnavailable(f"Ray at {address}: cannot connect ({e.strerror or e}); is `ray start --head` "
                             f"running there, with that port open?") from None


@contextlib.contextmanager
def ray_executor(address: str | None = None, num_cpus: int | None = None) -> Iterator[RayExecutor]:
    """A RayExecutor on the cluster at ``address`` ("auto", "ray://HOST:10001", "HOST:6379"), or on
    a Ray started here with ``num_cpus`` CPUs (default: ``local_cpus()``), shut down when the block
    ends, however it ends. A Ray this process already started is used as it is and left running.
    RayUnavailable when Ray cannot be started or reached."""
    started = not ray.is_initialized()
    if started:
        # A build reports nothing to the network unless the user opts in (RAY_USAGE_STATS_ENABLED=1).
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            if address:
                check_reachable(address)
                ray.init(address=address)
            else:
                ray.init(num_cpus=num_cpus or local_cpus(), include_dashboard=False)
        except RayUnavailable:
            raise
        except Exception as e:   # Ray raises ConnectionError, RuntimeError, ValueError… by cause
            raise RayUnavailable(f"Ray at {address or 'this machine'}: {type(e).__name__}: {e}") from None
    try:
        yield RayExecutor()
    finally:
        if started:
            ray.shutdown()
