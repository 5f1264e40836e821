"""Process-level JAX settings, and the compiler options every program of this project uses."""

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


# XLA:CPU hands every kernel to LLVM at -O3 by default. For these programs (small dense
# layers, elementwise env steps, nested scans) -O2 compiled 20-45% faster and trained as fast
# (results/benchmarks/xla_opt_level_cpu.md). Compile time dominates short runs, sweeps of many
# small programs and the test suite. GPU and TPU keep XLA's defaults: not measured there.
CPU_BACKEND_OPTIMIZATION_LEVEL = 2


def compiler_options(platform: str) -> dict[str, int]:
    """The compiler options this project compiles with on `platform` ("cpu", "gpu", "tpu").

    An --xla_backend_optimization_level in XLA_FLAGS wins: then nothing is overridden.
    """
    if platform != "cpu" or "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        return {}
    return {"xla_backend_optimization_level": CPU_BACKEND_OPTIMIZATION_LEVEL}


def jit(fn, platform: str | None = None, **kwargs):
    """jax.jit(fn) with `compiler_options` for `platform` (default: JAX's default backend)."""
    options = compiler_options(platform or jax.default_backend())
    return jax.jit(fn, compiler_options=options or None, **kwargs)
