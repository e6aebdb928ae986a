"""``kill -USR1 PID``: a running command or node writes every thread's Python stack to stderr.

A process stuck inside C code (a DDS call that never returns) cannot say where it is stuck once it
has been killed. faulthandler writes the stacks from the signal handler itself, without the GIL, so
the dump works while the process stays stuck; the process then goes on as before.
"""
from __future__ import annotations

import faulthandler
import os
import signal
import subprocess
import sys
import time

DUMP_SIGNAL = getattr(signal, "SIGUSR1", None)   # None on Windows: no dump there


def dump_stacks_on_signal() -> None:
    """Make ``DUMP_SIGNAL`` write all threads' stacks to stderr (the process entry points call it).
    The process's own stderr, file descriptor 2: ``sys.stderr`` may be redirected to an object
    without one (``main()`` called in-process under ``contextlib.redirect_stderr``)."""
    if DUMP_SIGNAL is not None and sys.__stderr__ is not None:
        faulthandler.register(DUMP_SIGNAL, file=sys.__stderr__, all_threads=True)


def ask_for_stacks(proc: subprocess.Popen, wait_s: float = 1.0) -> None:
    """Send ``proc`` the dump signal and give it ``wait_s`` seconds to write, before it is killed.
    A child that did not register the signal ends on it (its default action), which is what the
    caller is about to do anyway."""
    if DUMP_SIGNAL is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, DUMP_SIGNAL)
    except ProcessLookupError:
        return
    time.sleep(wait_s)
