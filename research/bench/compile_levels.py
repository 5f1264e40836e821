"""One batched program compiled at several LLVM optimisation levels and timed in one process
(scripts/benchmark_compile_levels.py). A fresh process per row, as research.bench.agents does,
moves the run time of the same program by about 10% on a small shared machine: too much to
see what a compiler setting costs, so here the levels share one process, one lowering and the
same inputs, and their calls alternate."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from research.bench.cli import check_args
from research.bench.measure import git_commit
from research.bench.program import ROOT, agent_overrides, device_name, prepared, segment_args
from research.errors import ArgumentParser


def measure_levels(
    agent: str, runs: int, total_timesteps: int, levels: list[int], reps: int
) -> list[dict]:
    """One row per level: compile s, median / best env-steps/s over `reps` timed calls."""
    import jax

    from research.runner import execute

    p = prepared(runs, total_timesteps, 1, None, agent_overrides(agent, None, []))
    args = segment_args(p)
    lowered = execute.lower(p.trainer, args, jax.default_backend())
    compiled, compile_s = {}, {}
    for level in levels:  # the init program keeps its own options; training gets `level`
        started = time.perf_counter()
        compiled[level] = execute.compile_programs(
            lowered, p.trainer.num_logs, {"xla_backend_optimization_level": level}
        )
        compile_s[level] = time.perf_counter() - started
        jax.block_until_ready(compiled[level](*args))  # warm-up call, not timed
    seconds = timed_calls(compiled, args, levels, reps)
    steps = runs * p.trainer.steps_per_segment * p.trainer.num_logs
    return [
        {
            "agent": agent,
            "runs": runs,
            "llvm_level": level,
            "env_steps_per_run": steps // runs,
            "compile_s": compile_s[level],
            "env_steps_per_s_median": steps / float(np.median(seconds[level])),
            "env_steps_per_s_best": steps / min(seconds[level]),
            "call_s": " ".join(f"{s:.2f}" for s in seconds[level]),
            "device": device_name(jax),
            "jax": jax.__version__,
        }
        for level in levels
    ]


def timed_calls(compiled: dict, args: tuple, levels: list[int], reps: int) -> dict:
    """Seconds of `reps` calls of each level's executable, alternating the order every
    repetition so that a drift in machine speed hits every level alike."""
    import jax

    seconds = {level: [] for level in levels}
    for rep in range(reps):
        for level in levels if rep % 2 == 0 else levels[::-1]:
            started = time.perf_counter()
            jax.block_until_ready(compiled[level](*args))
            seconds[level].append(time.perf_counter() - started)
    return seconds


def markdown(frame: pd.DataFrame, command: str) -> str:
    """The table of one compile-level benchmark, with its command, jax version and commit."""
    lines = [
        f"# One program at several LLVM levels, timed in one process ({frame.device[0]})",
        "",
        f"`{command}` (jax {frame.jax[0]}, commit {git_commit()}). "
        "Calls alternate between levels on the same inputs; env-steps/s = R x env steps "
        "per run / call time.",
        "",
        "| agent | R | LLVM level | compile s | env-steps/s (median) | env-steps/s (best) "
        "| call s |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.agent} | {r.runs} | -O{r.llvm_level} | {r.compile_s:.1f} | "
        f"{r.env_steps_per_s_median:,.0f} | {r.env_steps_per_s_best:,.0f} | {r.call_s} |"
        for r in frame.itertuples()
    ]
    return "\n".join(lines) + "\n"


def parser(description: str | None = None) -> argparse.ArgumentParser:
    """scripts/benchmark_compile_levels.py's options."""
    parser = ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agent", nargs="+", default=["ppo", "pqn"], choices=["ppo", "pqn"])
    parser.add_argument("--runs", type=int, nargs="+", default=[64, 1024])
    parser.add_argument("--levels", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--reps", type=int, default=4, help="timed calls per level (default 4)")
    parser.add_argument(
        "--max-batch-steps",
        type=int,
        default=1_048_576,
        help="R x env steps per run per call (default 1048576)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    parser.add_argument("--name", default=None)
    return parser


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Measures every agent at every R, rewriting the tables after each (agent, R)."""
    from research.results import write_csv, write_text

    command = "python scripts/benchmark_compile_levels.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    rows = []
    for agent in args.agent:
        for runs in args.runs:
            rows += measure_levels(
                agent, runs, max(args.max_batch_steps // runs, 1), args.levels, args.reps
            )
            frame = pd.DataFrame(rows)
            name = args.name or f"xla_opt_level_paired_{frame.device[0].split(':')[0]}"
            write_csv(args.out / f"{name}.csv", frame)
            write_text(args.out / f"{name}.md", markdown(frame, command))
            print(frame.tail(len(args.levels)).to_string(index=False), flush=True)
    return 0


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """scripts/benchmark_compile_levels.py: `description` is its help text (the script's
    docstring). Exits through argparse on a level outside 0-3."""
    cli = parser(description)
    args = cli.parse_args(argv)
    if any(level not in range(4) for level in args.levels):
        cli.error(f"--levels {args.levels}: each must be 0, 1, 2 or 3")
    check_args(args)
    return run(args, argv)
