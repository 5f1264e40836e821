"""Meta-learning: can the system learn to fine-tune better and faster on new variants?

`meta.method` meta-trains `meta.seeds` independent times on env variants drawn from
`meta.variants`:
- reptile: a meta-learned initialisation (research/meta/reptile.py);
- es: evolution strategies over fine-tuning hyperparameters / shaping parameters
  (research/meta/es.py), fine-tuning the single-source pretraining (or from scratch).
Then every arm is fine-tuned on the `meta.held_out` grid (never trained on) for
train.total_timesteps with the agent's hyperparameters, runs.seeds seeds each, in one
batched program, and compared with the transfer metrics:
- scratch: a random initialisation (the one Reptile starts from);
- source: pretraining on the single variant `meta.source`;
- multitask: pretraining through variants drawn from `meta.variants` (one agent; the
  variant changes every inner_timesteps env steps);
- reptile (the meta-learned initialisation) or es (the ES hyperparameters on ES's init).
Both pretrainings get meta.pretrain_timesteps env steps (Reptile: by default as many as
its inner loops used in all).

Run directory:
    meta/               meta-training: metrics.npz (each [meta seeds, iterations]),
                        history.csv, variants.csv (every variant trained on), ES's
                        values.csv; with save_checkpoint, Reptile's checkpoint/ (the
                        meta-learned initialisations, loadable as transfer.checkpoint)
    pretrain/           the baselines' pretraining: metrics.npz ([arms x seeds, segments])
    finetune/           every arm's fine-tuning runs, a train-pipeline run directory
    meta_runs.csv       one row per fine-tuning run: arm, meta_seed, variant, every metric
    meta_summary.{csv,md}     per arm: mean [95% bootstrap CI over meta seeds] of every metric
    meta_by_variant.{csv,md}  per arm and held-out variant; meta_by_seed per meta seed (CIs
                        over runs: fine-tuning seeds, and variants)
    meta_curves.png     fine-tuning curves: a panel per held-out variant, a line per arm
    meta_training.png   the meta-training curve (Reptile: inner return; ES: fitness)
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from research import checkpoint, results
from research.analysis.curves import (
    aggregate,
    ci_markdown,
    diverged_at,
    plot_facets,
    plot_learning_curves,
    without_diverged,
)
from research.config import ConfigError, ExperimentConfig, FinetuneConfig, TrainConfig
from research.envs import Env, check_fields, stack_params, variant_grid
from research.meta import (
    SearchSpace,
    finetune_fitness,
    make_es,
    make_reptile,
    make_sequential,
    sample_variants,
    shard_over,
)
from research.pipelines.train import (
    Prepared,
    divergence_warning,
    execute,
    prepare,
    uses_l2_init,
    write_config,
    write_run_dir,
)
from research.pipelines.transfer import METRICS as TRANSFER_METRICS
from research.pipelines.transfer import against_scratch, curve_metrics, longest_episode
from research.runner import (
    RunParams,
    evaluate_batch,
    initial_agent_states,
    make_evaluate,
    split_params,
    take,
)
from research.sinks import write_sinks

BASELINES = ("scratch", "source", "multitask")
EVALUATION_SEED_OFFSET = np.uint32(1_000_003)  # greedy episodes differ from training's


@dataclasses.dataclass(frozen=True)
class MetaPlan:
    """Everything checked and built; nothing compiled yet."""

    config: ExperimentConfig
    arms: tuple[str, ...]
    evaluation: Prepared  # fine-tuning on the held-out grid, checkpoints = arms x meta seeds
    inner: Prepared  # the inner loop: Reptile's fine-tuning runs or ES's candidates' runs
    pretrain: Prepared  # the baselines' pretraining, one segment per variant
    inner_timesteps: int
    evaluate: Any  # greedy evaluator


def _check_env_fields(config: ExperimentConfig, env: Env) -> None:
    """ConfigError naming the meta field for an EnvParams field the env does not have, or
    a value (each range bound, each listed value) or combination it does not allow."""
    meta, env_id, default = config.meta, config.env.id, env.default_params
    for k, r in meta.variants.items():
        for bound in () if r.values else ("low", "high"):
            check_fields(env_id, default, {k: getattr(r, bound)}, "meta.variants", f".{bound}")
    # Draws lie between the bounds, so the corners stand for the combinations drawn.
    grids = {
        "meta.variants": {k: r.values or (r.low, r.high) for k, r in meta.variants.items()},
        "meta.held_out": {k: v.values for k, v in meta.held_out.items()},
        "meta.source": {k: [v] for k, v in meta.source.items()},
    }
    for path, grid in grids.items():
        variant_grid(env_id, default, config.env.params, grid, variants_path=path)


def plan(config: ExperimentConfig) -> MetaPlan:
    meta = config.meta
    _check_env_fields(config, Env(config.env.id, config.env.discretize))
    base = dataclasses.replace(config, meta=None)
    l2_init = uses_l2_init(config)  # base no longer shows an l2_init the search sets
    arms = BASELINES + (meta.method,)
    evaluation = prepare(
        dataclasses.replace(base, env=dataclasses.replace(config.env, variants=meta.held_out)),
        finetune=FinetuneConfig(),
        checkpoints=len(arms) * meta.seeds,
        l2_init=l2_init,
    )
    agent = config.agent.config
    batch = agent.num_envs * agent.num_steps
    inner_timesteps = (
        (meta.reptile.inner_timesteps if meta.method == "reptile" else meta.es.inner_timesteps)
        // batch
        * batch
    )
    inner_updates = inner_timesteps // batch
    inner = prepare(
        dataclasses.replace(
            base, train=TrainConfig(inner_timesteps, min(config.train.num_logs, inner_updates))
        ),
        finetune=FinetuneConfig(),
        l2_init=l2_init,
    )
    budget = meta.pretrain_timesteps or (
        meta.reptile.iterations * meta.reptile.meta_batch * inner_timesteps
    )
    segments = budget // inner_timesteps
    if segments < 1:
        raise ConfigError(
            f"meta.pretrain_timesteps: got {budget}; must be at least the inner "
            f"loop's {inner_timesteps} env steps (the multi-task pretraining "
            "changes variant every inner_timesteps)"
        )
    pretrain = prepare(
        dataclasses.replace(base, train=TrainConfig(segments * inner_timesteps, segments))
    )
    num_steps = meta.evaluation.num_steps or longest_episode(
        evaluation, "meta.evaluation.num_steps"
    )
    evaluate = make_evaluate(evaluation.agent, evaluation.env, meta.evaluation.num_envs, num_steps)
    return MetaPlan(config, arms, evaluation, inner, pretrain, inner_timesteps, evaluate)


def _shaped(config: ExperimentConfig, env_params: Any) -> Any:
    """Env params as a shaping trainer takes them: with the config's ShapingHParams
    broadcast to their leading shape (unchanged without shaping)."""
    if config.shaping is None:
        return env_params
    shape = np.shape(jax.tree.leaves(env_params)[0])
    shaping = jax.tree.map(lambda x: np.full(shape, x, np.float32), config.shaping.hparams)
    return RunParams(env_params, {"shaping": shaping})


def _variant_streams(
    p: MetaPlan, rows: int, per_row: int, purpose: int
) -> tuple[pd.DataFrame, Any]:
    """Variants drawn from meta.variants for every meta seed: (table, params with leaves
    [seeds, rows, per_row, ...]); the table's `step` is the row (iteration, generation or
    segment), `member` the column. Seed m draws from rng (meta.seed, m, purpose)."""
    config, meta, env = p.config, p.config.meta, p.evaluation.env
    drawn, frames = [], []
    for m in range(meta.seeds):
        rng = np.random.default_rng((meta.seed, m, purpose))
        overrides, params = sample_variants(
            rng, config.env.id, env.default_params, config.env.params, meta.variants, rows * per_row
        )
        drawn.append(params)
        index = np.arange(len(overrides))
        frames.append(
            pd.DataFrame(overrides).assign(
                meta_seed=m, step=index // per_row, member=index % per_row
            )
        )
    params = jax.tree.map(
        lambda *xs: np.stack(xs).reshape(meta.seeds, rows, per_row, *xs[0].shape[1:]), *drawn
    )
    return pd.concat(frames, ignore_index=True), params


def _meta_keys(meta, count: int) -> jax.Array:
    """[seeds, count] keys: meta seed m's independent streams (init, meta-training, ...)."""
    return jax.vmap(lambda s: jax.random.split(jax.random.key(s), count))(
        np.arange(meta.seed, meta.seed + meta.seeds, dtype=np.uint32)
    )


