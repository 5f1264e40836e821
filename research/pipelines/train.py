"""Train from scratch: config -> runs axis -> one batched program -> a run directory."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import yaml

from research import checkpoint, results
from research.agents import AGENTS, Agent, make_agent
from research.analysis.curves import (
    aggregate,
    ci_markdown,
    diverged_at,
    final_values,
    plot_facets,
    plot_heatmap,
    plot_learning_curves,
    plot_sensitivity,
    summary_table,
)
from research.analysis.profiles import plot_performance_profiles
from research.analysis.tables import aggregate_table, improvement_table, score_matrices, write_table
from research.analysis.transfer import area_under_curve, drop_and_recovery, time_to_threshold
from research.config import (
    GUIDE_SCHEDULES,
    SHAPING_SCHEDULES,
    WEIGHT_SCHEDULES,
    ConfigError,
    ExperimentConfig,
    FinetuneConfig,
    PBTConfig,
    parse_experiment,
)
from research.envs import Env, check_fields, stack_params, variant_grid
from research.envs.shaping import goal_distance, progress_potential
from research.errors import InputError
from research.extensions import (
    EWC,
    PBT,
    BehaviourCloning,
    Diagnostics,
    Distill,
    EnvSchedule,
    Finetune,
    GuideRollIn,
    L2Init,
    Redo,
    ResetLayers,
    RewardShaping,
    ShiftEnvParams,
    ShrinkPerturb,
    SourceEval,
)
from research.extensions.keep import GATED
from research.extensions.pbt import initial_values, lineage_table, plot_lineage
from research.platform import host_memory
from research.rl.optim import Optimizer
from research.runner import (
    BatchResult,
    Extension,
    RunParams,
    Trainer,
    collect_batch,
    make_collect,
    make_evaluate,
    make_train,
    run_batch,
    split_params,
)
from research.runner.runs import ExtAxis, RunCount, RunsAxis, build_runs, count_runs
from research.sinks import write_sinks


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
    shift: tuple[int, int] | None  # (start, end) updates of an env shift
    schedule: int | None = None  # updates per phase of an env schedule


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


def shift_updates(config: ExperimentConfig, num_updates: int) -> tuple[int, int] | None:
    """(start, end) updates of the env shift; start falls on a log boundary."""
    shift, num_logs = config.env.shift, config.train.num_logs
    if shift is None:
        return None
    log = round(shift.at * num_logs)
    if not 1 <= log <= num_logs - 1:
        raise ConfigError(
            f"env.shift.at: got {shift.at!r}; the change falls on a log boundary, so with "
            f"train.num_logs = {num_logs} it must lie in [{1.5 / num_logs:.3g}, "
            f"{(num_logs - 1.5) / num_logs:.3g}]"
        )
    start = log * (num_updates // num_logs)
    return start, min(num_updates, start + round(shift.drift * num_updates))


def load_checkpoint(prepared: Prepared, path: Path, indices=None) -> Any:
    """States of a checkpoint's runs (all if indices is None) for the prepared agent."""
    template = jax.eval_shape(prepared.agent.init, jax.random.key(0), prepared.config.agent.hparams)
    return checkpoint.load(
        path,
        template,
        agent=prepared.config.agent.name,
        spec=prepared.env.spec,
        agent_config=prepared.config.agent.config,
        indices=indices,
    )


def make_shaping(config: ExperimentConfig, env: Env) -> RewardShaping | None:
    """The static shaping function of the config: a progress potential, a learned value
    (run 0 of a checkpoint, closed over as constants), or a distance for the bonus."""
    cfg = config.shaping
    if cfg is None:
        return None
    num_envs = config.agent.config.num_envs
    if cfg.kind == "bonus":
        return RewardShaping("bonus", goal_distance(config.env.id), num_envs)
    if cfg.potential == "progress":
        return RewardShaping("potential", progress_potential(config.env.id, cfg.name), num_envs)
    path = Path(cfg.checkpoint)
    checkpoint.read_info(path)
    source = prepare(parse_experiment(yaml.safe_load((path / "config.yaml").read_text())))
    if source.env.spec.obs_shape != env.spec.obs_shape:
        raise ConfigError(
            f"shaping.checkpoint: its agent sees observations of shape "
            f"{source.env.spec.obs_shape}, {config.env.id} gives "
            f"{env.spec.obs_shape}"
        )
    # As jax arrays: a numpy table (tabular Q) cannot be indexed by traced observations.
    state = jax.tree.map(lambda x: jnp.asarray(x[0]), load_checkpoint(source, path, indices=[0]))
    value = lambda obs, env_params: source.agent.value(state, obs)
    return RewardShaping("potential", value, num_envs)


def ext_axes(config: ExperimentConfig) -> dict[str, ExtAxis]:
    """The traced extensions' values of the config, by extension name."""
    axes = {}
    if config.shaping is not None:
        axes["shaping"] = ExtAxis(
            config.shaping.hparams,
            {k: v.values for k, v in config.shaping.grid.items()},
            {"schedule": SHAPING_SCHEDULES},
        )
    return axes


def uses_l2_init(config: ExperimentConfig) -> bool:
    """Whether any run of the config can have a non-zero L2-to-init weight: set, swept, or
    searched by ES (a weight of 0 everywhere trains exactly as without the extension)."""
    hparams = config.agent.hparams
    if not AGENTS[config.agent.name].gradient_based:
        return False
    searched = config.meta is not None and "l2_init" in config.meta.es.search
    return hparams.l2_init != 0 or "l2_init" in config.sweep or searched


