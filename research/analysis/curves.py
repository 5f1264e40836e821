"""Learning curves and final-performance summaries of a batch of runs, grouped by setting."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from research.analysis.stats import bootstrap_mean_ci, iqm, stratified_bootstrap_ci  # noqa: E402


def groups(runs: pd.DataFrame, by: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(label, run indices) per distinct setting of the `by` columns; one group if none."""
    if not by:
        return [("all runs", runs["run"].to_numpy())]
    out = []
    for key, frame in runs.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in zip(by, key)
        )
        out.append((label, frame["run"].to_numpy()))
    return out


def diverged_at(metrics: dict[str, np.ndarray]) -> np.ndarray:
    """Per run, the first update whose losses or parameters were not finite, -1 for a run
    that never diverged (and for every run of metrics logged before the check), [R]."""
    if "diverged_at" not in metrics:
        return np.full(len(metrics["env_steps"]), -1, np.int64)
    return np.asarray(metrics["diverged_at"])[:, -1].astype(np.int64)


def without_diverged(values: dict[str, np.ndarray], diverged: np.ndarray) -> dict:
    """Per-run values ([R] each) with NaN for every run that diverged (`diverged` [R]
    bool): a measure of a diverged run's final state (an evaluation) is no result."""
    return {k: np.where(diverged, np.nan, np.asarray(v, np.float64)) for k, v in values.items()}


def summary_table(
    runs: pd.DataFrame,
    metrics: dict[str, np.ndarray],
    by: Sequence[str],
    metric: str = "episode_return",
    last: int = 1,
) -> pd.DataFrame:
    """Per group: number of runs, of them diverged (where the metrics say), mean of
    `metric` over the last `last` logs, 95% CI, median. A diverged run logs NaN from the
    segment it diverged in on (research.runner.train), so it counts in `runs` and
    `diverged` but adds no return."""
    diverged = diverged_at(metrics) >= 0 if "diverged_at" in metrics else None
    rows = []
    for label, index in groups(runs, by):
        with warnings.catch_warnings():  # a run with no finished episode there: NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            final = np.nanmean(metrics[metric][index, -last:], axis=1)
        mean, low, high = bootstrap_mean_ci(final)
        rows.append(
            {
                "group": label,
                "runs": len(index),
                **({} if diverged is None else {"diverged": int(diverged[index].sum())}),
                f"final_{metric}": float(mean),
                "ci95_low": float(low),
                "ci95_high": float(high),
                "median": float(np.nanmedian(final)) if np.isfinite(final).any() else np.nan,
            }
        )
    return pd.DataFrame(rows)


def aggregate(
    runs: pd.DataFrame,
    values: dict[str, np.ndarray],
    by: Sequence[str],
    extra: dict | None = None,
    iqm_of: Sequence[str] = (),
) -> pd.DataFrame:
    """Per group of the `by` columns: runs, and for every per-run array in `values` ([R])
    its mean with a 95% bootstrap CI (NaNs ignored; +inf, e.g. a threshold never
    reached, counted as the fraction `<name>_never`); for the names in `iqm_of` also
    `<name>_iqm`, the interquartile mean with its 95% bootstrap CI."""
    rows = []
    for label, index in groups(runs, by):
        row = {"group": label, "runs": len(index), **(extra or {})}
        for name, per_run in values.items():
            x = np.asarray(per_run, np.float64)[index]
            if np.isinf(x).any():
                row[f"{name}_never"] = float(np.isposinf(x).mean())
                x = np.where(np.isinf(x), np.nan, x)
            mean, low, high = bootstrap_mean_ci(x)
            row.update(
                {name: float(mean), f"{name}_ci_low": float(low), f"{name}_ci_high": float(high)}
            )
            if name in iqm_of:
                point, low, high = stratified_bootstrap_ci(x[:, None], iqm)
                row.update(
                    {
                        f"{name}_iqm": float(point),
                        f"{name}_iqm_ci_low": float(low),
                        f"{name}_iqm_ci_high": float(high),
                    }
                )
        rows.append(row)
    return pd.DataFrame(rows)


def ci_markdown(table: pd.DataFrame) -> str:
    """A table from `aggregate` as markdown, each metric one "mean [low, high]" cell."""
    return ci_cells(table).to_markdown(index=False, floatfmt=".4g")