def _pretrain(p: MetaPlan, keys: jax.Array) -> tuple[Any, dict, pd.DataFrame]:
    """Single-source and multi-task pretraining, 2 x seeds runs in one program (keys [2 *
    seeds], source runs first): (states, leaves [2, seeds, ...]; metrics, each [2 * seeds,
    segments]; the multi-task variants)."""
    config, meta, env = p.config, p.config.meta, p.evaluation.env
    segments = p.pretrain.trainer.num_logs
    table, multitask = _variant_streams(p, segments, 1, purpose=1)
    multitask = jax.tree.map(lambda x: x[:, :, 0], multitask)  # [seeds, segments]
    source = stack_params(
        config.env.id,
        env.default_params,
        [{**config.env.params, **meta.source}] * (meta.seeds * segments),
    )
    source = jax.tree.map(lambda x: x.reshape(meta.seeds, segments, *x.shape[1:]), source)
    variants = jax.tree.map(lambda a, b: np.concatenate([a, b]), source, multitask)
    program = shard_over(make_sequential(p.pretrain.trainer), (0, None, 0), p.evaluation.devices)
    states, metrics = program(keys, config.agent.hparams, _shaped(config, variants))
    states = jax.tree.map(lambda x: np.asarray(x).reshape(2, meta.seeds, *x.shape[1:]), states)
    return states, {k: np.asarray(v) for k, v in metrics.items()}, table