def uses_weight_decay(config: ExperimentConfig) -> bool:
    """Whether any run can have a non-zero weight decay (set or swept): the optimiser's
    decay term is in the program only then, so without it runs are the plain optimiser's
    bit for bit."""
    # An agent without the hyperparameter (DQN, tabular) has no weight decay.
    weight = dataclasses.asdict(config.agent.hparams).get("weight_decay", 0.0)
    swept = config.sweep.get("weight_decay")
    return weight != 0 or (swept is not None and any(swept.values))


def schedule_updates(config: ExperimentConfig, num_updates: int) -> int | None:
    """Updates per phase of env.schedule (a multiple of the updates per log: phases
    switch on log boundaries, where the per-phase metrics are read)."""
    schedule = config.env.schedule
    if schedule is None:
        return None
    per_log = num_updates // config.train.num_logs
    if isinstance(schedule.every, float):
        logs = round(schedule.every * config.train.num_logs)
        if logs < 1:
            raise ConfigError(
                f"env.schedule.every: got {schedule.every!r}; phases switch on log "
                f"boundaries, so with train.num_logs = {config.train.num_logs} it must be "
                f"at least {0.5 / config.train.num_logs:.3g}"
            )
        every = logs * per_log
    else:
        every = schedule.every
        if every % per_log:
            raise ConfigError(
                f"env.schedule.every: got {every} updates; phases switch on log boundaries, "
                f"so it must be a multiple of the {per_log} updates per log"
            )
    phases = len(schedule.params)
    if not schedule.cycle and (phases - 1) * every >= num_updates:
        raise ConfigError(
            f"env.schedule.every: got {schedule.every!r} ({every} updates); the last of the "
            f"{phases} phases would start after training's {num_updates} updates: at most "
            f"{(num_updates - 1) // (phases - 1) // per_log * per_log} updates (or cycle: true)"
        )
    return every


def schedule_params(config: ExperimentConfig, env: Env, runs: RunsAxis) -> Any:
    """Each run's phases: its own variant (env.params and its env.variants values) with
    each phase's overrides, EnvParams leaves [R, P]."""
    schedule = config.env.schedule
    varied = [f"env.{k}" for k in config.env.variants]
    rows = runs.table[varied].itertuples(index=False, name=None) if varied else [()] * len(runs)
    keys = [tuple(r) for r in rows]
    unique = sorted(set(keys), key=keys.index)
    phases = [
        stack_params(
            config.env.id,
            env.default_params,
            [
                {**config.env.params, **dict(zip(config.env.variants, key)), **overrides}
                for overrides in schedule.params
            ],
        )
        for key in unique
    ]  # one [P] stack per variant
    index = np.asarray([unique.index(k) for k in keys])
    return jax.tree.map(lambda *xs: np.stack(xs)[index], *phases)


def with_ext(runs: RunsAxis, name: str, values: Any) -> RunsAxis:
    """runs whose env_params carry the traced values ext[name] (a RunParams)."""
    env, ext = split_params(runs.env_params)
    return dataclasses.replace(runs, env_params=RunParams(env=env, ext={**ext, name: values}))


def plasticity_extensions(
    config: ExperimentConfig, agent: Agent, env: Env, num_updates: int
) -> tuple[list[Extension], dict[str, ExtAxis]]:
    """The plasticity block's extensions (diagnostics first: its churn is the agent
    update's alone) and the traced values of the interventions. An intervention that no
    run can use (ReDo tau < 0, S&P alpha = 1 and sigma = 0, reset off, in every run) is
    not plugged in: those runs train bit for bit as the plain loop."""
    p = config.plasticity
    if p is None:
        return [], {}
    for name in ("redo", "shrink_perturb", "reset"):
        block = getattr(p, name)
        if block is not None and block.every > num_updates:
            raise ConfigError(
                f"plasticity.{name}.every: got {block.every}; training has {num_updates} "
                "updates: at most that"
            )
    values = lambda block, field: (
        block.grid[field].values if field in block.grid else [getattr(block.hparams, field)]
    )
    obs_shape = tuple(env.spec.obs_shape)
    extensions, axes = [], {}
    if p.diagnostics is not None:
        d = p.diagnostics
        per_log = num_updates // config.train.num_logs
        extensions.append(
            Diagnostics(
                agent,
                obs_shape,
                d.every,
                d.probe_size,
                per_log,
                config.train.num_logs,
                d.taus,
                d.srank_delta,
            )  # fmt: skip
        )
    probe = 256 if p.diagnostics is None else p.diagnostics.probe_size
    probe = min(probe, config.agent.config.num_envs * config.agent.config.num_steps)
    grid = lambda block: {k: v.values for k, v in block.grid.items()}
    if p.redo is not None and any(t >= 0 for t in values(p.redo, "tau")):
        extensions.append(Redo(agent, obs_shape, p.redo.every, probe))
        axes["redo"] = ExtAxis(p.redo.hparams, grid(p.redo))
    s = p.shrink_perturb
    if s is not None and any(
        a != 1 or g != 0 for a in values(s, "alpha") for g in values(s, "sigma")
    ):
        extensions.append(ShrinkPerturb(agent, s.every))
        axes["shrink_perturb"] = ExtAxis(s.hparams, grid(s))
    if p.reset is not None and any(values(p.reset, "enabled")):
        extensions.append(ResetLayers(agent, p.reset.every, p.reset.layers))
        axes["reset"] = ExtAxis(p.reset.hparams, grid(p.reset))
    return extensions, axes


