"""How many CPUs this process may run on: its affinity, which a container or ``taskset`` narrows
(``os.cpu_count()`` counts the machine's, and thread pools sized by it would oversubscribe)."""
from __future__ import annotations

import os


def local_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