def _reptile(p: MetaPlan, keys: jax.Array, start: Any) -> tuple[Any, dict, pd.DataFrame]:
    """(meta-learned states [seeds, ...], history {name: [seeds, iterations]}, variants)."""
    config, r = p.config, p.config.meta.reptile
    table, variants = _variant_streams(p, r.iterations, r.meta_batch, purpose=0)
    meta_train = make_reptile(p.inner.trainer, r.iterations, r.outer_lr, r.anneal)
    states, history = shard_over(meta_train, (0, 0, None, 0), p.evaluation.devices)(
        keys, start, config.agent.hparams, _shaped(config, variants)
    )
    steps = r.meta_batch * p.inner_timesteps * np.arange(1, r.iterations + 1)
    history = {k: np.asarray(v) for k, v in history.items()}
    history["env_steps"] = np.broadcast_to(steps, history["inner_return"].shape)
    return jax.tree.map(np.asarray, states), history, table


def _es(p: MetaPlan, keys: jax.Array, init: Any) -> tuple[np.ndarray, dict, pd.DataFrame]:
    """(searched values [seeds, d], history {name: [seeds, generations(, d)]}, variants).
    init: the states the candidates fine-tune, leaves [seeds, ...], or None (scratch)."""
    config, es = p.config, p.config.meta.es
    space = SearchSpace.from_ranges(es.search)
    table, variants = _variant_streams(p, es.generations, es.variants, purpose=0)
    fitness = finetune_fitness(
        p.inner.trainer,
        space,
        config.agent.hparams,
        None if config.shaping is None else config.shaping.hparams,
        es.seeds,
        es.fitness,
    )
    es_run = make_es(
        fitness, space, es.algorithm, es.population, es.generations, es.std_init, es.lr
    )
    values, history = shard_over(es_run, (0, None if init is None else 0, 0), p.evaluation.devices)(
        keys, init, variants
    )
    history = {k: np.asarray(v) for k, v in history.items()}
    per_generation = es.population * es.variants * es.seeds * p.inner_timesteps
    steps = per_generation * np.arange(1, es.generations + 1)
    history["env_steps"] = np.broadcast_to(steps, history["fitness_mean"].shape)
    return np.asarray(values), history, table


