"""Process-level JAX settings that must be made before the first computation."""

from __future__ import annotations

import os

import jax


def use_cpu_cores_as_devices() -> int:
    """One XLA CPU device per usable core, so the runs axis is sharded over the cores.

    XLA's intra-op threading gains little from a second core for these small programs;
    one program per core does (measured 1.8x at 1024 PPO runs on 2 cores,
    results/benchmarks/ppo_cartpole_cpu_analysis.md). Has no effect on GPU/TPU runs, and
    leaves an explicit --xla_force_host_platform_device_count in XLA_FLAGS alone.
    Returns the number of CPU devices requested (0 if left alone).
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        jax.config.update("jax_num_cpu_devices", int(cores or 1))
    except RuntimeError:  # a backend already started: too late, keep what it has
        return 0
    return int(cores or 1)
