"""Statistics across runs (usually seeds): means with bootstrap confidence intervals."""

from __future__ import annotations

import warnings

import numpy as np


def bootstrap_mean_ci(
    x: np.ndarray, confidence: float = 0.95, num_resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over axis 0 with a percentile-bootstrap CI, ignoring NaNs.

    x: [S, ...] (S samples, e.g. seeds). Returns (mean, low, high), each [...];
    NaN where a column has no finite sample. With S == 1 the interval is the point.
    """
    x = np.asarray(x, np.float64)
    finite = np.isfinite(x)
    count = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(finite, x, 0).sum(0) / np.maximum(count, 1), np.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.shape[0], size=(num_resamples, x.shape[0]))
    resampled = x[idx]  # [B, S, ...]
    ok = np.isfinite(resampled)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = np.where(ok, resampled, 0).sum(1) / ok.sum(1)  # [B, ...]
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():  # all-NaN columns are reported as NaN below
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(boot, alpha, axis=0)
        high = np.nanquantile(boot, 1.0 - alpha, axis=0)
    empty = count == 0
    return mean, np.where(empty, np.nan, low), np.where(empty, np.nan, high)