def _with_searched(
    runs: Any, rows: np.ndarray, meta_seed: np.ndarray, space: SearchSpace, values: np.ndarray
) -> Any:
    """The runs axis with the searched fields of `rows` set to their meta seed's values
    (agent hyperparameters in hparams, shaping.<field> in the env params' ext)."""
    hparams, env_params = runs.hparams, runs.env_params

    def put(tree, field, column):
        new = np.array(getattr(tree, field))
        new[rows] = values[meta_seed[rows], column]
        return tree.replace(**{field: new})

    for i, name in enumerate(space.names):
        if name.startswith("shaping."):
            shaping = put(env_params.ext["shaping"], name.removeprefix("shaping."), i)
            env_params = env_params.replace(ext={**env_params.ext, "shaping": shaping})
        else:
            hparams = put(hparams, name, i)
    return dataclasses.replace(runs, hparams=hparams, env_params=env_params)


def _arm_runs(p: MetaPlan, es_values: np.ndarray | None) -> Prepared:
    """The evaluation runs with columns arm and meta_seed (checkpoint c = arm * seeds +
    meta seed), the ES arm's searched values set, and `arm` as the swept setting."""
    ev, meta = p.evaluation, p.config.meta
    runs = ev.runs
    table = runs.table.copy()
    arm_index, meta_seed = np.divmod(runs.checkpoint, meta.seeds)
    table.insert(1, "arm", np.asarray(p.arms)[arm_index])
    table.insert(2, "meta_seed", meta_seed)
    if es_values is not None:
        space = SearchSpace.from_ranges(meta.es.search)
        runs = _with_searched(
            runs, np.flatnonzero(table["arm"] == "es"), meta_seed, space, es_values
        )
        for name in space.names:
            shaped = name.startswith("shaping.")
            source = runs.env_params.ext["shaping"] if shaped else runs.hparams
            table[name] = np.asarray(getattr(source, name.removeprefix("shaping.")))
    runs = dataclasses.replace(runs, table=table, swept=("arm",))
    return dataclasses.replace(ev, runs=runs)


def _evaluate(p: MetaPlan, prepared: Prepared, init: Any, result: Any) -> pd.DataFrame:
    """One row per fine-tuning run: greedy return before / after, curve metrics, and
    jumpstart, final gain and transfer ratio against scratch on the same variant."""
    runs = prepared.runs
    target = split_params(runs.env_params)[0]
    seeds = runs.seeds + EVALUATION_SEED_OFFSET
    initial = initial_agent_states(prepared.trainer, runs, init)
    table = runs.table.copy()
    on = lambda states: evaluate_batch(p.evaluate, states, runs.hparams, target, seeds)
    values = {
        "initial_return": on(initial),
        "final_return": on(result.agent_states),
        **curve_metrics(result, p.config.meta.evaluation.threshold),
    }
    # A diverged run's evaluations are of a NaN network: no result (diverged_at marks it).
    table["diverged_at"] = diverged_at(result.metrics)
    for name, column in without_diverged(values, table["diverged_at"] >= 0).items():
        table[name] = column
    targets = [f"env.{k}" for k in runs.varied]
    against_scratch(table, table[table["arm"] == "scratch"], targets)
    return table


# Transfer's, less forgetting (the meta arms have no source task of their own to forget).
METRICS = tuple(m for m in TRANSFER_METRICS if m != "forgetting")


