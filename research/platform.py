"""Process-level JAX settings: CPU devices (before the first computation) and how CPU
programs lower their random draws; the machine's memory."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import jax


def use_cpu_cores_as_devices(count: int | None = None) -> int:
    """One XLA CPU device per usable core (or `count` of them), so the runs axis is
    sharded over the cores.

    XLA's intra-op threading gains little from a second core for these small programs;
    one program per core does (measured 1.8x at 1024 PPO runs on 2 cores,
    results/benchmarks/ppo_cartpole_cpu_analysis.md). Has no effect on GPU/TPU runs, and
    leaves an explicit --xla_force_host_platform_device_count in XLA_FLAGS alone.
    Returns the number of CPU devices requested (0 if left alone).
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = int(count or cores or 1)
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # a backend already started: too late, keep what it has
        return 0
    return count


def recorded_cpu_devices(run_dir: str | Path) -> int | None:
    """The number of CPU devices a run directory's programs ran on: the largest of its
    run.json files' (its own and its sub-runs', e.g. finetune/) that ran on CPU and, for an
    interrupted run, of its chunk manifests' (which do not name the platform); None when
    none reads. Resume and reproduce start as many (`use_cpu_cores_as_devices`), so that
    every device runs the program it ran (research.runner.execute.per_device), whatever
    the cores here."""
    run_dir = Path(run_dir)
    cpu = lambda info: info["devices"]["count"] if info["devices"]["platform"] == "cpu" else 0
    sources = (("run.json", cpu), ("chunks/manifest.json", lambda info: info["num_devices"]))
    counts = []
    for name, count in sources:
        for path in [*run_dir.glob(name), *run_dir.glob(f"*/{name}")]:
            try:
                counts.append(int(count(json.loads(path.read_text()))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    counts = [c for c in counts if c >= 1]
    return max(counts) if counts else None


# A plain (torchrun-style) start of N processes: the coordinator's host:port, how many
# processes, and this one's index, in each process's environment.
PROCESS_ENV = ("RESEARCH_COORDINATOR", "RESEARCH_NUM_PROCESSES", "RESEARCH_PROCESS_ID")


def start_processes() -> int:
    """Joins this process to a multi-process program (`jax.distributed`) when started by a
    launcher: the PROCESS_ENV variables (all three), or a SLURM job step of several tasks
    (jax reads SLURM's variables). Must run before anything starts a JAX backend (like
    `use_cpu_cores_as_devices`). Returns the number of processes (1: none started).

    CPU devices of several processes talk through gloo (the results are gathered); the
    programs themselves hold no collective (research.runner.execute.per_device).
    """
    if jax.distributed.is_initialized():  # started already (the script, then its task)
        return jax.process_count()
    if not launched():
        return 1
    given = [os.environ.get(k) for k in PROCESS_ENV]
    if any(given):
        address, count, index = given
        problem = _process_env_problem(address, count, index)
        if problem:  # one line and exit code 2, as for any bad input (research.errors)
            print(f"error: {problem}", file=sys.stderr)
            raise SystemExit(2)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if any(given):
        jax.distributed.initialize(address, num_processes=int(count), process_id=int(index))
    else:
        jax.distributed.initialize()
    return jax.process_count()


def launched() -> bool:
    """Whether a launcher started this process as one of several (see start_processes)."""
    slurm = os.environ.get("SLURM_NTASKS", "1") not in ("", "1") and "SLURM_STEP_ID" in os.environ
    return slurm or any(os.environ.get(k) for k in PROCESS_ENV)


def use_devices_of(argv: list[str]) -> int:
    """Before JAX starts, in a script that takes a run directory (resume, reproduce): as
    many CPU devices as the first run directory among `argv` recorded
    (`recorded_cpu_devices`), else one per core; one per core in a multi-process start.
    Returns the number requested (0 if left alone)."""
    recorded = None
    if not launched():
        dirs = (Path(a) for a in argv if not a.startswith("-"))
        recorded = next((n for d in dirs if d.is_dir() and (n := recorded_cpu_devices(d))), None)
    return use_cpu_cores_as_devices(recorded)


def _process_env_problem(address: str | None, count: str | None, index: str | None) -> str:
    """What is wrong with PROCESS_ENV's values ("" if nothing)."""
    names = dict(zip(PROCESS_ENV, (address, count, index)))
    missing = [k for k, v in names.items() if not v]
    if missing:
        return f"{', '.join(missing)}: not set; a multi-process start sets {', '.join(names)}"
    if ":" not in address:
        return f"RESEARCH_COORDINATOR={address!r}: must be host:port, e.g. localhost:12355"
    if not count.isdigit() or int(count) < 1:
        return f"RESEARCH_NUM_PROCESSES={count!r}: must be a positive integer"
    if not index.isdigit() or int(index) >= int(count):
        return f"RESEARCH_PROCESS_ID={index!r}: must be an integer in [0, {int(count) - 1}]"
    return ""


def compile_cache_dir(setting: str | None) -> Path | None:
    """Where compiled programs are cached for `setting` (the config's `compile_cache`):
    "default" -> jax's own JAX_COMPILATION_CACHE_DIR where set, else <user cache
    home>/research/jax ($XDG_CACHE_HOME, else ~/.cache); None -> nowhere; else that
    directory."""
    if setting is None:
        return None
    if setting == "default":
        if jax.config.jax_compilation_cache_dir:
            return Path(jax.config.jax_compilation_cache_dir)
        home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(home) / "research" / "jax"
    return Path(setting).expanduser()


def use_compile_cache(setting: str | None) -> Path | None:
    """Turns on jax's persistent compilation cache in `compile_cache_dir(setting)`, so a
    rerun, resume or reproduction of a config loads its programs instead of compiling
    them (docs/design.md, "Execution"), or off for None. Returns the directory, or None
    when off or when it cannot be made (a warning says so; training goes on, compiling).
    """
    from jax.experimental.compilation_cache import compilation_cache

    path = compile_cache_dir(setting)
    if path is not None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            warnings.warn(
                f"compile_cache: cannot use {str(path)!r} ({error.strerror}); compiling "
                "without a cache (compile_cache=off silences this)",
                stacklevel=2,
            )
            path = None
    jax.config.update("jax_enable_compilation_cache", path is not None)
    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    # The init programs compile in about a second; anything quicker is not worth a file.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    # jax decides whether to use a cache at its first compile; decide again (quietly: its
    # INFO line would reach every run's log, where Hydra shows INFO).
    cache_log = logging.getLogger("jax._src.compilation_cache")
    level = cache_log.level
    cache_log.setLevel(logging.WARNING)
    try:
        compilation_cache.reset_cache()
    finally:
        cache_log.setLevel(level)
    return path


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
