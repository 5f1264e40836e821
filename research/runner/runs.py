"""The runs axis: seeds x hyperparameter points x env variants, as stacked arrays.

Order: variants outermost, then hyperparameter points, then seeds fastest, so
runs that differ only in their seed are adjacent. Seeds repeat across points
and variants (common random numbers), which makes paired comparisons sharper.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import pandas as pd

from research.config import SHAPING_SCHEDULES
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
    shaping: Any = None,
    shaping_grid: Mapping[str, Sequence[float]] | None = None,
    sweep_aligned: bool = False,
) -> RunsAxis:
    """Stacks every (checkpoint, variant, hparam point, seed) combination into a RunsAxis.

    env_shift: overrides that take effect during training (research.extensions.env_shift):
    env_params is then a `RunParams` whose ext["env_shift"] is each variant with the
    overrides applied.
    checkpoints: K > 0 adds an outermost axis of K initial states (column "checkpoint").
    shaping: base ShapingHParams, and shaping_grid the fields it sweeps: env_params is then
    a `RunParams` with ext["shaping"], columns "shaping.<field>" (schedules by name).
    sweep_aligned: the sweep's value lists are joint points (random search), not a grid.
    """
    sweep, env_variants = dict(sweep or {}), dict(env_variants or {})
    variants = variant_grid(env_id, default_env_params, env_fixed or {}, env_variants)
    points = (
        [dict(zip(sweep, values)) for values in zip(*sweep.values())]
        if sweep_aligned and sweep
        else grid_points(sweep)
    )
    shaping_grid = dict(shaping_grid or {})
    shaping_points = grid_points(shaping_grid)
    rows, variant_index, hparam_rows, shaping_rows, checkpoint = [], [], [], [], []
    combos = itertools.product(
        range(max(checkpoints, 1)), enumerate(variants), points, shaping_points, range(num_seeds)
    )
    for c, (v, variant), point, shaping_point, seed_index in combos:
        rows.append(
            {
                "run": len(rows),
                **({"checkpoint": c} if checkpoints else {}),
                "seed": base_seed + seed_index,
                **{k: point[k] for k in sweep},
                **{
                    f"shaping.{k}": SHAPING_SCHEDULES[int(x)] if k == "schedule" else x
                    for k, x in shaping_point.items()
                },
                **{f"env.{k}": variant[k] for k in env_variants},
            }
        )
        variant_index.append(v)
        hparam_rows.append(point)
        shaping_rows.append(shaping_point)
        checkpoint.append(c)
    hparams = _stack(base_hparams, hparam_rows)
    per_run = lambda params: jax.tree.map(lambda x: x[np.asarray(variant_index)], params)
    env_params = per_run(stack_params(env_id, default_env_params, variants))
    ext = {}
    if env_shift:
        after = stack_params(env_id, default_env_params, [{**v, **env_shift} for v in variants])
        ext["env_shift"] = per_run(after)
    if shaping is not None:
        ext["shaping"] = _stack(shaping, shaping_rows)
    if ext:
        env_params = RunParams(env=env_params, ext=ext)
    return RunsAxis(
        seeds=np.asarray([r["seed"] for r in rows], np.uint32),
        hparams=hparams,
        env_params=env_params,
        table=pd.DataFrame(rows),
        swept=tuple(sweep) + tuple(f"shaping.{k}" for k in shaping_grid),
        varied=tuple(env_variants),
        checkpoint=np.asarray(checkpoint) if checkpoints else None,
    )
