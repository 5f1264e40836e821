"""Transfer metrics of fine-tuning runs against runs from scratch (numpy, per run).

Curves are [R, L] (R runs, L logs of the mean training return); env_steps [L].
Conventions: a curve's NaN logs (no episode ended yet) are ignored; a threshold
never reached gives +inf; ratios divide by |scratch| so that they keep their sign
for negative returns (Pendulum, Acrobot, MountainCar).
"""

from __future__ import annotations

import warnings

import numpy as np


def area_under_curve(curves: np.ndarray) -> np.ndarray:
    """Mean return over the logs, [R]: the area under the curve per env step (NaN for a
    run with no return logged, e.g. one that diverged at once)."""
    with warnings.catch_warnings():  # an all-NaN row's "Mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(curves, axis=1)


def time_to_threshold(curves: np.ndarray, env_steps: np.ndarray, threshold: float) -> np.ndarray:
    """Env steps at the first log whose return >= threshold, [R] (+inf if never)."""
    reached = np.nan_to_num(curves, nan=-np.inf) >= threshold
    first = np.argmax(reached, axis=1)
    return np.where(reached.any(1), np.asarray(env_steps, np.float64)[first], np.inf)


def transfer_ratio(auc: np.ndarray, auc_scratch: float) -> np.ndarray:
    """(AUC - AUC_scratch) / |AUC_scratch|: > 0 when fine-tuning learned more over training."""
    return (auc - auc_scratch) / np.maximum(abs(auc_scratch), 1e-8)


def drop_and_recovery(
    curves: np.ndarray, env_steps: np.ndarray, change_log: int, tolerance: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Adaptation to an env change taking effect after log `change_log - 1`.

    before: mean of the logs before the change; drop = before - min(return after);
    recovery: env steps from the change until the first log after it whose return is
    back within tolerance * |before| of `before` (+inf if never). Both [R].
    """
    with np.errstate(all="ignore"):
        before = np.nanmean(curves[:, :change_log], axis=1)
        after = curves[:, change_log:]
        drop = before - np.nanmin(after, axis=1)
    recovered = np.nan_to_num(after, nan=-np.inf) >= (before - tolerance * np.abs(before))[:, None]
    start = np.asarray(env_steps, np.float64)[change_log - 1]
    steps = np.asarray(env_steps, np.float64)[change_log:]
    first = np.argmax(recovered, axis=1)
    return drop, np.where(recovered.any(1), steps[first] - start, np.inf)