def ci_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each column `x` that has `x_ci_low` / `x_ci_high` beside it turned
    into text cells "x [low, high]" ("n/a" where x is NaN), the bound columns dropped."""
    out = table.copy()
    for name in [c for c in table.columns if f"{c}_ci_low" in table.columns]:
        cells = [
            f"{m:.4g} [{lo:.4g}, {hi:.4g}]" if np.isfinite(m) else "n/a"
            for m, lo, hi in zip(table[name], table[f"{name}_ci_low"], table[f"{name}_ci_high"])
        ]
        out[name] = cells
        out = out.drop(columns=[f"{name}_ci_low", f"{name}_ci_high"])
    return out


def _draw_groups(
    ax, runs: pd.DataFrame, metrics: dict[str, np.ndarray], by: Sequence[str], metric: str
) -> None:
    steps = metrics["env_steps"][0]
    found = groups(runs, by)
    # Past 10 lines the default cycle repeats its colours: take distinct ones from tab20.
    colors = plt.get_cmap("tab20").colors if len(found) > 10 else [None] * len(found)
    for (label, index), color in zip(found, colors):
        mean, low, high = bootstrap_mean_ci(metrics[metric][index])
        (line,) = ax.plot(steps, mean, label=f"{label} (n={len(index)})", color=color)
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps per run")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.tight_layout()
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_learning_curves(
    runs: pd.DataFrame,
    metrics: dict[str, np.ndarray],
    by: Sequence[str],
    path: str | Path,
    metric: str = "episode_return",
    title: str = "",
    marks: Sequence[float] = (),
) -> Path:
    """Mean `metric` against env steps with a 95% bootstrap band across each group's runs;
    vertical lines at the env steps in `marks` (e.g. where the environment changed)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for mark in marks:
        ax.axvline(mark, color="grey", linestyle="--", linewidth=1)
    _draw_groups(ax, runs, metrics, by, metric)
    ax.set_title(title)
    return _save(fig, path)


def plot_facets(
    runs: pd.DataFrame,
    metrics: dict[str, np.ndarray],
    facet_by: Sequence[str],
    line_by: Sequence[str],
    path: str | Path,
    metric: str = "episode_return",
    title: str = "",
) -> Path:
    """One panel per setting of `facet_by` (e.g. the target variant), a line with a 95%
    band per setting of `line_by` inside it."""
    panels = groups(runs, facet_by)
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, (label, index) in zip(axes.flat, panels):
        sub = runs.iloc[index].reset_index(drop=True).assign(run=np.arange(len(index)))
        _draw_groups(ax, sub, {k: v[index] for k, v in metrics.items()}, line_by, metric)
        ax.set_title(label, fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def final_values(metrics: dict[str, np.ndarray], metric: str = "episode_return") -> np.ndarray:
    """Each run's last logged value of `metric`, [R]."""
    return np.asarray(metrics[metric])[:, -1]


def plot_sensitivity(
    runs: pd.DataFrame,
    values: np.ndarray,
    param: str,
    path: str | Path,
    by: Sequence[str] = (),
    ylabel: str = "final return",
    title: str = "",
) -> Path:
    """Mean of per-run `values` [R] against the swept `param`, 95% bootstrap band; a line per
    setting of the `by` columns. Log x-axis when the values span over a decade."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, index in groups(runs, by):
        sub = runs.iloc[index]
        xs = np.sort(sub[param].unique())
        stats = [bootstrap_mean_ci(values[index][sub[param].to_numpy() == x]) for x in xs]
        mean, low, high = (np.array([s[i] for s in stats]) for i in range(3))
        (line,) = ax.plot(xs, mean, marker="o", label=label)
        ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
    xs = runs[param].to_numpy(dtype=float)
    if (xs > 0).all() and xs.max() / xs.min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_heatmap(
    runs: pd.DataFrame,
    values: np.ndarray,
    x: str,
    y: str,
    path: str | Path,
    label: str = "final return",
    title: str = "",
) -> Path:
    """Mean of per-run `values` [R] on the grid of two swept columns (e.g. two
    hyperparameters, or source x target variants: a transfer matrix)."""
    table = runs.assign(_value=values).pivot_table(
        index=y, columns=x, values="_value", aggfunc="mean"
    )
    fig, ax = plt.subplots(figsize=(1.2 * table.shape[1] + 3, 0.8 * table.shape[0] + 2))
    image = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto", origin="lower")
    fmt = lambda v: f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)
    ax.set_xticks(range(table.shape[1]), [fmt(v) for v in table.columns])
    ax.set_yticks(range(table.shape[0]), [fmt(v) for v in table.index])
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, f"{v:.3g}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=label)
    return _save(fig, path)


def plot_scaling(frame: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Throughput and memory against the number of parallel runs R, a line per `label`.

    frame: one row per measurement with columns label, runs, env_steps_per_s, peak_rss_mib
    and device_peak_mib (NaN where the backend does not report it). Both axes are log scale:
    ideal batching is a flat-then-rising throughput line and memory that grows with R only
    once the batch dominates the program."""
    fig, (speed, memory) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, rows in frame.sort_values("runs").groupby("label", sort=False):
        (line,) = speed.plot(rows["runs"], rows["env_steps_per_s"], marker="o", label=label)
        memory.plot(
            rows["runs"],
            rows["peak_rss_mib"],
            marker="o",
            color=line.get_color(),
            label=f"{label}: host RSS",
        )
        device = rows["device_peak_mib"].astype(float)
        if device.notna().any():
            memory.plot(
                rows["runs"],
                device,
                marker="s",
                linestyle="--",
                color=line.get_color(),
                label=f"{label}: device peak",
            )
    for ax, ylabel in ((speed, "env steps / s"), (memory, "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("parallel runs R")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
