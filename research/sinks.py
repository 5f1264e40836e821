"""Optional metric sinks: TensorBoard event files and an offline Weights & Biases run.

Both are fed from a finished run directory's files only (runs.csv, metrics.npz), so they
show exactly what the run directory holds: per setting (the swept / varied columns), the
mean over its runs of every logged metric, at the logged env steps. Off by default
(config `sinks`); research/config/ checks their packages before anything compiles.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from research import results
from research.analysis.curves import groups
from research.config import SinksConfig

Series = tuple[str, np.ndarray, dict[str, np.ndarray]]  # (tag prefix, env_steps [L], tag -> [L])

# runs.csv columns that identify a run (or say how it went) rather than a setting
_RUN_COLUMNS = ("run", "seed", "checkpoint", "diverged_at")


def setting_series(
    runs: pd.DataFrame, metrics: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(env_steps [L], "<metric>/<setting>" -> mean over the setting's runs [L]) for every
    metric [R, L] but env_steps; settings are the distinct values of the runs table's
    setting columns (all but run, seed, checkpoint, diverged_at), e.g. "lr_0.001_env.length_0.5" or
    "all_runs". NaN where no run of the setting has a value."""
    by = [c for c in runs.columns if c not in _RUN_COLUMNS]
    out = {}
    for label, index in groups(runs, by):
        # TensorBoard allows only [-/\w.] in tags; the same tags go to wandb
        setting = re.sub(r"[^-/\w.]", "_", label.replace(", ", ","))
        for name, values in metrics.items():
            if name != "env_steps":
                with warnings.catch_warnings():  # a log where no run has a value stays NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    out[f"{name}/{setting}"] = np.nanmean(
                        np.asarray(values, np.float64)[index], axis=0
                    )
    return np.asarray(metrics["env_steps"][0]), out


def run_series(run_dir: str | Path) -> list[Series]:
    """The series of a run directory: its own metrics (prefix ""), or for a transfer run
    directory those of each phase directory holding metrics (prefix "<phase>/")."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.npz").exists():
        parts = [("", run_dir)]
    else:
        parts = [
            (f"{p.name}/", p) for p in sorted(run_dir.iterdir()) if (p / "metrics.npz").exists()
        ]
    return [(prefix, *setting_series(*results.load_metrics(path))) for prefix, path in parts]


def write_tensorboard(log_dir: str | Path, series: list[Series]) -> Path:
    """Event files in `log_dir` (replaced whole, atomically): one scalar per tag and
    logged env step; NaN points (no episode ended) are left out."""
    from tensorboardX import SummaryWriter

    with results.atomic_dir(log_dir) as tmp:
        writer = SummaryWriter(logdir=str(tmp))
        for prefix, steps, tags in series:
            for tag, values in tags.items():
                for step, value in zip(steps, values):
                    if np.isfinite(value):
                        writer.add_scalar(prefix + tag, float(value), int(step))
        writer.close()
    return Path(log_dir)


def write_wandb(
    run_dir: str | Path, series: list[Series], raw_config: dict, project: str | None = None
) -> None:
    """An offline wandb run under <run_dir>/wandb/ (`wandb sync` uploads it later) in
    `project` (None: the config's experiment_name) with the config and the series, each
    plotted against its own env steps."""
    import wandb

    run_dir = Path(run_dir)
    run = wandb.init(
        mode="offline",
        dir=str(run_dir),
        config=raw_config,
        project=project or str(raw_config.get("experiment_name", "research")),
        name=run_dir.name,
    )
    for prefix, steps, tags in series:
        step_key = f"{prefix}env_steps"
        run.define_metric(step_key)
        for metric in sorted({tag.split("/")[0] for tag in tags}):
            run.define_metric(f"{prefix}{metric}/*", step_metric=step_key)
        for i, step in enumerate(steps):
            run.log(
                {
                    step_key: int(step),
                    **{
                        prefix + tag: float(values[i])
                        for tag, values in tags.items()
                        if np.isfinite(values[i])
                    },
                }
            )
    run.finish()


def write_sinks(
    run_dir: str | Path, sinks: SinksConfig, raw_config: dict, project: str | None = None
) -> None:
    """Every enabled sink, from the files of the finished run directory; `project`: wandb's
    (None: the config's experiment_name; a transfer phase passes its own name)."""
    if not (sinks.tensorboard or sinks.wandb):
        return
    series = run_series(run_dir)
    if sinks.tensorboard:
        write_tensorboard(Path(run_dir) / "tensorboard", series)
    if sinks.wandb:
        write_wandb(run_dir, series, raw_config, project)
