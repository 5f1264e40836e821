"""The measuring parent: one configuration per fresh worker process (`research.bench.worker`),
with the benchmark's XLA_FLAGS, CPU affinity and a timeout, and one table row per
configuration: the worker's numbers plus what the parent alone can see (wall time, status,
the cores other processes kept busy meanwhile). The parent never imports JAX, so the flags it
passes are the only ones in force."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from typing import NamedTuple

from research.bench.load import busy_cpu_seconds, children_cpu_seconds, wait_idle
from research.bench.program import ROOT
from research.bench.tables import fmt
from research.errors import InputError

WORKER = "research.bench.worker"  # run as `python -m`, so it works from any installed checkout


def xla_flags(args: argparse.Namespace) -> str:
    """The subprocesses' XLA_FLAGS: the environment's, then those the options ask for."""
    flags = [os.environ.get("XLA_FLAGS", "")]
    if args.host_devices:
        flags.append(f"--xla_force_host_platform_device_count={args.host_devices}")
    if args.no_multi_thread_eigen:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    flags.append(args.xla_flags)
    return " ".join(f for f in flags if f).strip()


def setting_label(args: argparse.Namespace, flags: str) -> str:
    """The row's `setting`: --label, or a name derived from the options (part of the key that
    --append replaces rows by)."""
    if args.label:
        return args.label
    parts = []
    if args.host_devices:
        parts.append(f"{args.host_devices} host devices")
    if args.no_multi_thread_eigen:
        parts.append("multi_thread_eigen=false")
    if args.xla_flags:
        parts.append(args.xla_flags)
    if args.pin_cpus:
        parts.append(f"pinned to cpu {args.pin_cpus}")
    if args.num_devices:
        parts.append(f"{args.num_devices} device(s) used")
    parts += getattr(args, "override", [])
    if not parts and flags:
        parts.append(flags)
    return ", ".join(parts) or "default"


def parse_cpus(text: str | None) -> set[int] | None:
    """'0', '0,1' or '0-3' -> a set of CPU ids."""
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def child(args: argparse.Namespace, flags: str, payload: list[str], timeout: float):
    """Runs the worker module with `payload` in a fresh process with this interpreter; returns
    (parsed JSON of its last stdout line | None, error)."""
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    cpus = parse_cpus(args.pin_cpus)
    try:
        done = subprocess.run(
            [sys.executable, "-m", WORKER, *payload],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
    except subprocess.TimeoutExpired:  # the child has been killed by subprocess.run
        return None, f"timeout after {timeout:.0f} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None, f"exit {done.returncode}: {done.stderr.strip()[-2000:]}"
    return json.loads(lines[-1]), ""


def git_commit() -> str:
    """The checkout's commit (+dirty), so that a table says which code it measured."""
    try:
        run = lambda *a: subprocess.run(
            ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        return run("rev-parse", "--short", "HEAD") + (
            "+dirty" if run("status", "--porcelain") else ""
        )
    except (OSError, subprocess.SubprocessError):
        return ""


def steps_for(args: argparse.Namespace, runs: int) -> int:
    """Env steps per run: --total-timesteps, capped by --max-batch-steps / runs (the worker
    raises it to one update per log where that is more)."""
    per_run = args.total_timesteps
    if args.max_batch_steps:
        per_run = min(per_run, args.max_batch_steps // runs)
    return max(per_run, 1)


def ours_payload(args: argparse.Namespace, runs: int, overrides: list[str]) -> tuple[int, list]:
    """(env steps per run, worker arguments) of one R for this project's agent."""
    steps = steps_for(args, runs)
    payload = [
        "--runs",
        str(runs),
        "--total-timesteps",
        str(steps),
        "--num-logs",
        str(args.num_logs),
        "--overrides",
        json.dumps(overrides),
    ]
    if args.num_devices:
        payload += ["--num-devices", str(args.num_devices)]
    return steps, payload


class Session(NamedTuple):
    """What every row of one benchmark invocation shares."""

    info: dict  # probe(): platform, device, device_count, jax
    flags: str  # XLA_FLAGS of the subprocesses
    common: dict  # columns shared by all rows: setting, xla_flags, cpus, jax, commit, command


def start_session(
    args: argparse.Namespace, argv: list[str] | None, script: str, checks: list = ()
) -> Session:
    """Probes JAX in a subprocess with the benchmark's XLA_FLAGS, which also parses the
    configurations `checks` ([runs, steps, overrides] each) the benchmark will measure; exits
    with a message if JAX cannot start, an InputError if a configuration is invalid or
    --num-devices asks for more devices than it sees. `script` names the entry point in the
    rows' `command` column."""
    flags = xla_flags(args)
    setting = setting_label(args, flags)
    info, error = child(args, flags, ["--probe", "--check", json.dumps(list(checks))], 120)
    if info is None:
        sys.exit(f"could not start JAX with XLA_FLAGS={flags!r}: {error}")
    if "config_error" in info:
        raise InputError(info["config_error"])
    if args.num_devices and args.num_devices > info["device_count"]:
        raise InputError(
            f"--num-devices: got {args.num_devices}; only {info['device_count']} "
            f"{info['platform']} device(s) visible"
        )
    common = {
        "setting": setting,
        "xla_flags": flags,
        "cpus": args.pin_cpus or "",
        "jax": info["jax"],
        "git_commit": git_commit(),
        "command": shlex.join(["python", script, *(argv or sys.argv[1:])]),
    }
    print(
        f"{info['device']}, {info['device_count']} device(s); setting: {setting}; "
        f"XLA_FLAGS={flags!r}",
        flush=True,
    )
    return Session(info, flags, common)


def other_load(busy0, busy1, own: float, wall: float) -> float | None:
    """Cores that other processes kept busy meanwhile (they skew the numbers): the machine's
    busy CPU seconds less our children's, per wall second; None where /proc/stat is missing."""
    if busy0 is None or busy1 is None:
        return None
    return max(0.0, (busy1 - busy0 - own) / wall)


def report(label: str, runs: int, result: dict, other: float | None) -> None:
    """One progress line of a finished configuration."""
    get = lambda k, d: fmt(result.get(k), d)
    buffer = result.get("buffer_mib_per_run")
    print(
        f"{label:>10} R={runs:>6}: {get('env_steps_per_s', 0):>12} env-steps/s"
        f"  compile {get('compile_s', 1):>5} s  run {get('run_s', 1):>6} s  "
        f"program {get('program_mib', 1):>8} MiB  RSS {get('peak_rss_mib', 0):>6} MiB  "
        + (f"buffer {buffer:.2f} MiB/run  " if buffer else "")
        + f"({result['env_steps_per_run']} steps/run, {get('num_devices', 0)} "
        f"dev, {get('num_chunks', 0)} chunk(s), other load {other or 0:.2f})",
        flush=True,
    )


def measure(
    args: argparse.Namespace,
    session: Session,
    label: str,
    runs: int,
    steps: int,
    payload: list[str],
    **columns,
) -> dict:
    """Runs one configuration (the worker with `payload`) in a fresh process and returns its
    table row: the worker's result plus status, wall time, the cores other processes kept
    busy meanwhile, a timestamp, session.common and `columns` (e.g. agent, env)."""
    if args.wait_idle:
        wait_idle(args.wait_idle)
    busy0, own0 = busy_cpu_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    result, error = child(args, session.flags, payload, args.timeout)
    wall = time.perf_counter() - started
    busy1, own1 = busy_cpu_seconds(), children_cpu_seconds()
    other = other_load(busy0, busy1, own1 - own0, wall)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if result is None:
        result = {
            "device": session.info["device"],
            "platform": session.info["platform"],
            "runs": runs,
            "env_steps_per_run": steps,
        }
        status = "timeout" if error.startswith("timeout") else "error"
        print(f"{label} R={runs:>6}: {error}", file=sys.stderr, flush=True)
    else:
        status = "ok"
        report(label, runs, result, other)
    return {
        **session.common,
        **columns,
        **result,
        "status": status,
        "wall_s": wall,
        "other_load": other,
        "timestamp": stamp,
    }
