"""Process-level JAX settings: CPU devices (before the first computation) and how CPU
programs lower their random draws; the machine's memory."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

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


@contextlib.contextmanager
def straight_line_threefry() -> Iterator[bool]:
    """Within the block, jit lowers jax's threefry2x32 hash for CPU as straight-line code,
    as it does for GPU and TPU, instead of the CPU default: a 5-iteration rolled loop.

    Why: every random draw then becomes an XLA while loop, which XLA compiles as separate
    kernels and runs step by step. Straight-line, it fuses with its neighbours, and the
    PPO train program (128 runs on 2 CPU devices) compiled in 3.8-5.9 s instead of 6.6-9.0 s
    (results/benchmarks/peers_cpu_analysis.md). The bits are the same.

    Only lowering inside the block is affected (call `.lower()` or a jitted function's
    first call there); executables lowered before or after keep theirs. Programs other
    threads lower meanwhile may get either form, which is harmless (the same bits). Uses
    jax internals: where they moved, this warns and changes nothing. Yields whether the
    straight-line form is in effect.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random.threefry2x32 import threefry2x32_p

        cpu_rules = mlir._platform_specific_lowerings["cpu"]
    except (ImportError, AttributeError) as error:
        warnings.warn(
            f"straight_line_threefry: jax internals moved ({error}); CPU programs "
            "keep jax's rolled threefry and compile more slowly",
            stacklevel=3,
        )
        yield False
        return
    # Without a CPU-specific rule, lowering falls back to the platform-independent one.
    rolled = cpu_rules.pop(threefry2x32_p, None)
    try:
        yield threefry2x32_p not in cpu_rules
    finally:
        if rolled is not None:
            cpu_rules[threefry2x32_p] = rolled


def host_memory() -> tuple[int, int]:
    """(available, total) bytes of this machine's memory: the kernel's MemAvailable (free
    plus reclaimable caches) where /proc/meminfo has it, else free pages, via sysconf."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = page * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, total
    except OSError:
        pass
    return page * os.sysconf("SC_AVPHYS_PAGES"), total
