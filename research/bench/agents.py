"""Throughput of this project's agents (scripts/benchmark.py): for each agent and each R, one
fresh worker process trains R runs as one batched program, and the tables gain a row. The
command line lives here, not in the script, so that tests and other tools can call it."""

from __future__ import annotations

import argparse

from research.bench.cli import add_common_arguments, check_args
from research.bench.measure import measure, ours_payload, start_session, steps_for
from research.bench.program import AGENTS, agent_overrides
from research.bench.tables import write_tables
from research.errors import ArgumentParser


def parser(description: str | None = None) -> argparse.ArgumentParser:
    """scripts/benchmark.py's options: the agents, env and overrides, then the shared ones."""
    parser = ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    return parser


def table_name(args: argparse.Namespace, agents: list[str], platform: str) -> str:
    """--name, or <agent>_<env>_<platform> for one agent, agents_<platform> for several."""
    if args.name:
        return args.name
    if len(agents) == 1:
        return f"{agents[0]}_{args.env or AGENTS[agents[0]][1]}_{platform}"
    return f"agents_{platform}"


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Measures every agent at every R, rewriting the tables after each row; 0 if all
    finished."""
    agents = list(AGENTS) if "all" in args.agent else list(dict.fromkeys(args.agent))
    check_args(args)
    checks = [
        [runs, steps_for(args, runs), agent_overrides(agent, args.env, args.override)]
        for agent in agents
        for runs in args.runs
    ]
    session = start_session(args, argv, "scripts/benchmark.py", checks)
    name = table_name(args, agents, session.info["platform"])
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


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """scripts/benchmark.py: `description` is its help text (the script's docstring)."""
    return run(parser(description).parse_args(argv), argv)
