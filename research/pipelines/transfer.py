"""Transfer: pretrain on source variant(s) -> checkpoint -> fine-tune online on target
variant(s), beside training from scratch on the same targets; then transfer metrics.

Each phase is one batched program (checkpoints x targets x fine-tuning points x seeds
for fine-tuning). Everything is prepared and checked -- configs, env fields, the
checkpoint's fit -- before anything compiles.

Run directory:
    source/ checkpoint/      pretraining runs and their states (absent when loading one)
    finetune/ scratch/       run directories as written by the train pipeline
    transfer_runs.csv        one row per fine-tuning and scratch run, every metric
    transfer_summary.{csv,md}  per setting: mean and 95% bootstrap CI of every metric
    transfer_curves.png      learning curves, fine-tuning settings against scratch
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from research import checkpoint, results
from research.analysis import transfer as metrics_lib
from research.analysis.curves import (
    aggregate,
    ci_markdown,
    diverged_at,
    plot_facets,
    plot_heatmap,
    without_diverged,
)
from research.config import ConfigError, ExperimentConfig, derive_phase, parse_experiment
from research.envs import entry, make_gymnax, stack_params, variant_grid
from research.pipelines.train import (
    Prepared,
    collect_source_data,
    divergence_warning,
    execute,
    load_checkpoint,
    load_source_data,
    longest_episode,
    needs_source_data,
    prepare,
    save_source_data,
    with_source,
    write_run_dir,
)
from research.runner import (
    evaluate_batch,
    initial_agent_states,
    make_evaluate,
    split_params,
    take,
)
from research.sinks import write_sinks


@dataclasses.dataclass(frozen=True)
class TransferPlan:
    """Everything checked and built for the three phases; nothing compiled yet."""

    source: Prepared
    source_raw: dict
    checkpoint_path: Path | None  # a checkpoint to load instead of pretraining
    loaded: Any  # its states, every leaf [K, ...] (None when pretraining)
    finetune: Prepared
    scratch: Prepared | None
    scratch_raw: dict  # the config scratch/ keeps: it reproduces scratch/ alone
    evaluate: Any
    held_out: list[dict[str, float]]
    # the env's per-episode metrics beyond the return (EnvEntry.episode_metrics): name -> evaluator
    metric_evaluators: dict[str, Any] = dataclasses.field(default_factory=dict)


def source_raw_config(raw: dict) -> dict:
    """The config source/ and the checkpoint keep: the transfer's own, as its source phase
    (research.config.derive_phase: the plain pretraining experiment)."""
    return {**raw, "phase": "source"}


def scratch_raw_config(raw: dict) -> dict:
    """The config scratch/ keeps: the transfer's own, as its scratch phase (the targets
    trained from scratch, no sweep, no PBT)."""
    return {**raw, "phase": "scratch"}


def finetune_raw_config(raw: dict, checkpoint_dir: Path) -> dict:
    """The config finetune/ keeps: the same transfer from the saved checkpoint, no scratch
    runs, so that it reproduces finetune/ alone (into <out>/finetune)."""
    transfer = {**raw["transfer"], "checkpoint": str(Path(checkpoint_dir).resolve())}
    return {**raw, "transfer": {**transfer, "scratch": False}}


def plan(config: ExperimentConfig, raw: dict) -> TransferPlan:
    t = config.transfer
    if config.env.shift is not None:
        raise ConfigError(
            "env.shift: a transfer experiment fine-tunes on fixed targets; "
            "run the shift as its own experiment (transfer: null)"
        )
    if t.checkpoint is None:
        source_raw, path = source_raw_config(raw), None
        # Checked under its own name first: parsed as a plain experiment, the source's
        # fields would be reported as env.params / env.variants.
        variant_grid(
            config.env.id,
            make_gymnax(config.env.id)[1],
            t.source.params,
            {k: v.values for k, v in t.source.variants.items()},
            fixed_path="transfer.source.params",
            variants_path="transfer.source.variants",
        )
        source_config = derive_phase(config, "source")
    else:
        path = Path(t.checkpoint)
        checkpoint.read_info(path)
        source_raw = yaml.safe_load((path / "config.yaml").read_text())
        source_config = parse_experiment(source_raw)
    source = prepare(source_config)
    if source.config.env.id != config.env.id:
        raise ConfigError(
            f"transfer.checkpoint: trained on {source.config.env.id!r}; "
            f"env.id is {config.env.id!r} (variants of one env transfer)"
        )
    finetune = prepare(config, finetune=t.finetune, checkpoints=len(source.runs), source=source)
    loaded = None if path is None else load_checkpoint(finetune, path)
    if path is not None and needs_source_data(config):
        finetune = with_source(finetune, load_source_data(path, config.checkpoint_states))
    scratch_raw = scratch_raw_config(raw)
    scratch = prepare(derive_phase(config, "scratch")) if t.scratch else None
    env = finetune.env
    num_steps = t.evaluation.num_steps or longest_episode(finetune)
    evaluate = make_evaluate(finetune.agent, env, t.evaluation.num_envs, num_steps)
    metric_evaluators = {
        name: make_evaluate(finetune.agent, env, t.evaluation.num_envs, num_steps, metric)
        for name, metric in entry(config.env.id).episode_metrics.items()
    }
    held_out = (
        variant_grid(
            config.env.id,
            env.default_params,
            config.env.params,
            {k: v.values for k, v in t.evaluation.held_out.items()},
            variants_path="transfer.evaluation.held_out",
        )
        if t.evaluation.held_out
        else []
    )
    return TransferPlan(
        source,
        source_raw,
        path,
        loaded,
        finetune,
        scratch,
        scratch_raw,
        evaluate,
        held_out,
        metric_evaluators,
    )


def _evaluations(plan: TransferPlan, prepared: Prepared, initial: Any, final: Any) -> dict:
    """Per-run evaluations of initial and final states on the targets (the return and the
    env's episode metrics), held-out variants and under observation noise, [R] each."""
    runs = prepared.runs
    seeds = runs.seeds + np.uint32(1_000_003)  # evaluation episodes differ from training's
    on = lambda states, params, noise=0.0, ev=plan.evaluate: evaluate_batch(
        ev, states, runs.hparams, params, seeds, noise
    )
    target = split_params(runs.env_params)[0]
    out = {"initial_return": on(initial, target), "final_return": on(final, target)}
    for name, ev_metric in plan.metric_evaluators.items():  # e.g. the max drawdown
        out[f"initial_{name}"] = on(initial, target, ev=ev_metric)
        out[f"final_{name}"] = on(final, target, ev=ev_metric)
    env = prepared.env
    for point in plan.held_out:
        params = stack_params(env.env_id, env.default_params, [point] * len(runs))
        label = ",".join(
            f"{k}={v:g}"
            for k, v in point.items()
            if k in plan.finetune.config.transfer.evaluation.held_out
        )
        out[f"heldout[{label}]"] = on(final, params)
    for noise in plan.finetune.config.transfer.evaluation.obs_noise:
        out[f"noise[{noise:g}]"] = on(final, target, noise)
    return out


def curve_metrics(result, threshold: float | None) -> dict:
    """Per-run metrics of a BatchResult's training curves: auc, and steps_to_threshold."""
    curves, steps = result.metrics["episode_return"], result.metrics["env_steps"][0]
    out = {"auc": metrics_lib.area_under_curve(curves)}
    if threshold is not None:
        out["steps_to_threshold"] = metrics_lib.time_to_threshold(curves, steps, threshold)
    if "source_return" in result.metrics:  # the forgetting measures (transfer.forgetting)
        source = result.metrics["source_return"]
        start = result.metrics["source_return_start"][:, 0]
        out["source_return_start"] = start
        out["source_return_end"] = source[:, -1]
        # end / start where returns are positive; for any sign 1 + (end - start) / |start|
        # (Acrobot's returns are negative: falling from -150 to -300 is retained -1, not 2)
        out["retained"] = 1.0 + (source[:, -1] - start) / np.abs(start)
        out["source_auc"] = np.nanmean(source, axis=1)  # over the measured segments
    return out


def run_transfer(config: ExperimentConfig, raw: dict, run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    started = time.perf_counter()
    p = plan(config, raw)
    t = config.transfer
    # 1. Pretrain (or load) the checkpoints.
    if p.checkpoint_path is None:
        source_result = execute(p.source)
        write_run_dir(run_dir / "source", p.source, source_result, p.source_raw)
        states = source_result.agent_states
        ckpt = checkpoint.save(
            run_dir / "checkpoint",
            states,
            agent=config.agent.name,
            spec=p.source.env.spec,
            agent_config=config.agent.config,
            runs=p.source.runs.table,
            raw_config=p.source_raw,
        )
        if config.checkpoint_states:
            source_data = collect_source_data(p.source, states)
            save_source_data(ckpt, source_data)
            if needs_source_data(config):
                p = dataclasses.replace(p, finetune=with_source(p.finetune, source_data))
    else:
        ckpt, states = p.checkpoint_path, p.loaded
    # 2. Fine-tune every checkpoint on every target; 3. scratch on the same targets.
    ft = p.finetune
    init = take(states, ft.runs.checkpoint)
    ft_result = execute(ft, init)
    write_run_dir(run_dir / "finetune", ft, ft_result, finetune_raw_config(raw, ckpt))
    phases = [("finetune", ft, ft_result, initial_agent_states(ft.trainer, ft.runs, init))]
    if p.scratch is not None:
        sc_result = execute(p.scratch)
        write_run_dir(run_dir / "scratch", p.scratch, sc_result, p.scratch_raw)
        phases.append(
            (
                "scratch",
                p.scratch,
                sc_result,
                initial_agent_states(p.scratch.trainer, p.scratch.runs, None),
            )
        )
    # 4. Evaluate and compare.
    tables = []
    for kind, prepared, result, initial in phases:
        # A diverged run's evaluations are of a NaN network (or, stopped, of its last finite
        # state): no result; it keeps its row, marked by diverged_at.
        at = diverged_at(result.metrics)
        values = without_diverged(
            {
                **_evaluations(p, prepared, initial, result.agent_states),
                **curve_metrics(result, t.threshold),
            },
            at >= 0,
        )
        table = prepared.runs.table.copy()
        table.insert(0, "kind", kind)
        table["diverged_at"] = at
        for name, v in values.items():
            table[name] = v
        tables.append(table)
    ft_table = tables[0]
    source_cols = [c for c in p.source.runs.table.columns if c.startswith("env.")]
    for col in source_cols:
        ft_table["source." + col[4:]] = p.source.runs.table[col].to_numpy()[ft.runs.checkpoint]
    # Forgetting: each checkpoint's return on its own source variant, before and after.
    src_runs = p.source.runs
    # the env's own params: a shaped source's are a RunParams (shaping's values beside them)
    src_env = split_params(src_runs.env_params)[0]
    src_params = take(src_env, ft.runs.checkpoint)
    before = evaluate_batch(
        p.evaluate,
        states,
        src_runs.hparams,
        src_env,
        src_runs.seeds + np.uint32(1_000_003),
    )
    if p.checkpoint_path is None:  # pretrained here: a diverged source is no checkpoint
        before = np.where(diverged_at(source_result.metrics) >= 0, np.nan, before)
    ft_table["source_return_before"] = before[ft.runs.checkpoint]
    ft_table["source_return_after"] = np.where(
        ft_table["diverged_at"] >= 0,
        np.nan,
        evaluate_batch(
            p.evaluate,
            ft_result.agent_states,
            ft.runs.hparams,
            src_params,
            ft.runs.seeds + np.uint32(1_000_003),
        ),
    )
    ft_table["forgetting"] = ft_table["source_return_before"] - ft_table["source_return_after"]
    target_cols = [f"env.{k}" for k in ft.runs.varied]
    if p.scratch is not None:
        against_scratch(ft_table, tables[1], target_cols)
    for m, col in STRENGTHS.items():  # a strength set once holds for every run
        if col not in ft_table and base_strength(config, m):
            ft_table[col] = base_strength(config, m)
    methods = [m for m, col in STRENGTHS.items() if col in ft_table]
    if methods:
        ft_table.insert(1, "method", method_labels(ft_table, methods))
        write_methods(run_dir, tables, target_cols)
    all_runs = pd.concat(tables, ignore_index=True)
    results.write_csv(run_dir / "transfer_runs.csv", all_runs)
    summary = _summary(
        tables, target_cols, ["source." + c[4:] for c in source_cols], list(ft.runs.swept)
    )
    results.write_csv(run_dir / "transfer_summary.csv", summary)
    results.write_text(run_dir / "transfer_summary.md", ci_markdown(summary))
    if config.plot and "source_return" in ft_result.metrics:
        path = run_dir / "forgetting_curves.png"
        plot_forgetting(path, ft, ft_table, ft_result.metrics, target_cols)
    results.write_text(run_dir / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    results.write_json(
        run_dir / "run.json",
        {
            **results.provenance(),
            "experiment": config.name,
            "checkpoint": str(ckpt),
            "seconds": time.perf_counter() - started,
        },
    )
    if config.plot:
        plot_transfer(run_dir)
        if source_cols and target_cols:  # the transfer matrix: source x target
            plot_heatmap(
                ft_table.assign(run=np.arange(len(ft_table))),
                ft_table["final_return"].to_numpy(),
                target_cols[0],
                "source." + source_cols[0][4:],
                run_dir / "transfer_matrix.png",
                label="final return after fine-tuning",
                title=config.name,
            )
    write_sinks(run_dir, config.sinks, raw)
    print(
        f"transfer: {len(ft.runs)} fine-tuning runs from {len(src_runs)} checkpoint(s)"
        f"{'' if p.scratch is None else f', {len(p.scratch.runs)} from scratch'} in "
        f"{time.perf_counter() - started:.1f}s -> {run_dir}"
    )
    if p.checkpoint_path is None:
        phases.insert(0, ("source", p.source, source_result, None))
    for kind, _, result, _ in phases:
        warning = divergence_warning(result.metrics, f"{kind} runs")
        if warning is not None:
            print(warning)
    return run_dir


def against_scratch(ft: pd.DataFrame, scratch: pd.DataFrame, target_cols: list[str]) -> None:
    """Adds jumpstart, transfer ratio and final gain against the mean scratch run of the
    same target variant (columns of `ft`, in place)."""
    means = scratch.groupby(target_cols or (lambda _: 0))[
        ["initial_return", "final_return", "auc"]
    ].mean()
    key = (
        ft[target_cols].apply(tuple, axis=1)
        if len(target_cols) > 1
        else (ft[target_cols[0]] if target_cols else pd.Series(0, index=ft.index))
    )
    ref = means.reindex(key.to_numpy())
    ft["jumpstart"] = ft["initial_return"].to_numpy() - ref["initial_return"].to_numpy()
    ft["final_gain"] = ft["final_return"].to_numpy() - ref["final_return"].to_numpy()
    ft["transfer_ratio"] = metrics_lib.transfer_ratio(ft["auc"].to_numpy(), ref["auc"].to_numpy())


METRICS = (
    "initial_return",
    "final_return",
    "auc",
    "steps_to_threshold",
    "jumpstart",
    "final_gain",
    "transfer_ratio",
    "forgetting",
    "retained",
    "source_auc",
)


def _summary(
    tables: list[pd.DataFrame], target_cols: list[str], source_cols: list[str], swept: list[str]
) -> pd.DataFrame:
    frames = []
    for table in tables:
        kind = table["kind"].iloc[0]
        by = target_cols + (source_cols + swept if kind == "finetune" else [])
        cols = [
            c
            for c in table.columns
            if c in METRICS or c.startswith(("heldout[", "noise[", "initial_", "final_"))
        ]
        runs = table.assign(run=np.arange(len(table)))
        frames.append(
            aggregate(
                runs,
                {c: table[c].to_numpy() for c in cols},
                by,
                extra={"kind": kind},
                iqm_of=("final_return",),
            )
        )
    return pd.concat(frames, ignore_index=True)


# A fine-tuning method's strength column in the runs table (swept: several values).
STRENGTHS = {
    "l2_init": "l2_init",
    "distill": "distill.weight",
    "bc": "bc.weight",
    "ewc": "ewc.weight",
    "guide": "guide.horizon",
}


def base_strength(config: ExperimentConfig, method: str) -> float:
    """The strength of a fine-tuning method the config sets for every run (0: off)."""
    if method == "l2_init":
        return getattr(config.agent.hparams, "l2_init", 0.0)
    block = getattr(config.transfer, method)
    if block is None:
        return 0.0
    return block.hparams.horizon if method == "guide" else block.hparams.weight


def method_labels(table: pd.DataFrame, methods: list[str]) -> list[str]:
    """Each run's methods at non-zero strength, e.g. "distill=1 linear 0.5+ewc=10", or
    "vanilla" (schedules other than constant are named, with their anneal or decay)."""
    labels = []
    for _, row in table.iterrows():
        parts = []
        for m in methods:
            strength = row[STRENGTHS[m]]
            if strength == 0:
                continue
            part = f"{m}={strength:g}"
            schedule = row.get(f"{m}.schedule", "constant")
            if schedule in ("linear", "threshold"):
                part += f" {schedule} {row.get(f'{m}.anneal_fraction', '')}".rstrip()
            elif schedule == "exponential":
                part += f" exp {row.get(f'{m}.decay', '')}".rstrip()
            elif schedule == "gated":
                part += f" gated {row.get(f'{m}.margin', '')}".rstrip()
            parts.append(part)
        labels.append("+".join(parts) or "vanilla")
    return labels


def write_methods(run_dir: Path, tables: list[pd.DataFrame], target_cols: list[str]) -> None:
    """methods.csv/md: per target and method (and scratch), the final target return, AUC,
    forgetting, retained and source AUC, with 95% bootstrap CIs over seeds x checkpoints."""
    frames = []
    for table in tables:
        kind = table["kind"].iloc[0]
        if kind != "finetune":
            table = table.assign(method=kind)
        cols = [c for c in ("initial_return", "final_return", "auc", "forgetting", "retained",
                            "source_auc") if c in table]  # fmt: skip
        values = {c: table[c].to_numpy() for c in cols}
        runs = table.assign(run=np.arange(len(table)))
        frames.append(aggregate(runs, values, [*target_cols, "method"]))
    frame = pd.concat(frames, ignore_index=True)
    results.write_csv(run_dir / "methods.csv", frame)
    results.write_text(run_dir / "methods.md", ci_markdown(frame))


def plot_forgetting(
    path: Path, ft: Prepared, table: pd.DataFrame, metrics: dict, target_cols: list[str]
) -> Path:
    """The source return during fine-tuning (at the start and the segments it was measured
    at) against env steps: a panel per target, a line with its 95% band per method (or
    setting of the swept values)."""
    measured = np.isfinite(metrics["source_return"]).any(0)
    start = metrics["source_return_start"][:, :1]
    curves = {
        "source_return": np.concatenate([start, metrics["source_return"][:, measured]], 1),
        "env_steps": np.concatenate([0 * start, metrics["env_steps"][:, measured]], 1),
    }
    lines = ["method"] if "method" in table else list(ft.runs.swept)
    title = f"{ft.config.agent.name} on {ft.config.env.id}: source return while fine-tuning"
    return plot_facets(table, curves, target_cols, lines, path, "source_return", title)


def plot_transfer(run_dir: str | Path) -> Path:
    """transfer_curves.png from a transfer run directory's files only: a panel per target
    variant; in it a line per fine-tuning setting, and scratch."""
    run_dir = Path(run_dir)
    runs = pd.read_csv(run_dir / "transfer_runs.csv")
    runs["run"] = np.arange(len(runs))
    parts = [results.load_metrics(run_dir / kind)[1] for kind in runs["kind"].unique()]
    metrics = {k: np.concatenate([m[k] for m in parts]) for k in ("episode_return", "env_steps")}
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    swept = [k for k, v in (raw.get("sweep") or {}).items() if v is not None]
    targets = [c for c in runs.columns if c.startswith("env.")]
    lines = ["kind"] + [c for c in runs.columns if c.startswith("source.")] + swept
    return plot_facets(
        runs.fillna({c: "-" for c in lines}),
        metrics,
        targets,
        lines,
        run_dir / "transfer_curves.png",
        title=f"{raw['agent']['name']} on {raw['env']['id']}: fine-tuning vs scratch",
    )
