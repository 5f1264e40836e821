"""Throughput benchmark: R parallel runs of one agent as one batched program.

For each agent in --agent and each R in --runs, a fresh subprocess (with its own
XLA_FLAGS, CPU affinity and a timeout) composes the project's Hydra config
(configs/config.yaml + the agent's overrides + --env + --override), builds the runs
with `research.pipelines.train.prepare` -- exactly as `scripts/train.py` does -- runs
them with `research.pipelines.train.execute` (the config's chunking and memory budget), and
reports

    env-steps/s    R * env steps per run / run time (compile excluded)
    compile s      lowering + XLA compilation of the batched program
    program MiB    XLA's memory estimate per device (arguments + outputs + temporaries)
    peak RSS MiB   the subprocess's peak resident memory (getrusage ru_maxrss)
    device MiB     the device's peak bytes in use, where the backend reports it (GPU)
    state KiB/run  one run's agent state (parameters, optimiser state, replay buffer)
    buffer MiB/run one run's replay buffer (`research.rl.replay.buffer_bytes`; DQN mode)

Agents (--agent; their Hydra overrides, on top of configs/config.yaml):

    ppo         agent=ppo                       (configs/agent/ppo.yaml = PPOConfig defaults)
    pqn         agent=dqn agent.mode=pqn        (configs/agent/dqn.yaml, no replay)
    dqn         experiment=dqn_cartpole         (agent=dqn, agent.mode=dqn: tuned replay
                                                 settings, 50k-transition buffer per run)
    q_learning  agent=q_learning                (env default: cartpole_discrete)
    reinforce   agent=reinforce
    all         every one of the above

--env picks the Hydra env group (default: cartpole; cartpole_discrete for q_learning);
--override adds any Hydra override, e.g. --override agent.buffer_size=10000.

A fresh process per configuration keeps one configuration's peak memory, JIT
caches and thread pools out of the next. Results are written atomically to
<out>/<name>.csv and <out>/<name>.md after every configuration, so an
interrupted benchmark still leaves a consistent table. The cores that other
processes kept busy meanwhile are recorded; rows above 0.25 cores are marked busy.

Large batches may use fewer env steps per run (--max-batch-steps): the quantity
compared is env-steps/s. Every run does at least one update per log.

Examples (2-core CPU):

    python scripts/benchmark.py                                  # PPO, R = 1, 64, 1024
    python scripts/benchmark.py --runs 1 64 1024 4096 --append   # more runs, same table
    python scripts/benchmark.py --host-devices 2 --append        # runs sharded over 2 CPU devices
    python scripts/benchmark.py --no-multi-thread-eigen --append # Eigen intra-op threads off
    python scripts/benchmark.py --pin-cpus 0 --append            # process pinned to core 0
    python scripts/benchmark.py --agent all --host-devices 2 --name agents_cpu
    python scripts/benchmark.py --agent dqn --override agent.buffer_size=10000 --label buf10k
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

# --agent name -> (Hydra overrides, default env config group)
AGENTS = {
    "ppo": (("agent=ppo",), "cartpole"),
    "pqn": (("agent=dqn", "agent.mode=pqn"), "cartpole"),
    "dqn": (("experiment=dqn_cartpole",), "cartpole"),
    "q_learning": (("agent=q_learning",), "cartpole_discrete"),
    "reinforce": (("agent=reinforce",), "cartpole"),
}

COLUMNS = [
    "agent",
    "env",
    "setting",
    "device",
    "platform",
    "num_devices",
    "runs",
    "env_steps_per_run",
    "num_updates",
    "num_logs",
    "chunk_size",
    "num_chunks",
    "env_steps_per_s",
    "env_steps_per_s_per_run",
    "compile_s",
    "run_s",
    "wall_s",
    "cpu_s",
    "other_load",
    "program_mib",
    "peak_rss_mib",
    "device_peak_mib",
    "state_kib_per_run",
    "buffer_mib_per_run",
    "final_return",
    "status",
    "env_id",
    "overrides",
    "agent_settings",
    "xla_flags",
    "cpus",
    "jax",
    "git_commit",
    "timestamp",
    "command",
]

BUSY_CORES = 0.25  # other processes' load above which a row is marked busy
TEXT_COLUMNS = {
    "agent",
    "env",
    "setting",
    "device",
    "platform",
    "status",
    "env_id",
    "overrides",
    "agent_settings",
    "xla_flags",
    "cpus",
    "jax",
    "git_commit",
    "timestamp",
    "command",
}
# Rows of tables written before --agent existed: PPOConfig defaults on CartPole-v1.
LEGACY = {
    "agent": "ppo",
    "env": "cartpole",
    "env_id": "CartPole-v1",
    "overrides": "agent=ppo env=cartpole",
}


# --------------------------------------------------------------------------- worker


def _device_name(jax) -> str:
    """A human name for the device JAX uses: the CPU model for CPUs, the device kind otherwise."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.platform}: {device.device_kind}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable)"


