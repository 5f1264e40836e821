"""The measured process: `python -m research.bench.worker ...` trains one batch and prints its
result row as one JSON line. A fresh process per configuration keeps one configuration's peak
memory, JIT caches and thread pools (and its XLA_FLAGS and CPU affinity, set by the parent in
`research.bench.measure.child`) out of the next. Nothing imports this module; the parent only
names it."""

from __future__ import annotations

import argparse
import json
import sys
import time

from research.bench.program import device_name, prepared, probe, tree_bytes


def ours_worker(
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
        "device": device_name(jax),
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


def check(configs: list) -> dict:
    """{"config_error": the first config's message} if one of the configurations (runs,
    steps, overrides) is invalid, else {}: so the parent refuses them before measuring."""
    from research.bench.program import config_for
    from research.errors import InputError

    for runs, steps, overrides in configs:
        try:
            config_for(runs, steps, 1, None, overrides)
        except InputError as error:
            return {"config_error": f"{' '.join(overrides)}: {error}"}
    return {}


def row(args: argparse.Namespace) -> dict:
    """The result of the worker the arguments ask for: ours, or a peer library's (whose
    imports stay out of this process unless a peer is asked for)."""
    overrides = json.loads(args.overrides)
    if args.peer is None:
        return ours_worker(
            args.runs, args.total_timesteps, args.num_logs, args.num_devices, overrides
        )
    from research.bench.peer_workers import purejaxrl_worker, rejax_worker, sb3_worker

    if args.peer == "purejaxrl_ppo":
        return purejaxrl_worker(
            args.purejaxrl_dir,
            args.runs,
            args.total_timesteps,
            args.num_logs,
            args.num_devices,
            overrides,
        )
    if args.peer == "sb3_ppo":
        return sb3_worker(args.total_timesteps, overrides)
    return rejax_worker(
        args.peer, args.runs, args.total_timesteps, args.num_logs, args.num_devices, overrides
    )


def main(argv: list[str] | None = None) -> int:
    """Prints one JSON line, the last on stdout, which the parent parses (`--probe`: what JAX
    sees; otherwise a measured batch's row)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probe", action="store_true", help="report what JAX sees, and exit")
    parser.add_argument(
        "--peer", default=None, help="rejax_ppo, rejax_pqn, purejaxrl_ppo or sb3_ppo"
    )
    parser.add_argument("--purejaxrl-dir", default=None, help="with purejaxrl_ppo: a checkout")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--total-timesteps", type=int, default=0)
    parser.add_argument("--num-logs", type=int, default=10)
    parser.add_argument("--num-devices", type=int, default=None)
    parser.add_argument("--overrides", default="[]", help="Hydra overrides, a JSON list")
    parser.add_argument(
        "--check", default="[]", help="with --probe: [[runs, steps, overrides], ...] to parse"
    )
    args = parser.parse_args(argv)
    print(json.dumps({**probe(), **check(json.loads(args.check))} if args.probe else row(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