SOURCE_DATA = "states.npz"  # in a checkpoint directory: its runs' source states


def source_template(source: Prepared, num_states: int) -> dict[str, Any]:
    """Zeros shaped like a checkpoint's source data, leaves [K, S, ...] (K = the source's
    runs): the runs axis is built before pretraining, its data set after (`with_source`)."""
    spec, k = source.env.spec, len(source.runs)
    action = (
        np.zeros((k, num_states), np.int32)
        if spec.discrete
        else np.zeros((k, num_states, spec.action_dim), np.float32)
    )
    return {"obs": np.zeros((k, num_states, *spec.obs_shape), np.float32), "action": action}


def keep_extensions(
    config: ExperimentConfig, agent: Agent, env: Env, source: Prepared | None
) -> tuple[list[Extension], dict[str, ExtAxis]]:
    """The methods against forgetting of config.transfer (research.extensions.keep) and
    their traced values; the source data is a template until `with_source` sets it."""
    t = config.transfer
    if t is None or source is None:
        return [], {}
    if needs_source_data(config) and config.checkpoint_states == 0:
        name = next(n for n in ("bc", "ewc", "forgetting") if getattr(t, n) is not None)
        raise ConfigError(
            f"checkpoint_states: got 0; transfer.{name} needs the source states a "
            "checkpoint keeps: at least 1"
        )
    data = source_template(source, config.checkpoint_states)
    labels = {"schedule": WEIGHT_SCHEDULES}
    grid = lambda block: {k: v.values for k, v in block.grid.items()}
    extensions, axes = [], {}
    # A method at strength 0 in every run is not plugged in: bit for bit the plain loop (a
    # traced 0 beside non-zero runs equals it to float rounding, as L2-to-init's).
    values = lambda block, name: (
        block.grid[name].values if name in block.grid else [getattr(block.hparams, name)]
    )
    used = lambda block, name: block is not None and any(values(block, name))
    num_steps = t.evaluation.num_steps or longest_episode(source)
    is_gated = lambda block: block is not None and GATED in values(block, "schedule")
    measure = None
    if any(is_gated(block) for block in (t.distill, t.bc, t.ewc)):
        # The "gated" schedule measures the checkpoint and the learner on each run's
        # target, long enough for the longest of the targets' episodes to end.
        steps = t.evaluation.num_steps or max(num_steps, target_episode_limit(config, env))
        measure = make_evaluate(agent, env, t.evaluation.num_envs, steps)
    gated = lambda block: measure if is_gated(block) else None
    if used(t.distill, "weight"):
        extensions.append(Distill(agent, evaluate=gated(t.distill)))
        axes["distill"] = ExtAxis(t.distill.hparams, grid(t.distill), labels)
    if used(t.bc, "weight"):
        extensions.append(BehaviourCloning(agent, evaluate=gated(t.bc), batch_size=t.bc.batch_size))
        axes["bc"] = ExtAxis(t.bc.hparams, grid(t.bc), labels, data)
    if used(t.ewc, "weight"):
        batch = min(t.ewc.batch_size, config.checkpoint_states)
        extensions.append(EWC(agent, evaluate=gated(t.ewc), batch_size=batch))
        axes["ewc"] = ExtAxis(t.ewc.hparams, grid(t.ewc), labels, {"obs": data["obs"]})
    if used(t.guide, "horizon"):
        extensions.append(GuideRollIn(agent))
        axes["guide"] = ExtAxis(t.guide.hparams, grid(t.guide), {"schedule": GUIDE_SCHEDULES})
    if t.forgetting is not None:
        evaluate = make_evaluate(agent, env, t.forgetting.num_envs, num_steps)
        extensions.append(SourceEval(agent, evaluate, t.forgetting.every, config.train.num_logs))
        env_params = split_params(source.runs.env_params)[0]
        measured = {"env": env_params, "obs": data["obs"]}
        if t.evaluation.held_out:  # the same held-out variants [H] for every checkpoint
            held = variant_params(config, env, t.evaluation.held_out)
            k = len(source.runs)
            measured["held_out"] = jax.tree.map(
                lambda x: np.broadcast_to(np.asarray(x), (k, *np.shape(x))), held
            )
        axes["forgetting"] = ExtAxis(None, per_checkpoint=measured)
    return extensions, axes


def variant_params(config: ExperimentConfig, env: Env, variants: Mapping[str, Any]) -> Any:
    """EnvParams, leaves [V]: the grid of `variants` ({field: ValueGrid}) over the
    experiment's fixed env.params (derived fields recomputed)."""
    grid = {k: v.values for k, v in variants.items()}
    points = variant_grid(config.env.id, env.default_params, config.env.params, grid)
    return stack_params(config.env.id, env.default_params, points)


def target_episode_limit(config: ExperimentConfig, env: Env) -> int:
    """The longest max_steps_in_episode of the experiment's env variants (0 if the env has
    no such field)."""
    params = variant_params(config, env, config.env.variants)
    return int(np.max(getattr(params, "max_steps_in_episode", 0)))


