"""The runs axis: seeds x hyperparameter points x env variants, as stacked arrays.

Order: variants outermost, then hyperparameter points, then seeds fastest, so
runs that differ only in their seed are adjacent. Seeds repeat across points
and variants (common random numbers), which makes paired comparisons sharper.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import numpy as np
import pandas as pd

from research.envs import stack_params, variant_grid
from research.runner.extension import RunParams


@dataclass(frozen=True)
class RunsAxis:
    """R runs. `table` has one row per run: run, seed, and every swept hparam / variant field."""

    seeds: np.ndarray  # [R] uint32
    hparams: Any  # hparams dataclass, every leaf [R]
    env_params: Any  # EnvParams, every leaf [R]
    table: pd.DataFrame
    swept: tuple[str, ...]  # the hparam names that vary (and "shaping.<field>" ones)
    varied: tuple[str, ...]  # the env fields that vary
    checkpoint: np.ndarray | None = None  # [R] index of the run's initial state, if any

    def __len__(self) -> int:
        return len(self.seeds)


@dataclass(frozen=True)
class ExtAxis:
    """One traced extension's values across the runs (research.runner.extension).

    base: its traced settings, a flax struct of scalars; grid: the fields it sweeps
    (crossed with the other axes, inside the hyperparameter points); labels: names of the
    values of categorical fields (a schedule's index -> its name, for the runs table);
    per_checkpoint: a pytree whose leaves are [K, ...], one entry per checkpoint, given to
    each run by its checkpoint (e.g. the source data of behaviour cloning). The run's
    traced value is the stacked `base`, or (it, its per_checkpoint entry) when given, or
    the entry alone when base is None.
    """

    base: Any
    grid: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
    per_checkpoint: Any = None

    def label(self, field: str, value: float) -> Any:
        names = self.labels.get(field)
        return value if names is None else names[int(value)]


class RunCount(NamedTuple):
    """How many runs `build_runs` makes, by axis (nothing built): total = the product."""

    checkpoints: int
    variants: int
    settings: int  # hyperparameter x extension points (or zipped / random-search points)
    seeds: int

    @property
    def total(self) -> int:
        return self.checkpoints * self.variants * self.settings * self.seeds


def count_runs(
    *,
    num_seeds: int,
    sweep: Mapping[str, Sequence[float]] | None = None,
    env_variants: Mapping[str, Sequence[float]] | None = None,
    checkpoints: int = 0,
    extensions: Mapping[str, ExtAxis] | None = None,
    sweep_aligned: bool = False,
    zipped: bool = False,
) -> RunCount:
    """The runs of `build_runs` with these arguments, from the lists' lengths alone: checked
    before the table is built, which for 10^8 runs takes minutes and tens of GB."""
    sweep, env_variants = dict(sweep or {}), dict(env_variants or {})
    grids = [v for a in (extensions or {}).values() for v in a.grid.values()]
    if zipped:  # build_runs refuses lists of different lengths; the longest bounds it
        settings = max([len(v) for v in sweep.values()] + [len(v) for v in grids] + [1])
    else:
        points = (
            len(next(iter(sweep.values())))
            if sweep_aligned and sweep
            else math.prod(len(v) for v in sweep.values())
        )
        settings = points * math.prod(len(v) for v in grids)
    variants = math.prod(len(v) for v in env_variants.values())
    return RunCount(max(checkpoints, 1), variants, settings, num_seeds)


def grid_points(grid: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Cartesian product of named value lists, first name outermost; [{}] if empty."""
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def _stack(base: Any, points: Sequence[Mapping[str, float]]) -> Any:
    """A dataclass of scalars -> the same with every field [len(points)] float32."""
    return base.replace(
        **{
            f.name: np.asarray([p.get(f.name, getattr(base, f.name)) for p in points], np.float32)
            for f in dataclasses.fields(base)
        }
    )


def build_runs(
    env_id: str,
    default_env_params: Any,
    base_hparams: Any,
    *,
    num_seeds: int,
    base_seed: int = 0,
    sweep: Mapping[str, Sequence[float]] | None = None,
    env_fixed: Mapping[str, float] | None = None,
    env_variants: Mapping[str, Sequence[float]] | None = None,
    env_shift: Mapping[str, float] | None = None,
    checkpoints: int = 0,
    extensions: Mapping[str, ExtAxis] | None = None,
    sweep_aligned: bool = False,
    zipped: bool = False,
) -> RunsAxis:
    """Stacks every (checkpoint, variant, hparam point, seed) combination into a RunsAxis.

    env_shift: overrides that take effect during training (research.extensions.env_shift):
    env_params is then a `RunParams` whose ext["env_shift"] is each variant with the
    overrides applied.
    checkpoints: K > 0 adds an outermost axis of K initial states (column "checkpoint").
    extensions: each traced extension's values by its name (`ExtAxis`): env_params is
    then a `RunParams` with ext[name], columns "<name>.<field>" for the swept fields.
    sweep_aligned: the sweep's value lists are joint points (random search), not a grid.
    zipped: the i-th values of every list, the sweep's and the extensions' grids alike,
    form setting i (all lists of one length: a paired design such as one method per point).
    """
    sweep, env_variants = dict(sweep or {}), dict(env_variants or {})
    variants = variant_grid(env_id, default_env_params, env_fixed or {}, env_variants)
    points = (
        [dict(zip(sweep, values)) for values in zip(*sweep.values())]
        if sweep_aligned and sweep
        else grid_points(sweep)
    )
    extensions = dict(extensions or {})
    # One joint point per combination of every extension's swept fields: {name: {field: x}}.
    ext_points = [
        dict(zip(extensions, combo))
        for combo in itertools.product(*(grid_points(a.grid) for a in extensions.values()))
    ]
    if zipped:
        lengths = {len(v) for v in sweep.values()}
        lengths |= {len(v) for a in extensions.values() for v in a.grid.values()}
        if len(lengths) > 1:
            raise ValueError(f"zipped value lists of different lengths {sorted(lengths)}")
        n = lengths.pop() if lengths else 1
        pick = lambda grid, i: {k: values[i] for k, values in grid.items()}
        settings = [
            (pick(sweep, i), {name: pick(a.grid, i) for name, a in extensions.items()})
            for i in range(n)
        ]
    else:
        settings = list(itertools.product(points, ext_points))
    rows, variant_index, hparam_rows, ext_rows, checkpoint = [], [], [], [], []
    combos = itertools.product(
        range(max(checkpoints, 1)), enumerate(variants), settings, range(num_seeds)
    )
    for c, (v, variant), (point, ext_point), seed_index in combos:
        rows.append(
            {
                "run": len(rows),
                **({"checkpoint": c} if checkpoints else {}),
                "seed": base_seed + seed_index,
                **{k: point[k] for k in sweep},
                **{
                    f"{name}.{k}": extensions[name].label(k, x)
                    for name, values in ext_point.items()
                    for k, x in values.items()
                },
                **{f"env.{k}": variant[k] for k in env_variants},
            }
        )
        variant_index.append(v)
        hparam_rows.append(point)
        ext_rows.append(ext_point)
        checkpoint.append(c)
    hparams = _stack(base_hparams, hparam_rows)
    per_run = lambda params: jax.tree.map(lambda x: x[np.asarray(variant_index)], params)
    env_params = per_run(stack_params(env_id, default_env_params, variants))
    ext = {}
    if env_shift:
        after = stack_params(env_id, default_env_params, [{**v, **env_shift} for v in variants])
        ext["env_shift"] = per_run(after)
    by_checkpoint = lambda data: jax.tree.map(lambda x: np.asarray(x)[np.asarray(checkpoint)], data)
    for name, axis in extensions.items():
        values = None if axis.base is None else _stack(axis.base, [p[name] for p in ext_rows])
        if axis.per_checkpoint is not None:
            data = by_checkpoint(axis.per_checkpoint)
            values = data if values is None else (values, data)
        ext[name] = values
    if ext:
        env_params = RunParams(env=env_params, ext=ext)
    return RunsAxis(
        seeds=np.asarray([r["seed"] for r in rows], np.uint32),
        hparams=hparams,
        env_params=env_params,
        table=pd.DataFrame(rows),
        swept=tuple(sweep)
        + tuple(f"{name}.{k}" for name, axis in extensions.items() for k in axis.grid),
        varied=tuple(env_variants),
        checkpoint=np.asarray(checkpoint) if checkpoints else None,
    )
