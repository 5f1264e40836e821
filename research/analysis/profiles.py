"""Performance profiles: the fraction of runs scoring above tau, against tau, per setting."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.analysis.curves import _save  # noqa: E402
from research.analysis.stats import performance_profile, stratified_bootstrap_ci  # noqa: E402


def tau_grid(matrices: Sequence[tuple[str, np.ndarray]], num: int = 101) -> np.ndarray:
    """`num` taus [num] evenly over the range of every score of every setting (one grid,
    so that the curves compare); a unit range around the value if all scores are equal."""
    scores = np.concatenate([np.ravel(m) for _, m in matrices])
    scores = scores[np.isfinite(scores)]
    if not scores.size:
        return np.linspace(0.0, 1.0, num)
    low, high = float(scores.min()), float(scores.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, num)


def plot_performance_profiles(
    matrices: Sequence[tuple[str, np.ndarray]],
    path: str | Path,
    taus: np.ndarray | None = None,
    xlabel: str = "final return",
    title: str = "",
) -> Path:
    """A line per setting (label, scores [R, T]): the fraction of runs with score > tau
    (averaged over the T strata) against tau, with a stratified-bootstrap 95% band."""
    taus = tau_grid(matrices) if taus is None else np.asarray(taus, np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, scores in matrices:
        point, low, high = stratified_bootstrap_ci(scores, lambda x: performance_profile(x, taus))
        (line,) = ax.plot(taus, point, label=f"{label} (n={int(np.isfinite(scores).sum())})")
        ax.fill_between(taus, low, high, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(f"{xlabel} (tau)")
    ax.set_ylabel("fraction of runs with score > tau")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)
