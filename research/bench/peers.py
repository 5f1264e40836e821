"""This project's agents against peer libraries at identical settings
(scripts/benchmark_peers.py): at each R, ours and the peer run one after the other in fresh
worker processes, so that a change of machine load hits both, and the markdown gains an
"Ours vs peer" section of ratios. The peers' own code is in research.bench.peer_workers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from research.bench.cli import add_common_arguments, check_args
from research.bench.load import is_busy
from research.bench.measure import measure, ours_payload, start_session
from research.bench.tables import fmt, write_tables
from research.errors import ArgumentParser, InputError

# --compare name -> (our agent's label, our Hydra overrides, the peer's label)
COMPARISONS = {
    "ppo": ("ppo", ("agent=ppo", "env=cartpole"), "rejax_ppo"),
    "pqn": (
        "pqn",
        ("agent=dqn", "agent.mode=pqn", "agent.hidden_sizes=[64,64]", "env=cartpole"),
        "rejax_pqn",
    ),
    "sb3": ("ppo", ("agent=ppo", "env=cartpole"), "sb3_ppo"),
    "purejaxrl": ("ppo", ("agent=ppo", "env=cartpole"), "purejaxrl_ppo"),
}
ORDER = ["ppo", "purejaxrl_ppo", "rejax_ppo", "sb3_ppo", "pqn", "rejax_pqn"]
PEER_OF = {peer: ours for ours, _, peer in COMPARISONS.values()}
INTRO = (
    "Each row one configuration in a fresh process: this project's agents as one batched "
    "program (`research.runner.run_batch`, built from the Hydra config with the overrides "
    "below), rejax's `jax.jit(jax.vmap(algo.train))` over R keys, PureJaxRL's "
    "`jax.jit(jax.vmap(make_train(config)))` over R keys (its unmodified purejaxrl/ppo.py), "
    "stable-baselines3's `PPO.learn` (one run). Ours and the peer ran one after the other at "
    "each R.  "
)


def comparison(frame) -> list[str]:
    """Markdown lines: ours / peer env-steps/s and compile time at each setting and R."""
    ok = frame[frame["status"] == "ok"]
    lines = [
        "",
        "## Ours vs peer",
        "",
        "ratio = ours / peer env-steps/s (> 1: ours faster); compile ratio = ours / peer "
        "compile s (< 1: ours compiles faster). *busy*: either row ran under load.",
        "",
        "| ours | peer | setting | R | ours env-steps/s | peer env-steps/s | ratio "
        "| ours compile s | peer compile s | compile ratio | other load ours / peer |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for peer_row in ok[ok["agent"].isin(list(PEER_OF))].to_dict("records"):
        ours_label = PEER_OF[peer_row["agent"]]
        match = ok[
            (ok["agent"] == ours_label)
            & (ok["setting"] == peer_row["setting"])
            & (ok["runs"] == peer_row["runs"])
            & (ok["env"] == peer_row["env"])
        ]
        if not len(match):
            continue
        ours = match.iloc[0]
        num = lambda row, k: None if row[k] is None or row[k] != row[k] else float(row[k])
        ratio = lambda a, b: "-" if a is None or b is None else f"{a / b:.2f}x"
        loads = [num(ours, "other_load"), num(peer_row, "other_load")]
        busy = " *busy*" if any(is_busy(x) for x in loads) else ""
        lines.append(
            f"| {ours_label} | {peer_row['agent']} | {peer_row['setting']} "
            f"| {int(peer_row['runs'])} | {fmt(num(ours, 'env_steps_per_s'), 0)} "
            f"| {fmt(num(peer_row, 'env_steps_per_s'), 0)} "
            f"| {ratio(num(ours, 'env_steps_per_s'), num(peer_row, 'env_steps_per_s'))} "
            f"| {fmt(num(ours, 'compile_s'), 1)} "
            f"| {fmt(num(peer_row, 'compile_s'), 1)} "
            f"| {ratio(num(ours, 'compile_s'), num(peer_row, 'compile_s'))} "
            f"| {' / '.join(fmt(x, 2) for x in loads)}{busy} |"
        )
    return lines


def parser(description: str | None = None) -> argparse.ArgumentParser:
    """scripts/benchmark_peers.py's options: the comparisons, sb3's budget, the shared ones."""
    parser = ArgumentParser(
        description=description or __doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--compare",
        nargs="+",
        default=["ppo", "pqn", "sb3"],
        choices=list(COMPARISONS),
        help="comparisons to run at every R (default: ppo pqn sb3; sb3 only at R = 1)",
    )
    parser.add_argument(
        "--sb3-timesteps",
        type=int,
        default=20_480,
        help="env steps of the stable-baselines3 run (default: 20480)",
    )
    parser.add_argument(
        "--purejaxrl-dir",
        type=Path,
        default=None,
        help="with --compare purejaxrl: a checkout of github.com/luchris429/purejaxrl "
        "(its purejaxrl/ppo.py is run unmodified)",
    )
    add_common_arguments(
        parser, [1, 64], 51_200, "file stem of the CSV / markdown (default: peers_<platform>)"
    )
    return parser


def jobs(args: argparse.Namespace, what: str, runs: int) -> list[tuple[str, int, list[str]]]:
    """(label, env steps per run, worker arguments) of one comparison at one R: ours then the
    peer; sb3 alone and only at R = 1 (it cannot batch runs)."""
    ours, overrides, peer = COMPARISONS[what]
    overrides = list(overrides)
    if what == "sb3":
        if runs != 1:
            return []
        steps = args.sb3_timesteps
        payload = ["--peer", peer, "--total-timesteps", str(steps)]
        return [(peer, steps, payload + ["--overrides", json.dumps(overrides)])]
    steps, payload = ours_payload(args, runs, overrides)
    extra = ["--purejaxrl-dir", str(args.purejaxrl_dir.resolve())] if what == "purejaxrl" else []
    return [(ours, steps, payload), (peer, steps, [*payload, "--peer", peer, *extra])]


def check_purejaxrl_dir(args: argparse.Namespace) -> None:
    """--purejaxrl-dir given, and a PureJaxRL checkout, where --compare purejaxrl asks for
    it; one InputError otherwise (checked in the parent, before any process starts)."""
    if "purejaxrl" not in args.compare:
        return
    if args.purejaxrl_dir is None:
        raise InputError(
            "--compare purejaxrl needs --purejaxrl-dir: the path of a PureJaxRL checkout "
            "(git clone https://github.com/luchris429/purejaxrl)"
        )
    from research.bench.peer_workers import purejaxrl_files

    try:
        purejaxrl_files(args.purejaxrl_dir)
    except ValueError as error:
        raise InputError(f"--purejaxrl-dir: {error}") from None


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    """Runs every comparison at every R, rewriting the tables after each row; 0 if all
    finished."""
    check_args(args)
    check_purejaxrl_dir(args)
    session = start_session(args, argv, "scripts/benchmark_peers.py")
    name = args.name or f"peers_{session.info['platform']}"
    rows = []
    for runs in args.runs:
        for what in args.compare:
            ours, overrides, _ = COMPARISONS[what]
            for label, steps, payload in jobs(args, what, runs):
                if label == ours and any(r["agent"] == ours and r["runs"] == runs for r in rows):
                    continue  # ours already measured at this R (ppo vs rejax and vs sb3)
                rows.append(
                    measure(
                        args,
                        session,
                        label,
                        runs,
                        steps,
                        payload,
                        agent=label,
                        env="cartpole",
                        overrides=" ".join(overrides),
                    )
                )
                path = write_tables(
                    rows,
                    args.out,
                    name,
                    args.append,
                    session.info["device"],
                    order=ORDER,
                    intro=INTRO,
                    extra=comparison,
                )
    print(f"-> {path} and {path.with_suffix('.md')}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def main(argv: list[str] | None = None, description: str | None = None) -> int:
    """scripts/benchmark_peers.py: `description` is its help text (the script's docstring)."""
    return run(parser(description).parse_args(argv), argv)
