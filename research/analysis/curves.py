"""Learning curves and final-performance summaries of a batch of runs, grouped by setting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from research.analysis.stats import bootstrap_mean_ci  # noqa: E402


def groups(runs: pd.DataFrame, by: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(label, run indices) per distinct setting of the `by` columns; one group if none."""
    if not by:
        return [("all runs", runs["run"].to_numpy())]
    out = []
    for key, frame in runs.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in zip(by, key))
        out.append((label, frame["run"].to_numpy()))
    return out


def summary_table(runs: pd.DataFrame, metrics: dict[str, np.ndarray], by: Sequence[str],
                  metric: str = "episode_return", last: int = 1) -> pd.DataFrame:
    """Per group: number of runs, mean of `metric` over the last `last` logs, 95% CI, median."""
    rows = []
    for label, index in groups(runs, by):
        with np.errstate(all="ignore"):
            final = np.nanmean(metrics[metric][index, -last:], axis=1)
        mean, low, high = bootstrap_mean_ci(final)
        rows.append({"group": label, "runs": len(index), f"final_{metric}": float(mean),
                     "ci95_low": float(low), "ci95_high": float(high),
                     "median": float(np.nanmedian(final)) if np.isfinite(final).any() else np.nan})
    return pd.DataFrame(rows)


def plot_learning_curves(runs: pd.DataFrame, metrics: dict[str, np.ndarray], by: Sequence[str],
                         path: str | Path, metric: str = "episode_return",
                         title: str = "") -> Path:
    """Mean `metric` against env steps with a 95% bootstrap band across each group's runs."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = metrics["env_steps"][0]
    for label, index in groups(runs, by):
        mean, low, high = bootstrap_mean_ci(metrics[metric][index])
        line, = ax.plot(steps, mean, label=f"{label} (n={len(index)})")
        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("environment steps per run")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
