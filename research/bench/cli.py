"""Command-line options shared by the benchmark entry points (scripts/benchmark.py and
scripts/benchmark_peers.py); `research.bench.measure` reads them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from research.bench.program import CONFIGS, ROOT, compose_raw
from research.errors import InputError, writable_dir


def add_common_arguments(
    parser: argparse.ArgumentParser, runs: list[int], total_timesteps: int, name_help: str
) -> None:
    """The options every benchmark script shares (R, step budget, XLA settings, load, output),
    defined once so that the scripts' tables stay comparable and their flags the same."""
    parser.add_argument(
        "--runs",
        type=int,
        nargs="+",
        default=runs,
        help="numbers of parallel runs R to benchmark, one subprocess each "
        f"(default: {' '.join(map(str, runs))})",
    )
    parser.add_argument(
        "--total-timesteps",
        type=int,
        default=total_timesteps,
        help=f"env steps per run (default: {total_timesteps}), rounded down to "
        "whole updates per log; capped by --max-batch-steps / R",
    )
    parser.add_argument(
        "--max-batch-steps",
        type=int,
        default=25_000_000,
        help="cap on R x env steps per run, so large batches finish in minutes "
        "(default: 25000000; 0 = no cap). At least one update per log "
        "is always run",
    )
    parser.add_argument(
        "--num-logs",
        type=int,
        default=10,
        help="metric rows per run (scan segments), as in train.num_logs (default: 10)",
    )
    parser.add_argument(
        "--num-devices",
        type=int,
        default=None,
        help="shard the runs over the first N visible devices (default: all)",
    )
    parser.add_argument(
        "--host-devices",
        type=int,
        default=None,
        help="CPU only: expose N XLA host devices "
        "(--xla_force_host_platform_device_count=N in the subprocess's "
        "XLA_FLAGS); the runs axis is then sharded over them. Default: "
        "XLA's own, 1 CPU device (scripts/train.py uses one per core, "
        "i.e. --host-devices <cores>)",
    )
    parser.add_argument(
        "--no-multi-thread-eigen",
        action="store_true",
        help="CPU only: add --xla_cpu_multi_thread_eigen=false (no Eigen "
        "intra-op threading of dots/convolutions)",
    )
    parser.add_argument(
        "--xla-flags",
        default="",
        help="extra XLA_FLAGS for the subprocesses (appended to the environment's XLA_FLAGS)",
    )
    parser.add_argument(
        "--pin-cpus",
        default=None,
        help="restrict the subprocesses to these CPUs, e.g. '0' or '0-1' "
        "(sched_setaffinity; XLA sizes its CPU thread pool from it)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each configuration, wait up to SECONDS for other "
        "processes to use under 0.25 cores (default: 0, don't wait). "
        "The table reports the cores other processes used meanwhile",
    )
    parser.add_argument(
        "--label",
        default=None,
        help="name of this setting in the table (default: derived from flags and --override)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help="seconds before a configuration's subprocess is killed and "
        "recorded as a timeout (default: 900)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "results" / "benchmarks",
        help="output directory (default: results/benchmarks)",
    )
    parser.add_argument("--name", default=None, help=name_help)
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge into an existing table: rows of other settings / R are "
        "kept, rows of the same agent, env, setting and R are replaced",
    )


# attribute -> (option, smallest value allowed), for the numeric options any benchmark has
AT_LEAST = {
    "runs": ("--runs", 1),
    "total_timesteps": ("--total-timesteps", 1),
    "max_batch_steps": ("--max-batch-steps", 0),
    "num_logs": ("--num-logs", 1),
    "num_devices": ("--num-devices", 1),
    "host_devices": ("--host-devices", 1),
    "wait_idle": ("--wait-idle", 0),
    "timeout": ("--timeout", 1),
    "reps": ("--reps", 1),
    "sb3_timesteps": ("--sb3-timesteps", 1),
}


def check_args(args: argparse.Namespace) -> None:
    """Every benchmark's options checked before any process starts or anything is written:
    numbers in range, --pin-cpus a CPU list of this machine, --env a config group, --out a
    writable directory, --override composing. One InputError naming the option otherwise."""
    for attr, (option, low) in AT_LEAST.items():
        values = getattr(args, attr, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and value < low:
                raise InputError(f"{option}: got {value}; must be at least {low}")
    pin = getattr(args, "pin_cpus", None)
    if pin:
        from research.bench.measure import parse_cpus

        try:
            cpus = parse_cpus(pin)
        except ValueError:
            raise InputError(f"--pin-cpus: got {pin!r}; must be CPUs like 0, 0,1 or 0-3") from None
        if not cpus <= os.sched_getaffinity(0):
            usable = sorted(os.sched_getaffinity(0))
            raise InputError(f"--pin-cpus: got {pin!r}; this process may use CPUs {usable}")
    env = getattr(args, "env", None)
    if env is not None and not (CONFIGS / "env" / f"{env}.yaml").is_file():
        known = sorted(p.stem for p in (CONFIGS / "env").glob("*.yaml"))
        raise InputError(f"--env: got {env!r}; must be one of {', '.join(known)}")
    overrides = getattr(args, "override", None) or []
    if overrides:  # Hydra alone (no JAX in the measuring parent): keys, groups, syntax
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            compose_raw(*overrides)
        except (HydraException, OmegaConfBaseException) as error:
            line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise InputError(f"--override {' '.join(overrides)}: {line}") from None
    writable_dir(args.out, "--out", keep=False)  # made when the first table is written