def probe() -> dict:
    """What this process's JAX sees (run in a subprocess with the benchmark's environment)."""
    import jax

    return {
        "platform": jax.devices()[0].platform,
        "device": _device_name(jax),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
    }


def compose_raw(*overrides: str) -> dict:
    """The config mapping `scripts/train.py` would receive with these overrides
    (as tests/conftest.py composes it)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def agent_overrides(agent: str, env: str | None, extra: list[str]) -> list[str]:
    """Hydra overrides of one --agent / --env / --override combination."""
    overrides, default_env = AGENTS[agent]
    return [*overrides, f"env={env or default_env}", *extra]


def tree_bytes(tree) -> int:
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def prepared(
    runs: int, total_timesteps: int, num_logs: int, num_devices: int | None, overrides: list[str]
):
    """`research.pipelines.train.prepare` of `runs` runs of `total_timesteps` env steps each
    (at least one update per log), configured by the Hydra `overrides`: the program this
    project would run, not yet compiled."""
    from research.config import parse_experiment
    from research.pipelines.train import prepare

    raw = compose_raw(
        "progress=false",
        "plot=false",
        *overrides,
        f"runs.seeds={runs}",
        f"train.num_logs={num_logs}",
        *([f"runs.num_devices={num_devices}"] if num_devices else []),
    )
    batch = raw["agent"]["num_envs"] * raw["agent"]["num_steps"]
    raw["train"]["total_timesteps"] = max(total_timesteps, batch * num_logs)
    return prepare(parse_experiment(raw))


def worker(
    runs: int, total_timesteps: int, num_logs: int, num_devices: int | None, overrides: list[str]
) -> dict:
    """Trains `runs` runs of `total_timesteps` env steps each (at least one update per log),
    configured by the Hydra `overrides`; returns one result row."""
    import dataclasses

    import jax
    import numpy as np

    from research.pipelines.train import execute
    from research.results import peak_memory
    from research.rl.replay import ReplayBuffer, buffer_bytes

    p = prepared(runs, total_timesteps, num_logs, num_devices, overrides)
    trainer, devices = p.trainer, p.devices
    res = execute(p)  # as scripts/train.py runs it: the config's chunking and memory budget
    info = res.info
    steps_per_run = trainer.steps_per_segment * trainer.num_logs
    rate = runs * steps_per_run / info.run_s
    # One run's agent state (leaves [R, ...] after run_batch), and its replay buffer if any.
    one_run = jax.tree.map(lambda x: x[0], res.agent_states)
    buffers = [
        b
        for b in jax.tree.leaves(one_run, is_leaf=lambda x: isinstance(x, ReplayBuffer))
        if isinstance(b, ReplayBuffer)
    ]
    final = res.metrics["episode_return"][:, -1]
    settings = dataclasses.asdict(p.config.agent.config)
    return {
        "device": _device_name(jax),
        "platform": devices[0].platform,
        "num_devices": info.num_devices,
        "runs": runs,
        "env_id": p.config.env.id,
        "agent_settings": ", ".join(f"{k}={v}" for k, v in settings.items()),
        "env_steps_per_run": steps_per_run,
        "num_updates": p.num_updates,
        "num_logs": trainer.num_logs,
        "chunk_size": info.chunk_size,
        "num_chunks": info.num_chunks,
        "env_steps_per_s": rate,
        "env_steps_per_s_per_run": rate / runs,
        "compile_s": info.compile_s,
        "run_s": info.run_s,
        "program_mib": info.program_bytes / 2**20,
        **peak_memory(devices),
        "state_kib_per_run": tree_bytes(one_run) / 2**10,
        "buffer_mib_per_run": sum(buffer_bytes(b) for b in buffers) / 2**20 if buffers else None,
        "final_return": float(np.nanmean(final)) if np.isfinite(final).any() else None,
        "cpu_s": time.process_time(),  # user + system CPU time of this whole process
        "jax": jax.__version__,
    }


# --------------------------------------------------------------------------- parent


def xla_flags(args: argparse.Namespace) -> str:
    flags = [os.environ.get("XLA_FLAGS", "")]
    if args.host_devices:
        flags.append(f"--xla_force_host_platform_device_count={args.host_devices}")
    if args.no_multi_thread_eigen:
        flags.append("--xla_cpu_multi_thread_eigen=false")
    flags.append(args.xla_flags)
    return " ".join(f for f in flags if f).strip()


def setting_label(args: argparse.Namespace, flags: str) -> str:
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


def child(
    args: argparse.Namespace,
    flags: str,
    payload: list[str],
    timeout: float,
    script: str | Path = __file__,
):
    """Runs `script` (default: this one) in a fresh process with this interpreter; returns
    (parsed JSON of its last stdout line | None, error)."""
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONUNBUFFERED": "1"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    cpus = parse_cpus(args.pin_cpus)
    try:
        done = subprocess.run(
            [sys.executable, str(Path(script).resolve()), *payload],
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


def busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux /proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
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


def git_commit() -> str:
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


def fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def is_busy(load) -> bool:
    return load is not None and load == load and load > BUSY_CORES


INTRO = (
    "One batched program per row (`research.runner.run_batch`), built from the project's "
    "Hydra config (`research.pipelines.train.prepare`, the agent's overrides below), each "
    "row in a fresh process.  "
)


def chunks(num) -> str:
    """'<chunks> x <runs per chunk>' of a row (num: column -> value or None), '-' if unknown."""
    if num("num_chunks") is None or num("chunk_size") is None:
        return "-"
    return f"{int(num('num_chunks'))} x {int(num('chunk_size'))}"


def markdown(frame, device: str, intro: str = INTRO, extra=None) -> str:
    """The whole table, then `extra(frame)`'s lines (if given), the fastest setting for each
    agent and R, the agents' settings and the XLA settings."""
    agents = list(dict.fromkeys(frame["agent"]))
    envs = list(dict.fromkeys(frame["env_id"]))
    what = ", ".join(agents) + " on " + ", ".join(envs)
    busy = [r for r in frame.to_dict("records") if is_busy(r.get("other_load"))]
    lines = [
        f"# {what}: throughput of R parallel runs",
        "",
        f"Device: **{device}**.  ",
        intro,
        "chunks = chunks x runs per chunk, run one after the other. "
        "env-steps/s = R x env steps per run / run time (compile excluded). "
        "program = XLA's memory estimate per device (arguments + outputs + temporaries, "
        "donated buffers once); "
        "RSS = the process's peak resident memory (compile included); "
        "state/run = one run's agent state (parameters, optimiser state, replay buffer), "
        "buffer/run = its replay buffer alone. "
        "other load = cores that other processes kept busy meanwhile (they skew the row).",
        "",
    ]
    if busy:
        lines += [
            f"**Measured under load:** {len(busy)} of {len(frame)} rows (marked *busy*: other "
            f"processes kept more than {BUSY_CORES} cores busy meanwhile, so their speed is a "
            "lower bound and their compile time an upper bound): "
            + ", ".join(
                f"{r['agent']} R={int(r['runs'])} ({r['other_load']:.2f} cores)" for r in busy
            )
            + ".",
            "",
        ]
    lines += [
        "| agent | env | setting | R | devices | chunks | steps/run | env-steps/s | per run "
        "| compile s "
        "| run s | program MiB | peak RSS MiB | state KiB/run | buffer MiB/run | final return "
        "| other load | status |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in frame.to_dict("records"):
        num = lambda k, row=row: None if row.get(k) is None or row[k] != row[k] else row[k]
        load = fmt(num("other_load"), 2) + (" *busy*" if is_busy(num("other_load")) else "")
        lines.append(
            f"| {row['agent']} | {row['env']} | {row['setting']} | {int(row['runs'])} "
            f"| {fmt(num('num_devices'), 0)} | {chunks(num)} "
            f"| {fmt(num('env_steps_per_run'), 0)} | {fmt(num('env_steps_per_s'), 0)} "
            f"| {fmt(num('env_steps_per_s_per_run'), 0)} | {fmt(num('compile_s'), 1)} "
            f"| {fmt(num('run_s'), 1)} | {fmt(num('program_mib'), 1)} "
            f"| {fmt(num('peak_rss_mib'), 0)} | {fmt(num('state_kib_per_run'), 1)} "
            f"| {fmt(num('buffer_mib_per_run'), 2)} | {fmt(num('final_return'), 1)} "
            f"| {load} | {row['status']} |"
        )
    if extra is not None:
        lines += extra(frame)
    ok = frame[frame["status"] == "ok"]
    if len(ok) and ok.groupby(["agent", "env"])["setting"].nunique().max() > 1:
        lines += [
            "",
            "## Fastest setting per agent and R",
            "",
            "| agent | env | R | fastest setting | env-steps/s | vs default | other load |",
            "|---|---|---:|---|---:|---:|---:|",
        ]
        for (agent, env, runs), group in ok.groupby(["agent", "env", "runs"], sort=False):
            best = group.loc[group["env_steps_per_s"].idxmax()]
            base = group[group["setting"] == "default"]["env_steps_per_s"]
            ratio = f"{best['env_steps_per_s'] / base.iloc[0]:.2f}x" if len(base) else "-"
            load = best.get("other_load")
            mark = " *busy*" if is_busy(load) else ""
            lines.append(
                f"| {agent} | {env} | {runs} | {best['setting']} "
                f"| {best['env_steps_per_s']:,.0f} | {ratio} | {fmt(load, 2)}{mark} |"
            )
    lines += ["", "## Agents", ""]
    for row in frame.drop_duplicates(["agent", "env", "overrides"]).to_dict("records"):
        settings = row["agent_settings"] or (
            "PPOConfig defaults: num_envs=4, num_steps=128, "
            "num_epochs=4, num_minibatches=4, "
            "hidden_sizes=(64, 64), activation=tanh"
        )
        lines.append(f"- **{row['agent']}** on {row['env_id']} (`{row['overrides']}`): {settings}")
    lines += ["", "## Settings", ""]
    for row in frame.drop_duplicates("setting").to_dict("records"):
        lines.append(
            f"- **{row['setting']}**: XLA_FLAGS=`{row['xla_flags'] or ''}`, "
            f"cpus `{row['cpus'] or 'all'}`, jax {row['jax']}, commit "
            f"{row['git_commit']}, {row['timestamp']}"
        )
    commands = list(dict.fromkeys(frame["command"]))
    lines += ["", "## Commands", "", *[f"- `{c}`" for c in commands]]
    return "\n".join(lines) + "\n"


KEY = ["agent", "env", "setting", "runs"]


def write_tables(
    rows: list[dict],
    out: Path,
    name: str,
    append: bool,
    device: str,
    order=AGENTS,
    intro: str = INTRO,
    extra=None,
) -> Path:
    """<out>/<name>.csv and .md (atomically), merged with the existing table if `append`.
    Rows are sorted by agent (in the order of `order`), env, R and setting; `intro` and
    `extra` go to `markdown`."""
    import pandas as pd

    from research.results import write_csv, write_text

    csv = out / f"{name}.csv"
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if append and csv.exists():
        old = pd.read_csv(csv, dtype={c: str for c in TEXT_COLUMNS}).reindex(columns=COLUMNS)
        for column, value in LEGACY.items():  # tables from before --agent: PPO on CartPole
            old[column] = old[column].fillna(value)
        key = set(zip(*(frame[k] for k in KEY)))
        old = old[[k not in key for k in zip(*(old[k] for k in KEY))]]
        parts = [part.dropna(axis=1, how="all") for part in (old, frame)]  # no all-NA dtypes
        frame = pd.concat(parts, ignore_index=True).reindex(columns=COLUMNS)
    text = [c for c in COLUMNS if c in TEXT_COLUMNS]
    frame[text] = frame[text].astype(object).where(frame[text].notna(), "").astype(str)
    rank = {a: i for i, a in enumerate(order)}
    frame = frame.sort_values(
        ["agent", "env", "runs", "setting"],
        kind="stable",
        key=lambda c: c.map(rank) if c.name == "agent" else c,
    )
    frame = frame.reset_index(drop=True)
    write_csv(csv, frame)
    write_text(out / f"{name}.md", markdown(frame, device, intro, extra))
    plot_scaling_of(frame, out / f"{name}.png", device)
    return csv


def plot_scaling_of(frame, path: Path, device: str) -> None:
    """<name>.png: env-steps/s and peak memory against R, a line per agent and setting (rows
    that finished; only where some agent was measured at two or more R)."""
    import pandas as pd

    from research.analysis.curves import plot_scaling

    ok = frame[frame["status"] == "ok"].copy()
    ok["label"] = ok["agent"] + " (" + ok["env"] + ", " + ok["setting"] + ")"
    for column in ("env_steps_per_s", "peak_rss_mib", "device_peak_mib", "runs"):
        ok[column] = pd.to_numeric(ok[column], errors="coerce")
    if len(ok) and ok.groupby("label")["runs"].nunique().max() >= 2:
        plot_scaling(ok, path, f"throughput and memory against parallel runs: {device}")


def add_common_arguments(
    parser: argparse.ArgumentParser, runs: list[int], total_timesteps: int, name_help: str
) -> None:
    """The options every benchmark script shares (R, step budget, XLA settings, load, output)."""
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
    parser.add_argument("--_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--_overrides", default="[]", help=argparse.SUPPRESS)


class Session(NamedTuple):
    """What every row of one benchmark invocation shares."""

    info: dict  # probe(): platform, device, device_count, jax
    flags: str  # XLA_FLAGS of the subprocesses
    common: dict  # columns shared by all rows: setting, xla_flags, cpus, jax, commit, command


def start_session(args: argparse.Namespace, argv: list[str] | None, script: str) -> Session:
    """Probes JAX in a subprocess with the benchmark's XLA_FLAGS; exits with a message if
    it cannot start or --num-devices asks for more devices than it sees."""
    flags = xla_flags(args)
    setting = setting_label(args, flags)
    info, error = child(args, flags, ["--_probe"], timeout=120)
    if info is None:
        sys.exit(f"could not start JAX with XLA_FLAGS={flags!r}: {error}")
    if args.num_devices and args.num_devices > info["device_count"]:
        sys.exit(
            f"--num-devices {args.num_devices}: only {info['device_count']} "
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


def measure(
    args: argparse.Namespace,
    session: Session,
    label: str,
    runs: int,
    steps: int,
    payload: list[str],
    script: str | Path = __file__,
    **columns,
) -> dict:
    """Runs one configuration (`script` with `payload`) in a fresh process and returns its
    table row: the worker's result plus status, wall time, the cores other processes kept
    busy meanwhile, a timestamp, session.common and `columns` (e.g. agent, env)."""
    if args.wait_idle:
        wait_idle(args.wait_idle)
    busy0, own0 = busy_cpu_seconds(), children_cpu_seconds()
    started = time.perf_counter()
    result, error = child(args, session.flags, payload, args.timeout, script)
    wall = time.perf_counter() - started
    busy1, own1 = busy_cpu_seconds(), children_cpu_seconds()
    # Cores that other processes kept busy meanwhile: they skew the numbers.
    other = (
        None if busy0 is None or busy1 is None else max(0.0, (busy1 - busy0 - (own1 - own0)) / wall)
    )
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
    return {
        **session.common,
        **columns,
        **result,
        "status": status,
        "wall_s": wall,
        "other_load": other,
        "timestamp": stamp,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--agent",
        nargs="+",
        default=["ppo"],
        choices=[*AGENTS, "all"],
        help="agent(s) to benchmark, each at every R (default: ppo): "
        "ppo, pqn (agent=dqn agent.mode=pqn), dqn (experiment="
        "dqn_cartpole: replay buffer + target network), q_learning, "
        "reinforce, or all",
    )
    parser.add_argument(
        "--env",
        default=None,
        help="Hydra env config group, e.g. cartpole, cartpole_discrete, "
        "gridworld, acrobot (default: cartpole; cartpole_discrete for "
        "q_learning)",
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra Hydra override for every run, repeatable, e.g. "
        "--override agent.buffer_size=10000",
    )
    add_common_arguments(
        parser,
        [1, 64, 1024],
        100_000,
        "file stem of the CSV / markdown (default: <agent>_<env>_<platform> "
        "for one agent, agents_<platform> for several)",
    )
    args = parser.parse_args(argv)
    agents = list(AGENTS) if "all" in args.agent else list(dict.fromkeys(args.agent))

    if args._probe:
        print(json.dumps(probe()))
        return 0
    if args._worker:
        row = worker(
            args.runs[0],
            args.total_timesteps,
            args.num_logs,
            args.num_devices,
            json.loads(args._overrides),
        )
        print(json.dumps(row))
        return 0

    session = start_session(args, argv, "scripts/benchmark.py")
    if args.name:
        name = args.name
    elif len(agents) == 1:
        name = f"{agents[0]}_{args.env or AGENTS[agents[0]][1]}_{session.info['platform']}"
    else:
        name = f"agents_{session.info['platform']}"

    rows = []
    for agent in agents:
        overrides = agent_overrides(agent, args.env, args.override)
        for runs in args.runs:
            rows.append(
                measure(
                    args,
                    session,
                    agent,
                    runs,
                    *ours_payload(args, runs, overrides),
                    agent=agent,
                    env=args.env or AGENTS[agent][1],
                    overrides=" ".join(overrides),
                )
            )
            path = write_tables(rows, args.out, name, args.append, session.info["device"])
    print(f"-> {path} and {path.with_suffix('.md')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def ours_payload(args: argparse.Namespace, runs: int, overrides: list[str]) -> tuple[int, list]:
    """(env steps per run, worker arguments) of one R for this project's agent."""
    steps = steps_for(args, runs)
    payload = [
        "--_worker",
        "--runs",
        str(runs),
        "--total-timesteps",
        str(steps),
        "--num-logs",
        str(args.num_logs),
        "--_overrides",
        json.dumps(overrides),
    ]
    if args.num_devices:
        payload += ["--num-devices", str(args.num_devices)]
    return steps, payload


if __name__ == "__main__":
    sys.exit(main())
