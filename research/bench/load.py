"""Other processes' load on the machine. On a small shared machine a neighbour's job moves
the numbers by more than most settings do, so every row records the cores others kept busy
while it ran, and can wait for a quiet machine first."""

from __future__ import annotations

import os
import time
from pathlib import Path

BUSY_CORES = 0.25  # other processes' load above which a row is marked busy


def is_busy(load) -> bool:
    """Whether a row's `other_load` (cores; None or NaN when unknown) marks it busy."""
    return load is not None and load == load and load > BUSY_CORES


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children: the measured work, which is not load."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_idle(max_wait: float, threshold: float = BUSY_CORES) -> float:
    """Waits (at most max_wait s) until other processes use under `threshold` cores; returns
    the cores they used in the last 2 s window."""
    deadline = time.monotonic() + max_wait
    while True:
        before, t0 = busy_cpu_seconds(), time.monotonic()
        time.sleep(2.0)
        after = busy_cpu_seconds()
        if before is None or after is None:
            return float("nan")
        load = (after - before) / (time.monotonic() - t0)
        if load < threshold or time.monotonic() >= deadline:
            return load
        print(f"  waiting for an idle machine: other processes use {load:.2f} cores", flush=True)
