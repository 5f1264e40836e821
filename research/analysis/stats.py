"""Statistics across runs (usually seeds): means with bootstrap confidence intervals, and
robust aggregates of a score matrix with stratified-bootstrap confidence intervals.

Score matrices are [..., R, T]: R runs (seeds) of each of T tasks, the strata (e.g. env
variants). NaN marks a missing score (no episode ended) and is ignored everywhere.
Semantics follow Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice":
interquartile mean, optimality gap, probability of improvement and performance profiles,
with percentile CIs from a bootstrap that resamples runs within each task only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np

# Resamples are drawn in batches of at most this many scores, so that a setting with many
# thousands of runs bootstraps in bounded memory (2000 x 16384 floats would be 256 MiB).
_BATCH_SCORES = 1 << 21


def _percentile_interval(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap statistics boot [B, ...] -> (low, high), each [...]."""
    alpha = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():  # an all-NaN column is reported as NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return (np.nanquantile(boot, alpha, axis=0), np.nanquantile(boot, 1.0 - alpha, axis=0))


def _in_batches(
    num: int, scores_per_resample: int, draw: Callable[[int], np.ndarray]
) -> np.ndarray:
    """draw(k) -> [k, ...] statistics of k resamples, called until `num` are drawn; [num, ...]."""
    step = max(1, _BATCH_SCORES // max(scores_per_resample, 1))
    return np.concatenate([draw(min(step, num - start)) for start in range(0, num, step)])


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
    low, high = _percentile_interval(boot, confidence)
    empty = count == 0
    return mean, np.where(empty, np.nan, low), np.where(empty, np.nan, high)


# --------------------------------------------------------------------------- aggregates


def _pooled_sorted(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores [..., R, T] pooled over runs and tasks and sorted, NaNs last:
    (sorted [..., R*T], number of non-NaN scores [...])."""
    x = np.asarray(scores, np.float64)
    flat = x.reshape(*x.shape[:-2], -1)
    return np.sort(flat, axis=-1), (~np.isnan(flat)).sum(-1)


def _at(sorted_scores: np.ndarray, position: np.ndarray) -> np.ndarray:
    """sorted_scores [..., N] at a position [...] per row (clipped into range), [...]."""
    position = np.clip(position, 0, sorted_scores.shape[-1] - 1)
    return np.take_along_axis(sorted_scores, position[..., None], axis=-1)[..., 0]


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean of scores [..., R, T] pooled over runs and tasks, [...].

    Of the n non-NaN scores, sorted, floor(n / 4) are dropped at each end and the rest
    averaged (scipy.stats.trim_mean(x, 0.25) on the pooled scores). NaN when n == 0.
    """
    s, n = _pooled_sorted(scores)
    cut = n // 4
    position = np.arange(s.shape[-1])
    keep = (position >= cut[..., None]) & (position < (n - cut)[..., None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(keep, s, 0.0).sum(-1) / (n - 2 * cut)


def median(scores: np.ndarray) -> np.ndarray:
    """Median of scores [..., R, T] pooled over runs and tasks, [...].

    Pooled, unlike rliable's median of per-task means: with one task (one setting, no env
    variants, the common case here) that one would equal the mean.
    """
    s, n = _pooled_sorted(scores)
    middle = (_at(s, (n - 1) // 2) + _at(s, n // 2)) / 2
    return np.where(n > 0, middle, np.nan)


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over tasks of each task's mean over runs, [...] from scores [..., R, T]:
    every task weighs the same even when NaNs leave them with different run counts."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.nanmean(np.asarray(scores, np.float64), axis=-2), axis=-1)


def optimality_gap(scores: np.ndarray, threshold: float) -> np.ndarray:
    """threshold - mean(min(score, threshold)) over runs and tasks, [...] from [..., R, T].

    How far runs fall short of `threshold` (e.g. the env's maximum return) on average;
    a score above the threshold counts as reaching it, so one lucky run cannot hide others.
    """
    clipped = np.minimum(np.asarray(scores, np.float64), threshold)  # NaN stays NaN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return threshold - np.nanmean(clipped, axis=(-2, -1))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Fraction of runs with score > tau, per task, averaged over tasks: [..., K] from
    scores [..., R, T] and ascending taus [K] (the run-score distribution)."""
    x = np.asarray(scores, np.float64)
    taus = np.asarray(taus, np.float64)
    if np.any(np.diff(taus) < 0):
        raise ValueError("performance_profile: taus must be ascending")
    num_runs, k = x.shape[-2], taus.size
    present = ~np.isnan(x)
    # A score is above tau_j exactly for the j below its count of smaller taus, so one
    # histogram of those counts per task gives every tau at once: O(R log K), not O(R K).
    # NaN counts 0: above no tau.
    below = np.where(present, np.searchsorted(taus, x, side="left"), 0)
    below = np.moveaxis(below, -2, -1).reshape(-1, num_runs)  # [G, R], G = batch x tasks
    offsets = np.arange(below.shape[0])[:, None] * (k + 1)
    hist = np.bincount((offsets + below).ravel(), minlength=below.shape[0] * (k + 1))
    above = np.cumsum(hist.reshape(-1, k + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]  # [G, K]
    count = present.sum(-2).reshape(-1, 1)
    with warnings.catch_warnings():  # a task without scores gives NaN, ignored below
        warnings.simplefilter("ignore", RuntimeWarning)
        fraction = (above / count).reshape(*x.shape[:-2], x.shape[-1], k)  # [..., T, K]
        return np.nanmean(fraction, axis=-2)


AGGREGATES = ("iqm", "mean", "median", "optimality_gap")


def aggregates(scores: np.ndarray, threshold: float) -> np.ndarray:
    """The AGGREGATES of scores [..., R, T] stacked: [..., 4] (iqm, mean, median, gap)."""
    return np.stack(
        [iqm(scores), mean(scores), median(scores), optimality_gap(scores, threshold)], axis=-1
    )


# --------------------------------------------------------------------------- bootstrap


def _draw_indices(rng: np.random.Generator, num: int, sizes: list[int]) -> list[np.ndarray]:
    """Per size n, [num, n] indices uniform in [0, n), all from one [num, sum(sizes)] draw of
    uniforms: drawing num = a + b at once or a then b gives the same indices, so batching
    the resamples to bound memory does not change any result."""
    uniform = rng.random((num, sum(sizes)))
    bounds = np.cumsum([0, *sizes])
    return [
        np.minimum((uniform[:, lo:hi] * n).astype(np.int64), n - 1)
        for lo, hi, n in zip(bounds[:-1], bounds[1:], sizes)
    ]


def stratified_resamples(scores: np.ndarray, num: int, rng: np.random.Generator) -> np.ndarray:
    """`num` stratified bootstrap resamples of scores [R, T]: each task's non-NaN scores
    are drawn with replacement from that task alone, so every resample keeps the mix of
    tasks. [num, R, T], NaN where a task has fewer than R scores."""
    x = np.asarray(scores, np.float64)
    present = [x[~np.isnan(x[:, task]), task] for task in range(x.shape[1])]
    out = np.full((num, *x.shape), np.nan)
    for task, (values, draws) in enumerate(
        zip(present, _draw_indices(rng, num, [v.size for v in present]))
    ):
        out[:, : values.size, task] = values[draws]
    return out


def stratified_bootstrap_ci(
    scores: np.ndarray,
    statistic: Callable[[np.ndarray], np.ndarray],
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """statistic(scores) with a percentile CI from a stratified bootstrap.

    scores [R, T]; statistic maps [..., R, T] -> [..., *S] (e.g. iqm, or a lambda around
    aggregates / performance_profile). Returns (point, low, high), each [*S].
    """
    x = np.asarray(scores, np.float64)
    rng = np.random.default_rng(seed)
    boot = _in_batches(num_resamples, x.size, lambda k: statistic(stratified_resamples(x, k, rng)))
    low, high = _percentile_interval(boot, confidence)
    return np.asarray(statistic(x)), low, high


# --------------------------------------------------------------------------- improvement


def _midranks(z: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis of z [..., N], tied values sharing the mean of
    their positions, [..., N]."""
    order = np.argsort(z, axis=-1, kind="stable")
    s = np.take_along_axis(z, order, axis=-1)
    n = z.shape[-1]
    position = np.arange(n)
    starts = np.ones(s.shape, bool)
    starts[..., 1:] = s[..., 1:] != s[..., :-1]
    ends = np.ones(s.shape, bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n), -1), axis=-1), -1)
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return ranks


def prob_greater(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y) / 2 from samples x [..., n] and y [..., m] (no NaNs), [...]:
    the Mann-Whitney U statistic of x divided by n * m, from ranks in O((n + m) log(n + m))."""
    n, m = x.shape[-1], y.shape[-1]
    ranks = _midranks(np.concatenate([x, y], axis=-1))
    return (ranks[..., :n].sum(-1) - n * (n + 1) / 2) / (n * m)


def _task_samples(x: np.ndarray, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per task, the non-NaN scores of x [Rx, T] and y [Ry, T]; tasks where either has
    none are left out."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} tasks, y {y.shape[1]}: they must be the same")
    pairs = [(x[~np.isnan(x[:, t]), t], y[~np.isnan(y[:, t]), t]) for t in range(x.shape[1])]
    return [(a, b) for a, b in pairs if a.size and b.size]


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y) from x [Rx, T] and y [Ry, T]: the mean over tasks of the probability that a
    run of x scores higher than a run of y on that task, ties counting 1/2 (NaNs ignored;
    NaN when no task has scores in both)."""
    tasks = _task_samples(x, y)
    return float(np.mean([prob_greater(a, b) for a, b in tasks])) if tasks else np.nan


def probability_of_improvement_ci(
    x: np.ndarray,
    y: np.ndarray,
    confidence: float = 0.95,
    num_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """probability_of_improvement(x, y) with a percentile CI from resampling x's and y's
    runs independently within each task. Returns (point, low, high)."""
    tasks = _task_samples(x, y)
    if not tasks:
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)

    def draw(k: int) -> np.ndarray:
        draws = iter(_draw_indices(rng, k, [s.size for pair in tasks for s in pair]))
        return np.mean([prob_greater(a[next(draws)], b[next(draws)]) for a, b in tasks], axis=0)

    boot = _in_batches(num_resamples, sum(a.size + b.size for a, b in tasks), draw)
    low, high = _percentile_interval(boot, confidence)
    return probability_of_improvement(x, y), float(low), float(high)