def with_source(prepared: Prepared, data: dict[str, np.ndarray]) -> Prepared:
    """The prepared fine-tuning runs with their checkpoints' source data (leaves [K, S, ...])
    in place of the template."""
    runs, index = prepared.runs, prepared.runs.checkpoint
    if not isinstance(runs.env_params, RunParams) or index is None:
        return prepared
    ext = dict(runs.env_params.ext)
    for name, value in ext.items():
        if name in ("bc", "ewc", "forgetting"):
            traced, old = value if name != "forgetting" else (None, value)
            new = {**old, **{k: np.asarray(data[k])[index] for k in old if k in data}}
            ext[name] = new if name == "forgetting" else (traced, new)
    env_params = runs.env_params.replace(ext=ext)
    return dataclasses.replace(prepared, runs=dataclasses.replace(runs, env_params=env_params))


def needs_source_data(config: ExperimentConfig) -> bool:
    t = config.transfer
    return t is not None and any(m is not None for m in (t.bc, t.ewc, t.forgetting))


def collect_source_data(prepared: Prepared, agent_states: Any) -> dict[str, np.ndarray]:
    """config.checkpoint_states states each run's greedy policy visits on its own env, with
    its actions there: leaves [R, S, ...] (what a checkpoint keeps beside its states)."""
    config = prepared.config
    collect = make_collect(
        prepared.agent, prepared.env, config.agent.config.num_envs, config.checkpoint_states
    )
    runs = prepared.runs
    seeds = runs.seeds + np.uint32(2_000_003)  # apart from training's and evaluation's keys
    env_params = split_params(runs.env_params)[0]
    return collect_batch(collect, agent_states, runs.hparams, env_params, seeds)


def save_source_data(checkpoint_dir: Path, data: dict[str, np.ndarray]) -> None:
    results.write_npz(Path(checkpoint_dir) / SOURCE_DATA, data)


