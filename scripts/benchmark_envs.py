"""Env throughput of a random policy (research/bench/env_steps.py): env-steps/s of each env
at each number of envs, one jitted vmapped program each, no learner.

    .venv/bin/python scripts/benchmark_envs.py --env CartPole-v1 Driving-v0 \
        --num-envs 1 1024 16384 --out results/benchmarks --name env_steps_cpu

Writes <out>/<name>.csv and <out>/<name>.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from research.bench.env_steps import markdown, measure_envs  # noqa: E402
from research.errors import ArgumentParser, cli  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", nargs="+", default=["CartPole-v1", "Driving-v0"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1, 1024, 16384])
    parser.add_argument("--steps-per-call", type=int, default=2**18, help="env-steps per call")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks")
    parser.add_argument("--name", default="env_steps_cpu")
    args = parser.parse_args(argv)
    rows = measure_envs(args.env, args.num_envs, args.steps_per_call, args.repeats)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"{args.name}.csv", index=False)
    (out / f"{args.name}.md").write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
