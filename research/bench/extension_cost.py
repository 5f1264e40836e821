"""What an extension costs: one batch trained with and without it, timed in one process.

Each variant is a set of Hydra overrides on a base config (the project's own program, built
as scripts/train.py builds it). A transfer config's fine-tuning program is measured: its runs
start from the source's freshly initialised states (what they compute costs the same as from
a trained checkpoint), its source data is the template. Every variant is compiled and run
once (not timed), then --reps timed calls alternate the variants' order every repetition, so
a drift in machine speed hits every variant alike. Reported: env-steps/s at the median call
and its ratio to the first variant's.

    python scripts/benchmark_extensions.py --transfer --runs 64 \\
        --variant off= --variant forgetting_every_5=+transfer.forgetting.every=5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from research.bench.cli import check_args
from research.bench.program import ROOT, compose_raw, device_name
from research.errors import ArgumentParser

BASE = ("agent=ppo", "env=cartpole", "progress=false", "plot=false", "train.num_logs=20")
# --transfer: the fine-tuning program of a transfer from one (untrained) source run
TRANSFER = (
    "+transfer.source.total_timesteps=10240",
    "+transfer.source.seeds=1",
    "+transfer.scratch=false",
)


def build(overrides: list[str]):
    """(Prepared, initial agent states or None) of the program the overrides configure."""
    from research.config import parse_experiment
    from research.pipelines.train import prepare
    from research.pipelines.transfer import plan
    from research.runner import initial_agent_states, take

    raw = compose_raw(*overrides)
    config = parse_experiment(raw)
    if config.transfer is None:
        return prepare(config), None
    p = plan(config, raw)
    states = initial_agent_states(p.source.trainer, p.source.runs)
    return p.finetune, take(states, p.finetune.runs.checkpoint)


def measure(variants: dict[str, list[str]], base: list[str], reps: int) -> list[dict]:
    """One row per variant: median and best env-steps/s over `reps` alternating calls."""
    import jax

    from research.pipelines.train import execute

    programs = {name: build([*base, *extra]) for name, extra in variants.items()}
    names, seconds, compile_s = list(programs), {n: [] for n in programs}, {}
    for name, (prepared, init) in programs.items():
        compile_s[name] = execute(prepared, init).info.compile_s  # compiles; not timed
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            prepared, init = programs[name]
            started = time.perf_counter()
            execute(prepared, init)
            seconds[name].append(time.perf_counter() - started)
    rows = []
    for name, (prepared, _) in programs.items():
        steps = len(prepared.runs) * prepared.trainer.steps_per_segment * prepared.trainer.num_logs
        rows.append(
            {
                "variant": name,
                "overrides": " ".join(variants[name]),
                "runs": len(prepared.runs),
                "env_steps_per_run": steps // len(prepared.runs),
                "compile_s": compile_s[name],
                "env_steps_per_s_median": steps / float(np.median(seconds[name])),
                "env_steps_per_s_best": steps / min(seconds[name]),
                "call_s": " ".join(f"{s:.2f}" for s in seconds[name]),
                "device": device_name(jax),
            }
        )
    first = rows[0]["env_steps_per_s_median"]
    for row in rows:
        row["speed_vs_first"] = row["env_steps_per_s_median"] / first
    return rows


def markdown(frame: pd.DataFrame, command: str) -> str:
    from research.results import git_commit

    commit = git_commit()
    dirty = " + uncommitted changes" if commit["dirty"] else ""
    version = f"{(commit['commit'] or 'unknown')[:7]}{dirty}"
    lines = [
        f"# Extension cost, timed in one process ({frame.device[0]})",
        "",
        f"`{command}` (commit {version}). Calls alternate between variants on the same "
        "inputs; env-steps/s = R x env steps per run / call time (a call: the chunked "
        "batch, as scripts/train.py runs it, compile excluded).",
        "",
        "| variant | overrides | R | env steps/run | compile s | env-steps/s (median) "
        "| vs first | call s |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.variant} | `{r.overrides}` | {r.runs} | {r.env_steps_per_run} | "
        f"{r.compile_s:.1f} | {r.env_steps_per_s_median:,.0f} | {r.speed_vs_first:.3f} | "
        f"{r.call_s} |"
        for r in frame.itertuples()
    ]
    return "\n".join(lines) + "\n"


def variant(text: str) -> tuple[str, list[str]]:
    """NAME=OVERRIDE[,OVERRIDE...] -> (name, overrides); NAME= is the base alone."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant {text!r}: must be NAME=OVERRIDES")
    return name, [o for o in rest.split(",") if o]


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    cli = ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    cli.add_argument("--variant", type=variant, action="append", required=True)
    cli.add_argument("--runs", type=int, default=64)
    cli.add_argument("--total-timesteps", type=int, default=100_000)
    cli.add_argument("--reps", type=int, default=3)
    cli.add_argument("--override", action="append", default=[], help="more base overrides")
    cli.add_argument(
        "--transfer",
        action="store_true",
        help="measure a transfer's fine-tuning program (for transfer.* extensions)",
    )
    cli.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    cli.add_argument("--name", default="extension_cost_cpu")
    args = cli.parse_args(argv)
    check_args(args)
    from research.results import write_csv, write_text

    base = [*BASE, *(TRANSFER if args.transfer else ()), f"runs.seeds={args.runs}",
            f"train.total_timesteps={args.total_timesteps}", *args.override]  # fmt: skip
    frame = pd.DataFrame(measure(dict(args.variant), base, args.reps))
    command = "python scripts/benchmark_extensions.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    write_csv(args.out / f"{args.name}.csv", frame)
    write_text(args.out / f"{args.name}.md", markdown(frame, command))
    print(frame.drop(columns=["device"]).to_string(index=False))
    return 0
