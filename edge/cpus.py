"""How many CPUs this process may use: the one answer thread pools and batch sizes share.

``os.sched_getaffinity`` rather than ``os.cpu_count``: under systemd's ``CPUAffinity=`` or a
container's cpuset the process sees fewer cores than the machine has, and sizing pools by the
machine would oversubscribe them.
"""

from __future__ import annotations

import os


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
