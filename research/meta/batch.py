"""Host-side batching for meta programs: env variants drawn from per-field distributions,
and a program vmapped over independent meta-training runs, sharded over the devices."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research.config import FieldRange
from research.envs import stack_params
from research.platform import straight_line_threefry
from research.runner.execute import to_devices, to_host


def sample_overrides(
    rng: np.random.Generator,
    distribution: Mapping[str, FieldRange],
    num: int,
    integer: Sequence[str] = (),
) -> list[dict[str, float]]:
    """`num` independent draws of every field of `distribution`: uniform (log-uniform with
    `log`) on [low, high], or uniform among `values`. Fields in `integer` are rounded."""
    columns = {}
    for name, dist in distribution.items():
        if dist.values:
            x = np.asarray(dist.values)[rng.integers(0, len(dist.values), size=num)]
        elif dist.log:
            x = np.exp(rng.uniform(np.log(dist.low), np.log(dist.high), size=num))
        else:
            x = rng.uniform(dist.low, dist.high, size=num)
        columns[name] = np.round(x) if name in integer else x
    return [{name: float(x[i]) for name, x in columns.items()} for i in range(num)]


def sample_variants(
    rng: np.random.Generator,
    env_id: str,
    default_params: Any,
    fixed: Mapping[str, float],
    distribution: Mapping[str, FieldRange],
    num: int,
) -> tuple[list[dict[str, float]], Any]:
    """(overrides, params): `num` variants drawn from `distribution` over the `fixed`
    overrides, as dicts and as EnvParams whose every leaf is [num] (derived fields
    recomputed by research.envs.variants)."""
    integer = [
        k for k in distribution if isinstance(getattr(default_params, k, None), (int, np.integer))
    ]
    drawn = [{**fixed, **o} for o in sample_overrides(rng, distribution, num, integer)]
    return drawn, stack_params(env_id, default_params, drawn)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def shard_over(
    fn: Callable, in_axes: Sequence[int | None], devices: Sequence[jax.Device]
) -> Callable:
    """jit(vmap(fn, in_axes)) whose mapped axis is split over `devices` when their number
    divides it (else it runs whole on the first device): independent meta-training runs
    use the cores as independent XLA devices, as the runner's runs axis does. Over several
    processes (jax.distributed, `devices` spanning them) the axis must split
    (research.pipelines.run.check_processes refuses other meta seed counts). The outputs
    are numpy arrays, the same in every process. Typed keys are taken as top-level
    arguments only."""
    vmapped = jax.vmap(fn, in_axes=tuple(in_axes))

    @functools.partial(jax.jit, static_argnums=0)
    def program(is_key: tuple[bool, ...], *args):
        return vmapped(*(jax.random.wrap_key_data(a) if k else a for a, k in zip(args, is_key)))

    def call(*args):
        # Keys travel as their data: arrays of several processes are built from numpy.
        is_key = tuple(_is_key(a) for a in args)
        args = [jax.random.key_data(a) if k else a for a, k in zip(args, is_key)]
        size = next(
            jax.tree.leaves(a)[0].shape[0]
            for a, axis in zip(args, in_axes)
            if axis == 0 and jax.tree.leaves(a)
        )
        split = size % len(devices) == 0
        if not split and jax.process_count() > 1:
            raise ValueError(f"{size} meta runs do not split over {len(devices)} devices")
        mesh = Mesh(np.array(list(devices) if split else list(devices)[:1]), ("runs",))
        spec = lambda axis: NamedSharding(
            mesh, PartitionSpec("runs") if axis == 0 else PartitionSpec()
        )
        with straight_line_threefry():  # the first call for each shape lowers the program
            out = program(is_key, *(to_devices(a, spec(ax)) for a, ax in zip(args, in_axes)))
        return to_host(out)

    return call
