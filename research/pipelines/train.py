"""Train from scratch: config -> runs axis -> one batched program -> a run directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import yaml

from research import results
from research.agents import Agent, make_agent
from research.analysis.curves import plot_learning_curves, summary_table
from research.config import ConfigError, ExperimentConfig
from research.envs import Env
from research.runner import BatchResult, Trainer, make_train, run_batch
from research.runner.runs import RunsAxis, build_runs


@dataclass(frozen=True)
class Prepared:
    """Everything checked and built, nothing compiled yet."""

    config: ExperimentConfig
    env: Env
    agent: Agent
    trainer: Trainer
    runs: RunsAxis
    num_updates: int
    devices: list


def num_updates_for(config: ExperimentConfig) -> int:
    """Updates per run: total_timesteps // batch, rounded down to a multiple of num_logs."""
    agent = config.agent.config
    batch = agent.num_envs * agent.num_steps
    updates = config.train.total_timesteps // batch
    if updates < config.train.num_logs:
        raise ConfigError(
            f"train.total_timesteps: got {config.train.total_timesteps}; with "
            f"num_envs * num_steps = {batch} steps per update and train.num_logs = "
            f"{config.train.num_logs}, it must be at least {batch * config.train.num_logs}"
        )
    return updates // config.train.num_logs * config.train.num_logs


def prepare(config: ExperimentConfig) -> Prepared:
    """Validates everything that needs the environment or devices; compiles nothing."""
    env = Env(config.env.id, config.env.discretize)
    runs = build_runs(
        config.env.id, env.default_params, config.agent.hparams,
        num_seeds=config.runs.seeds, base_seed=config.runs.base_seed,
        sweep={k: v.values for k, v in config.sweep.items()},
        env_fixed=config.env.params,
        env_variants={k: v.values for k, v in config.env.variants.items()},
    )
    devices = jax.devices()
    if config.runs.num_devices is not None:
        if config.runs.num_devices > len(devices):
            raise ConfigError(f"runs.num_devices: got {config.runs.num_devices}; only "
                              f"{len(devices)} {devices[0].platform} device(s) are visible")
        devices = devices[: config.runs.num_devices]
    num_updates = num_updates_for(config)
    agent = make_agent(config.agent.name, config.agent.config, env.spec, num_updates)
    trainer = make_train(agent, env, config.agent.config.num_envs, config.agent.config.num_steps,
                         num_updates, config.train.num_logs)
    return Prepared(config, env, agent, trainer, runs, num_updates, devices)


def execute(prepared: Prepared, init_state: Any = None) -> BatchResult:
    config = prepared.config
    budget = config.runs.memory_budget_gb
    return run_batch(
        prepared.trainer, prepared.runs.seeds, prepared.runs.hparams, prepared.runs.env_params,
        init_state, devices=prepared.devices, chunk_size=config.runs.max_runs_per_chunk,
        memory_budget_bytes=None if budget is None else budget * 2**30,
        progress=config.progress, desc=config.name,
    )


def write_run_dir(run_dir: str | Path, prepared: Prepared, result: BatchResult,
                  raw_config: dict) -> Path:
    """Config, provenance, per-run table, metrics (npz + long CSV), summary and figure."""
    run_dir = Path(run_dir)
    config, runs = prepared.config, prepared.runs
    info = result.info
    results.write_text(run_dir / "config.yaml", yaml.safe_dump(raw_config, sort_keys=False))
    results.write_json(run_dir / "run.json", {
        **results.provenance(),
        "experiment": config.name,
        "num_runs": len(runs),
        "num_updates": prepared.num_updates,
        "env_steps_per_run": prepared.trainer.steps_per_segment * prepared.trainer.num_logs,
        "execution": info.__dict__,
        "env_steps_per_second": len(runs) * prepared.trainer.steps_per_segment
        * prepared.trainer.num_logs / info.run_s,
    })
    results.write_csv(run_dir / "runs.csv", runs.table)
    results.write_npz(run_dir / "metrics.npz", result.metrics)
    results.write_csv(run_dir / "metrics.csv", results.metrics_table(runs.table, result.metrics))
    by = list(runs.swept) + [f"env.{k}" for k in runs.varied]
    summary = summary_table(runs.table, result.metrics, by)
    results.write_csv(run_dir / "summary.csv", summary)
    results.write_text(run_dir / "summary.md", summary.to_markdown(index=False, floatfmt=".4g"))
    if config.plot:
        plot_learning_curves(runs.table, result.metrics, by, run_dir / "learning_curve.png",
                             title=f"{config.agent.name} on {config.env.id}")
    return run_dir


def run_experiment(config: ExperimentConfig, raw_config: dict, run_dir: str | Path) -> Path:
    prepared = prepare(config)
    started = time.perf_counter()
    result = execute(prepared)
    out = write_run_dir(run_dir, prepared, result, raw_config)
    print(f"{len(prepared.runs)} runs in {time.perf_counter() - started:.1f}s "
          f"(compile {result.info.compile_s:.1f}s, {result.info.num_chunks} chunk(s) on "
          f"{result.info.num_devices} device(s)) -> {out}")
    return out