def load_source_data(checkpoint_dir: Path, num_states: int) -> dict[str, np.ndarray]:
    """A checkpoint's source data (no pickle), its first `num_states` states per run."""
    path = Path(checkpoint_dir) / SOURCE_DATA
    if not path.is_file():
        raise ConfigError(
            f"transfer.checkpoint: {checkpoint_dir} has no {SOURCE_DATA} (source states, "
            "stored since checkpoint_states was added); transfer.bc, ewc and forgetting "
            "need them: pretrain again, or drop those methods"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in ("obs", "action")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise InputError(
            f"{path}: damaged or not source states ({error}); pretrain again"
        ) from error
    if data["obs"].shape[1] < num_states:
        raise ConfigError(
            f"checkpoint_states: got {num_states}; {path} holds "
            f"{data['obs'].shape[1]} states per run: at most that"
        )
    return {k: v[:, :num_states] for k, v in data.items()}


def longest_episode(prepared: Prepared, path: str = "transfer.evaluation.num_steps") -> int:
    """The longest episode of the prepared runs' env params: a greedy evaluation's length
    (ConfigError naming `path`, the setting to give instead, if the env has no limit)."""
    env_params = split_params(prepared.runs.env_params)[0]
    limit = getattr(env_params, "max_steps_in_episode", None)
    if limit is None:
        raise ConfigError(
            f"{path}: {prepared.config.env.id} has no "
            "max_steps_in_episode; set the evaluation length"
        )
    return int(np.max(limit))


# A floor on the host bytes a run costs while the runs table is built (its row as a Python
# dict, the table, the stacked values): build_runs peaked at 526 bytes per run for 200,000
# runs with two columns (run, seed) on CartPole, measured with tracemalloc.
TABLE_ROW_BYTES = 400
# The loop's own metrics (env_steps, episode_return, episode_length, episodes, diverged_at):
# every agent logs its losses too, so a floor on the number of metrics.
LOOP_METRICS = 5
GB = 1e9


def host_bytes(num_runs: int, num_columns: int, num_logs: int, state_bytes: int) -> dict:
    """Floors on the host memory of R runs' results, by part (bytes): the runs table as it
    is built; the metrics, [R, num_logs] float32 each, and metrics.csv's long table (R *
    num_logs rows: the runs columns and the log index, 8 bytes each, and the metrics);
    the final agent states, `state_bytes` a run (0 when not kept)."""
    rows = num_runs * num_logs
    return {
        "runs table": num_runs * (TABLE_ROW_BYTES + 8 * num_columns),
        "metrics": num_runs * num_logs * 4 * LOOP_METRICS
        + rows * (8 * (num_columns + 1) + 4 * LOOP_METRICS),
        "agent states": num_runs * state_bytes,
    }


def check_sizes(
    config: ExperimentConfig,
    axes: dict,
    agent: Agent,
    platform: str,
    memory: tuple[int, int] | None = None,
) -> RunCount:
    """The batch's run count (axes: `count_runs`'s arguments), after refusing (one line,
    the figures in it) a batch whose runs table and metrics cannot fit the machine's
    available memory (with, on CPU, where a chunk's programs share it,
    runs.memory_budget_gb set aside for them): in seconds, before any of it is built.
    memory: (available, total) bytes; this machine's if None."""
    runs = config.runs
    count = count_runs(**axes)
    columns = 3 + len(axes["sweep"]) + len(axes["env_variants"]) + (axes["checkpoints"] > 0)
    columns += sum(len(a.grid) for a in axes["extensions"].values())  # run, seed, diverged_at
    state = 0
    if config.save_checkpoint:
        shapes = jax.eval_shape(agent.init, jax.random.key(0), config.agent.hparams)
        state = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    parts = host_bytes(count.total, columns, config.train.num_logs, state)
    needed = sum(parts.values())
    budget = runs.memory_budget_gb * 2**30 if runs.memory_budget_gb and platform == "cpu" else 0
    available, total = host_memory() if memory is None else memory
    if needed + budget <= available:
        return count
    figures = ", ".join(f"{k} {v / GB:.3g} GB" for k, v in parts.items() if v)
    aside = ""
    if budget:
        aside = f", plus runs.memory_budget_gb={runs.memory_budget_gb} for a chunk's programs"
    raise ConfigError(
        f"runs: {count.total:,} runs ({count.seeds} seeds x {count.settings} settings x "
        f"{count.variants} env variants x {count.checkpoints} checkpoints) need at least "
        f"{needed / GB:.3g} GB of host memory ({figures}){aside}; this machine has "
        f"{available / GB:.3g} GB available of {total / GB:.3g} GB: fewer seeds, sweep "
        "points or variants, or a lower train.num_logs"
    )


def check_population(pbt: PBTConfig, count: RunCount) -> None:
    """A population is consecutive runs of one env variant and checkpoint (before the
    table is built): population_size divides their settings x seeds runs."""
    group = count.settings * count.seeds
    if group % pbt.population_size:
        raise ConfigError(
            f"pbt.population_size: got {pbt.population_size}; a population is consecutive "
            f"runs of one env variant and checkpoint, which have {count.settings} settings x "
            f"{count.seeds} seeds = {group} runs: must divide {group}"
        )


def with_population(runs: RunsAxis, pbt: PBTConfig, seed: int) -> RunsAxis:
    """The runs table with each run's population and member (columns pbt.population,
    pbt.member) and, for initial "sample", the drawn starting values (in the hparams and
    as columns pbt.start.<field>)."""
    index = np.arange(len(runs))
    size = pbt.population_size
    table = runs.table.assign(**{"pbt.population": index // size, "pbt.member": index % size})
    hparams = runs.hparams
    if pbt.initial == "sample":
        drawn = initial_values(pbt, len(runs), seed)
        hparams = hparams.replace(**drawn)
        table = table.assign(**{f"pbt.start.{k}": v for k, v in drawn.items()})
    return dataclasses.replace(runs, hparams=hparams, table=table)


def make_extensions(
    config: ExperimentConfig,
    env: Env,
    shift: tuple[int, int] | None,
    finetune: FinetuneConfig | None,
    l2_init: bool,
    keep: Sequence[Extension] = (),
    schedule: int | None = None,
    plasticity: Sequence[Extension] = (),
) -> tuple[Extension, ...]:
    """The loop's extensions for this config, in the order their hooks run (adoption
    before L2 and the methods against forgetting read the adopted state; the plasticity
    extensions last, so their after_update sees the agent's update itself).

    schedule: updates per phase of env.schedule."""
    extensions: list[Extension] = []
    if finetune is not None:
        extensions.append(Finetune(finetune))
    if l2_init:
        extensions.append(L2Init())
    extensions.extend(keep)
    if shift is not None:
        extensions.append(ShiftEnvParams(config.env.id, *shift))
    if schedule is not None:
        s = config.env.schedule
        extensions.append(EnvSchedule(schedule, len(s.params), s.cycle))
    shaping = make_shaping(config, env)
    if shaping is not None:
        extensions.append(shaping)
    extensions.extend(plasticity)
    return tuple(extensions)


def prepare(
    config: ExperimentConfig,
    finetune: FinetuneConfig | None = None,
    checkpoints: int = 0,
    l2_init: bool | None = None,
    source: Prepared | None = None,
) -> Prepared:
    """Validates everything that needs the environment or devices; compiles nothing.

    finetune / checkpoints: runs start from one of `checkpoints` states, adopted with
    these options (the runs axis gets an outermost checkpoint axis).
    l2_init: plug in L2-to-init; None: when `uses_l2_init(config)` (a pipeline that sets
    the weight itself, as meta-learning's search does, says so).
    source: the prepared pretraining runs of the checkpoints (for the methods against
    forgetting of config.transfer, which need its env and data shapes).
    """
    env = Env(config.env.id, config.env.discretize)
    shift = config.env.shift
    if shift is not None:
        check_fields(config.env.id, env.default_params, shift.params, "env.shift.params")
    if config.env.schedule is not None:
        for i, overrides in enumerate(config.env.schedule.params):
            check_fields(config.env.id, env.default_params, overrides, f"env.schedule.params[{i}]")
    num_updates = num_updates_for(config)
    optimizer = Optimizer(
        frozen=() if finetune is None else finetune.frozen_groups,
        decay=uses_weight_decay(config),
    )
    agent = make_agent(config.agent.name, config.agent.config, env.spec, num_updates, optimizer)
    keep, keep_axes = keep_extensions(config, agent, env, source)
    plastic, plastic_axes = plasticity_extensions(config, agent, env, num_updates)
    schedule = schedule_updates(config, num_updates)
    axes = dict(
        num_seeds=config.runs.seeds,
        sweep={k: v.values for k, v in config.sweep.items()},
        sweep_aligned=config.search.kind == "random",
        zipped=config.search.kind == "zip",
        env_variants={k: v.values for k, v in config.env.variants.items()},
        checkpoints=checkpoints,
        extensions={**ext_axes(config), **keep_axes, **plastic_axes},
    )
    count = check_sizes(config, axes, agent, jax.devices()[0].platform)
    pbt = config.pbt
    if pbt is not None:
        check_population(pbt, count)
    runs = build_runs(
        config.env.id,
        env.default_params,
        config.agent.hparams,
        base_seed=config.runs.base_seed,
        env_fixed=config.env.params,
        env_shift=None if shift is None else shift.params,
        **axes,
    )
    if schedule is not None:
        runs = with_ext(runs, "env_schedule", schedule_params(config, env, runs))
    if pbt is not None:
        runs = with_population(runs, pbt, config.search.seed)
    devices = jax.devices()
    if config.runs.num_devices is not None:
        if config.runs.num_devices > len(devices):
            raise ConfigError(
                f"runs.num_devices: got {config.runs.num_devices}; only "
                f"{len(devices)} {devices[0].platform} device(s) are visible"
            )
        devices = devices[: config.runs.num_devices]
    env_shift = shift_updates(config, num_updates)
    trainer = make_train(
        agent,
        env,
        config.agent.config.num_envs,
        config.agent.config.num_steps,
        num_updates,
        config.train.num_logs,
        make_extensions(
            config,
            env,
            env_shift,
            finetune,
            uses_l2_init(config) if l2_init is None else l2_init,
            keep,
            schedule,
            plastic,
        )
        + (() if pbt is None else (PBT(pbt, config.train.num_logs),)),
        on_diverge=config.runs.on_diverge,
    )
    return Prepared(config, env, agent, trainer, runs, num_updates, devices, env_shift, schedule)


def execute(
    prepared: Prepared,
    init_state: Any = None,
    chunk_dir: Path | None = None,
    fingerprint: str = "",
    keep_states: bool = True,
) -> BatchResult:
    """Runs the prepared batch (see research.runner.run_batch for chunk_dir / keep_states)."""
    config = prepared.config
    budget = config.runs.memory_budget_gb
    return run_batch(
        prepared.trainer,
        prepared.runs.seeds,
        prepared.runs.hparams,
        prepared.runs.env_params,
        init_state,
        devices=prepared.devices,
        chunk_size=config.runs.max_runs_per_chunk,
        memory_budget_bytes=None if budget is None else budget * 2**30,
        progress=config.progress,
        desc=config.name,
        chunk_dir=chunk_dir,
        fingerprint=fingerprint,
        keep_states=keep_states,
    )


def write_run_dir(
    run_dir: str | Path, prepared: Prepared, result: BatchResult, raw_config: dict
) -> Path:
    """Config, provenance, per-run table, metrics (npz + long CSV), summary and figure."""
    run_dir = Path(run_dir)
    config, runs = prepared.config, prepared.runs
    info = result.info
    fingerprint = write_config(run_dir, raw_config)
    results.write_json(
        run_dir / "run.json",
        {
            **results.provenance(),
            "experiment": config.name,
            "config_sha256": fingerprint,  # of config.yaml: reproduce tells an edited one
            "num_runs": len(runs),
            "num_updates": prepared.num_updates,
            "env_steps_per_run": prepared.trainer.steps_per_segment * prepared.trainer.num_logs,
            "execution": info.__dict__,
            "memory": results.peak_memory(),
            # Of the runs this call computed: a resume's loaded chunks took no training time.
            "env_steps_per_second": (len(runs) - info.loaded_runs)
            * prepared.trainer.steps_per_segment
            * prepared.trainer.num_logs
            / info.run_s,
        },
    )
    results.write_csv(
        run_dir / "runs.csv", runs.table.assign(diverged_at=diverged_at(result.metrics))
    )
    if config.save_checkpoint:
        checkpoint.save(
            run_dir / "checkpoint",
            result.agent_states,
            agent=config.agent.name,
            spec=prepared.env.spec,
            agent_config=config.agent.config,
            runs=runs.table,
            raw_config=raw_config,
        )
        if config.checkpoint_states:
            data = collect_source_data(prepared, result.agent_states)
            save_source_data(run_dir / "checkpoint", data)
    results.write_npz(run_dir / "metrics.npz", result.metrics)
    results.write_csv(run_dir / "metrics.csv", results.metrics_table(runs.table, result.metrics))
    by = list(runs.swept) + [f"env.{k}" for k in runs.varied]
    summary = summary_table(runs.table, result.metrics, by)
    results.write_csv(run_dir / "summary.csv", summary)
    results.write_text(run_dir / "summary.md", summary.to_markdown(index=False, floatfmt=".4g"))
    write_aggregates(run_dir, prepared, result)
    if config.shaping is not None:
        write_shaping_summary(run_dir, prepared, result, by)
    marks = ()
    if prepared.shift is not None:
        marks = write_adaptation(run_dir, prepared, result, by)
    if prepared.schedule is not None:
        marks = write_phases(run_dir, prepared, result, by)
    if "pbt.parent" in result.metrics:
        write_lineage(run_dir, config, result.metrics)
    if config.plot:
        title = f"{config.agent.name} on {config.env.id}"
        if "shaping.schedule" in by and len(by) > 1:  # a panel per schedule stays readable
            plot_facets(
                runs.table,
                result.metrics,
                ["shaping.schedule"],
                [b for b in by if b != "shaping.schedule"],
                run_dir / "learning_curve.png",
                title=f"{title} (unshaped return)",
            )
        else:
            plot_learning_curves(
                runs.table,
                result.metrics,
                by,
                run_dir / "learning_curve.png",
                title=title,
                marks=marks,
            )
        plot_sweep(run_dir, runs, result.metrics, title)
        plot_plasticity(run_dir, runs.table, result.metrics, by, title, marks)
    return run_dir


def write_lineage(run_dir: Path, config: ExperimentConfig, metrics: dict) -> None:
    """pbt_lineage.csv and, with plot, pbt_hparams.png and pbt_lineage.png."""
    lineage = lineage_table(config.pbt, metrics, metrics["env_steps"])
    results.write_csv(run_dir / "pbt_lineage.csv", lineage)
    if config.plot:
        plot_lineage(
            config.pbt,
            lineage,
            {"hparams": run_dir / "pbt_hparams.png", "lineage": run_dir / "pbt_lineage.png"},
        )


def phase_spans(num_logs: int, logs_per_phase: int, num_phases: int, cycle: bool) -> list:
    """[(phase index, first log, end log)] of each stretch of training in one phase: every
    logs_per_phase logs with `cycle`, else the last phase holds to the end."""
    starts = list(range(0, num_logs, logs_per_phase))
    if not cycle:
        starts = starts[:num_phases]
    ends = starts[1:] + [num_logs]
    return [(k % num_phases, a, b) for k, (a, b) in enumerate(zip(starts, ends))]


def last_measured(x: np.ndarray) -> np.ndarray:
    """Per run, the last finite value of x [R, L] (NaN where none): a diagnostic measured
    every few segments, read at the end of a phase."""
    finite = np.isfinite(x)
    last = x.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    return np.where(finite.any(1), x[np.arange(len(x)), last], np.nan)


PHASE_DIAGNOSTICS = ("feature_erank", "feature_srank", "param_norm", "churn")


def write_phases(run_dir: Path, prepared: Prepared, result: BatchResult, by: list[str]) -> tuple:
    """phases.csv/md: per stretch of the env schedule and group, with 95% CIs: the return
    at its end, and after each change the drop and the env steps to recover (within the
    stretch: research.analysis.transfer.drop_and_recovery against the stretch before);
    the diagnostics last measured in it, where they are. Returns the env steps of the
    changes (the figures' marks)."""
    config, m = prepared.config, result.metrics
    schedule, num_logs = config.env.schedule, config.train.num_logs
    per_log = prepared.num_updates // num_logs
    logs = prepared.schedule // per_log
    spans = phase_spans(num_logs, logs, len(schedule.params), schedule.cycle)
    curves, steps = m["episode_return"], np.asarray(m["env_steps"][0])
    diagnostics = [k for k in m if k in PHASE_DIAGNOSTICS or k.startswith("dormant_")]
    tables = []
    for k, (phase, start, end) in enumerate(spans):
        nan = np.full(len(curves), np.nan)
        values = {"return_end": curves[:, end - 1], "drop": nan, "recovery_steps": nan}
        if k > 0:
            before = spans[k - 1][1]
            drop, recovery = drop_and_recovery(
                curves[:, before:end], steps[before:end], start - before
            )
            values.update(drop=drop, recovery_steps=recovery)
        values.update({f"{d}_end": last_measured(m[d][:, start:end]) for d in diagnostics})
        extra = {"stretch": k, "phase": phase, "params": str(dict(schedule.params[phase]))}
        tables.append(aggregate(prepared.runs.table, values, by, extra=extra))
    table = pd.concat(tables, ignore_index=True)
    results.write_csv(run_dir / "phases.csv", table)
    results.write_text(run_dir / "phases.md", ci_markdown(table))
    return tuple(float(steps[start - 1]) for _, start, _ in spans[1:])


def plot_plasticity(
    run_dir: Path, runs: pd.DataFrame, metrics: dict, by: list[str], title: str, marks: tuple
) -> None:
    """plasticity_<metric>.png: each diagnostic over training, a line per setting, drawn
    at the logs where it was measured (the diagnostics are NaN between)."""
    dormant = sorted(k for k in metrics if k.startswith("dormant_"))
    taus = sorted({k.split("[")[0] for k in dormant})
    names = [k for k in dormant if k.startswith(taus[-1] + "[")] if taus else []
    names += [
        k
        for k in ("feature_erank", "feature_srank", "critic_feature_erank", "param_norm",
                  "param_distance", "churn", "redo_units")
        if k in metrics
    ]  # fmt: skip
    for name in names:
        measured = np.isfinite(metrics[name]).any(0)
        if not measured.any():
            continue
        sub = {"env_steps": metrics["env_steps"][:, measured], name: metrics[name][:, measured]}
        file = name.replace("[", "_").replace("]", "").replace(".", "p")
        plot_learning_curves(
            runs, sub, by, run_dir / f"plasticity_{file}.png", metric=name, title=title,
            marks=marks,
        )  # fmt: skip


def plot_sweep(run_dir: Path, runs: RunsAxis, metrics: dict, title: str) -> None:
    """sensitivity.png (final return against each numeric swept value) and, for two or more
    swept values, heatmap.png of the first two."""
    numeric = [
        c
        for c in runs.swept + tuple(f"env.{k}" for k in runs.varied)
        if c in runs.table
        and pd.api.types.is_numeric_dtype(runs.table[c])
        and runs.table[c].nunique() > 1
    ]
    if not numeric:
        return
    final = final_values(metrics)
    plot_sensitivity(
        runs.table, final, numeric[0], run_dir / "sensitivity.png", by=numeric[1:2], title=title
    )
    if len(numeric) >= 2:
        plot_heatmap(
            runs.table, final, numeric[0], numeric[1], run_dir / "heatmap.png", title=title
        )


def write_aggregates(run_dir: Path, prepared: Prepared, result: BatchResult) -> None:
    """aggregates.{csv,md,tex}: IQM, mean, median and optimality gap of the final return per
    setting of the swept values, with stratified-bootstrap 95% CIs (strata: env variants);
    probability_of_improvement.{csv,md,tex} between settings when there are 2+; and
    performance_profile.png."""
    config, runs = prepared.config, prepared.runs
    matrices = score_matrices(
        runs.table,
        final_values(result.metrics),
        list(runs.swept),
        [f"env.{k}" for k in runs.varied],
    )
    write_table(
        run_dir / "aggregates", aggregate_table(matrices, config.analysis.optimality_threshold)
    )
    if len(matrices) > 1:
        write_table(run_dir / "probability_of_improvement", improvement_table(matrices))
    if config.plot:
        plot_performance_profiles(
            matrices,
            run_dir / "performance_profile.png",
            title=f"{config.agent.name} on {config.env.id}",
        )


def write_shaping_summary(
    run_dir: Path, prepared: Prepared, result: BatchResult, by: list[str]
) -> None:
    """shaping.csv/md: per setting, the true (unshaped) final return, area under the curve,
    steps to shaping.threshold, and the shaped final return, with 95% bootstrap CIs."""
    m, threshold = result.metrics, prepared.config.shaping.threshold
    values = {
        "final_return": m["episode_return"][:, -1],
        "auc": area_under_curve(m["episode_return"]),
        "final_shaped_return": m["shaped_return"][:, -1],
    }
    if threshold is not None:
        values["steps_to_threshold"] = time_to_threshold(
            m["episode_return"], m["env_steps"][0], threshold
        )
    table = aggregate(prepared.runs.table, values, by)
    results.write_csv(run_dir / "shaping.csv", table)
    results.write_text(run_dir / "shaping.md", ci_markdown(table))


def write_adaptation(
    run_dir: Path, prepared: Prepared, result: BatchResult, by: list[str]
) -> tuple[float, ...]:
    """adaptation.csv/md: drop and recovery time after the env shift, per group with CIs.

    Returns the env steps where the shift starts and ends (for the figure)."""
    start, end = prepared.shift
    steps = result.metrics["env_steps"][0]
    per_update = steps[0] // (prepared.num_updates // prepared.config.train.num_logs)
    change_log = start // (prepared.num_updates // prepared.config.train.num_logs)
    drop, recovery = drop_and_recovery(result.metrics["episode_return"], steps, change_log)
    table = aggregate(prepared.runs.table, {"drop": drop, "recovery_steps": recovery}, by)
    results.write_csv(run_dir / "adaptation.csv", table)
    results.write_text(run_dir / "adaptation.md", ci_markdown(table))
    return tuple(sorted({float(start * per_update), float(end * per_update)}))


def divergence_warning(metrics: dict[str, np.ndarray], what: str = "runs") -> str | None:
    """The line that ends a batch in which some run diverged (None if none did)."""
    at = diverged_at(metrics)
    bad = np.flatnonzero(at >= 0)
    if not len(bad):
        return None
    shown = ", ".join(f"run {i} at update {at[i]}" for i in bad[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return (
        f"warning: {len(bad)} of {len(at)} {what} diverged (a loss or parameter became "
        f"NaN or inf: {shown}{more}); they report no return from the log they diverged in "
        "on and count as 'diverged' in summary.md (runs.csv: diverged_at)"
    )


def write_config(run_dir: Path, raw_config: dict) -> str:
    """config.yaml of the run directory; returns its fingerprint (sha256 of the text)."""
    text = yaml.safe_dump(raw_config, sort_keys=False)
    results.write_text(Path(run_dir) / "config.yaml", text)
    return hashlib.sha256(text.encode()).hexdigest()


def run_experiment(config: ExperimentConfig, raw_config: dict, run_dir: str | Path) -> Path:
    """Trains the config's runs from scratch and writes `run_dir`.

    The config is written first and every finished chunk goes to run_dir/chunks, so a run
    killed mid-way resumes (scripts/resume.py) without redoing finished chunks.
    """
    run_dir = Path(run_dir)
    prepared = prepare(config)
    fingerprint = write_config(run_dir, raw_config)
    started = time.perf_counter()
    result = execute(
        prepared,
        chunk_dir=run_dir / "chunks",
        fingerprint=fingerprint,
        keep_states=config.save_checkpoint,
    )
    out = write_run_dir(run_dir, prepared, result, raw_config)
    shutil.rmtree(run_dir / "chunks", ignore_errors=True)  # all of it is in metrics.npz now
    write_sinks(out, config.sinks, raw_config, config.name)
    print(
        f"{len(prepared.runs)} runs in {time.perf_counter() - started:.1f}s "
        f"(compile {result.info.compile_s:.1f}s, {result.info.num_chunks} chunk(s) of "
        f"{result.info.chunk_size} on {result.info.num_devices} device(s), peak RSS "
        f"{results.peak_memory()['peak_rss_mib']:.0f} MiB) -> {out}"
    )
    warning = divergence_warning(result.metrics)
    if warning is not None:
        print(warning)
    return out
