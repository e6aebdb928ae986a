"""How a map build runs its per-image and per-pair work: here, one task after the other
(``InProcess``, the default), or as Ray tasks over a cluster (``mapping/ray_build.py``). The build
itself (mapping/build.py) is the same for both; it hands an executor plain functions of picklable
arguments (mapping/pairs.py) and reads back their results in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol

from tqdm import tqdm


@dataclass(frozen=True)
class Task:
    """One call of an executor's function: ``what`` names it in errors (e.g. "image 1234"),
    ``weight`` is how far it advances the progress bar (e.g. its number of pairs)."""
    what: str
    args: tuple
    weight: int = 1


class ExecutorError(RuntimeError):
    """The executor could not run the build's tasks; the message says which and why."""


class TaskFailed(ExecutorError):
    """A task that failed where it ran (after its retries); the message names it and the cause."""


class Executor(Protocol):
    def share(self, obj: Any) -> Any:
        """A handle to ``obj`` that tasks take as an argument in its place: stored once, however many
        tasks read it."""

    def each(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> Iterator:
        """``fn(*task.args)`` for each task, yielded in the order of ``tasks`` as they complete; ``bar``
        advances by each task's weight. ``tasks`` is consumed as the executor has room for more, so
        that a generator of images is read while earlier images are processed, and a result is held
        only until it is yielded. Closing the iterator early cancels the tasks not yet done."""

    def run(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> list:
        """``list(each(fn, tasks, bar))``."""


class InProcess:
    """Every task here, in order: the single-process build."""

    def share(self, obj: Any) -> Any:
        return obj

    def each(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> Iterator:
        for task in tasks:
            result = fn(*task.args)
            bar.update(task.weight)
            yield result

    def run(self, fn: Callable, tasks: Iterable[Task], bar: tqdm) -> list:
        return list(self.each(fn, tasks, bar))