def _summaries(run_dir: Path, table: pd.DataFrame, targets: list[str]) -> pd.DataFrame:
    """The comparison tables (.csv and .md); returns meta_summary.

    meta_summary: per arm, each meta seed's mean over its runs as one sample, so the CI is
    over meta seeds, the independent unit of meta-training (runs of one meta seed share
    their initialisation); steps to threshold is left to the run-level tables, since one
    run that never gets there makes its seed's mean infinite.
    meta_by_variant (arm x held-out variant) and meta_by_seed (arm x meta seed): over runs.
    """
    metrics = [c for c in METRICS if c in table.columns]
    seeds = (
        table.groupby(["arm", "meta_seed"], sort=False)[
            [c for c in metrics if c != "steps_to_threshold"]
        ]
        .mean()
        .reset_index()
    )
    out = None
    for name, frame, by in (
        ("meta_summary", seeds, ["arm"]),
        ("meta_by_variant", table, ["arm"] + targets),
        ("meta_by_seed", table, ["arm", "meta_seed"]),
    ):
        values = {c: frame[c].to_numpy() for c in metrics if c in frame.columns}
        summary = aggregate(
            frame.assign(run=np.arange(len(frame))), values, by, iqm_of=("final_return",)
        )
        if frame is seeds:
            summary = summary.rename(columns={"runs": "meta_seeds"})
        results.write_csv(run_dir / f"{name}.csv", summary)
        results.write_text(run_dir / f"{name}.md", ci_markdown(summary))
        out = summary if out is None else out
    return out


def _write_meta_dir(
    path: Path, history: dict, variants: pd.DataFrame, fields: tuple[str, ...] = ()
) -> None:
    """metrics.npz (each [seeds, steps(, d)]), history.csv (long; a [seeds, steps, d]
    history as a column `<name>.<field>` per searched field) and variants.csv."""
    results.write_npz(path / "metrics.npz", history)
    seeds, steps = history["env_steps"].shape
    long = {
        "meta_seed": np.repeat(np.arange(seeds), steps),
        "step": np.tile(np.arange(steps), seeds),
    }
    for name, value in history.items():
        if value.ndim == 2:
            long[name] = value.reshape(-1)
        for i, field in enumerate(fields if value.ndim == 3 else ()):
            long[f"{name}.{field}"] = value[:, :, i].reshape(-1)
    results.write_csv(path / "history.csv", pd.DataFrame(long))
    results.write_csv(path / "variants.csv", variants)


def run_meta(config: ExperimentConfig, raw: dict, run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    started = time.perf_counter()
    p = plan(config)
    meta = config.meta
    write_config(run_dir, raw)
    keys = _meta_keys(meta, 4)  # init, meta-training, source, multitask
    scratch = jax.vmap(p.evaluation.agent.init, in_axes=(0, None))(keys[:, 0], config.agent.hparams)
    scratch = jax.tree.map(np.asarray, scratch)
    # 1. The baselines' pretraining (2 x seeds sequences in one program).
    timer = time.perf_counter()
    pretrained, pretrain_metrics, multitask_variants = _pretrain(
        p, jax.numpy.concatenate([keys[:, 2], keys[:, 3]])
    )
    pretrain_s = time.perf_counter() - timer
    results.write_npz(run_dir / "pretrain" / "metrics.npz", pretrain_metrics)
    results.write_csv(
        run_dir / "pretrain" / "runs.csv",
        pd.DataFrame(
            {
                "run": np.arange(2 * meta.seeds),
                "arm": np.repeat(["source", "multitask"], meta.seeds),
                "meta_seed": np.tile(np.arange(meta.seeds), 2),
            }
        ),
    )
    results.write_csv(run_dir / "pretrain" / "multitask_variants.csv", multitask_variants)
    source = jax.tree.map(lambda x: x[0], pretrained)
    # 2. Meta-training.
    timer = time.perf_counter()
    es_values = None
    if meta.method == "reptile":
        learned, history, variants = _reptile(p, keys[:, 1], scratch)
        if config.save_checkpoint:  # loadable as transfer.checkpoint
            checkpoint.save(
                run_dir / "meta" / "checkpoint",
                learned,
                agent=config.agent.name,
                spec=p.evaluation.env.spec,
                agent_config=config.agent.config,
                runs=pd.DataFrame({"run": range(meta.seeds), "meta_seed": range(meta.seeds)}),
                raw_config=raw,
            )
    else:
        learned = source if meta.es.init == "source" else scratch
        es_values, history, variants = _es(
            p, keys[:, 1], learned if meta.es.init == "source" else None
        )
        results.write_csv(
            run_dir / "meta" / "values.csv",
            pd.DataFrame(es_values, columns=list(meta.es.search)).assign(
                meta_seed=range(meta.seeds)
            ),
        )
    meta_s = time.perf_counter() - timer
    _write_meta_dir(
        run_dir / "meta", history, variants, tuple(meta.es.search) if meta.method == "es" else ()
    )
    # 3. Fine-tune every arm on the held-out variants (one program), evaluate, compare.
    inits = jax.tree.map(
        lambda *xs: np.concatenate(xs),
        scratch,
        source,
        jax.tree.map(lambda x: x[1], pretrained),
        learned,
    )
    prepared = _arm_runs(p, es_values)
    init = take(inits, prepared.runs.checkpoint)
    result = execute(prepared, init)
    write_run_dir(run_dir / "finetune", prepared, result, raw)
    table = _evaluate(p, prepared, init, result)
    results.write_csv(run_dir / "meta_runs.csv", table)
    targets = [f"env.{k}" for k in prepared.runs.varied]
    summary = _summaries(run_dir, table, targets)
    inner_runs = (
        (meta.reptile.iterations * meta.reptile.meta_batch)
        if meta.method == "reptile"
        else meta.es.generations * meta.es.population * meta.es.variants * meta.es.seeds
    )
    results.write_json(
        run_dir / "run.json",
        {
            **results.provenance(),
            "experiment": config.name,
            "method": meta.method,
            "env_steps_per_meta_seed": {
                "meta_training": inner_runs * p.inner_timesteps,
                "pretraining": p.pretrain.trainer.num_logs * p.inner_timesteps,
                "finetuning_per_run": prepared.trainer.steps_per_segment
                * prepared.trainer.num_logs,
            },
            "finetuning_runs": len(prepared.runs),
            "seconds": {
                "pretraining": pretrain_s,
                "meta_training": meta_s,
                "finetuning": result.info.compile_s + result.info.run_s,
                "total": time.perf_counter() - started,
            },
        },
    )
    if config.plot:
        metric = "inner_return" if meta.method == "reptile" else "fitness_mean"
        plot_learning_curves(
            pd.DataFrame({"run": range(meta.seeds)}),
            history,
            [],
            run_dir / "meta_training.png",
            metric=metric,
            title=f"{meta.method} meta-training ({meta.seeds} meta seeds)",
        )
        plot_facets(
            table.assign(run=np.arange(len(table))),
            result.metrics,
            targets,
            ["arm"],
            run_dir / "meta_curves.png",
            title=f"{config.agent.name} on held-out {config.env.id} variants",
        )
    write_sinks(run_dir, config.sinks, raw)
    best = summary.sort_values("final_return", ascending=False).iloc[0]
    print(
        f"meta ({meta.method}): {len(prepared.runs)} fine-tuning runs of {len(p.arms)} arms "
        f"in {time.perf_counter() - started:.1f}s; best final return: {best['group']} "
        f"{best['final_return']:.1f} -> {run_dir}"
    )
    warning = divergence_warning(result.metrics, "fine-tuning runs")
    if warning is not None:
        print(warning)
    return run_dir
