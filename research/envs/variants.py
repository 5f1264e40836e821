"""Environment variants: EnvParams fields set from the config, derived fields recomputed.

A variant is a dict of field overrides. `variant_params` builds one EnvParams
from it, `stack_params` a batch whose leaves carry a leading [R] axis so the
runner can vmap over variants like over seeds. Which fields are derived, which values
a field may take (`EnvEntry.ranges`) and which combinations are invalid (`EnvEntry.check`),
each environment's registry entry says.

Every config value is checked under its own path (`env.params.length`,
`transfer.evaluation.held_out.length`, `meta.variants.length.low`, ...): the pipelines pass
the path of the block the values come from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.config import ConfigError
from research.envs.registry import entry, field_range


def settable_fields(env_id: str, default_params: Any) -> dict[str, Any]:
    """Scalar EnvParams fields a config may set -> their default value."""
    derived = entry(env_id).derived
    out = {}
    for f in dataclasses.fields(default_params):
        value = getattr(default_params, f.name)
        if f.name not in derived and np.ndim(value) == 0:
            out[f.name] = value
    return out


def with_derived(env_id: str, params: Any) -> Any:
    """`params` with the env's derived fields recomputed from the others (jittable)."""
    for name, derive in entry(env_id).derived.items():
        params = params.replace(**{name: derive(params)})
    return params


def check_value(env_id: str, default_params: Any, name: str, value: Any, path: str) -> None:
    """ConfigError at `path` when `value` is outside the range of settable field `name`."""
    allowed = field_range(env_id, name)
    integer = isinstance(getattr(default_params, name), (int, np.integer))
    if allowed is not None and not allowed.allows(value):
        shown = int(value) if integer and float(value).is_integer() else value
        raise ConfigError(f"{path}: got {shown!r}; must be {allowed.describe(integer)}")


def check_fields(
    env_id: str, default_params: Any, overrides: Mapping[str, Any], path: str, suffix: str = ""
) -> None:
    """ConfigError at `path`.<field> for an override that is not a settable field, and at
    `path`.<field>`suffix` (e.g. ".low", a range's bound) for a value outside its range."""
    allowed = settable_fields(env_id, default_params)
    derived = entry(env_id).derived
    for name, value in overrides.items():
        at = f"{path}.{name}"
        if name in derived:
            raise ConfigError(
                f"{at}: '{name}' of {env_id} is derived from other fields and is "
                f"recomputed; set its inputs instead. Settable: {', '.join(allowed)}"
            )
        if name not in allowed:
            raise ConfigError(
                f"{at}: not a field of {env_id}'s EnvParams; settable: {', '.join(allowed)}"
            )
        if isinstance(allowed[name], (int, np.integer)) and not float(value).is_integer():
            raise ConfigError(f"{at}{suffix}: got {value!r}; must be an integer")
        check_value(env_id, default_params, name, value, at + suffix)


def variant_params(env_id: str, default_params: Any, overrides: Mapping[str, Any]) -> Any:
    """EnvParams with `overrides` applied and derived fields recomputed."""
    check_fields(env_id, default_params, overrides, "env.params")
    fields = {}
    for name, value in overrides.items():
        default = getattr(default_params, name)
        fields[name] = type(default)(value) if isinstance(default, (int, float)) else value
    return with_derived(env_id, default_params.replace(**fields))


def variant_grid(
    env_id: str,
    default_params: Any,
    fixed: Mapping[str, Any],
    variants: Mapping[str, Sequence[float]],
    *,
    fixed_path: str = "env.params",
    variants_path: str = "env.variants",
) -> list[dict[str, float]]:
    """Every combination of the `variants` values, each merged over `fixed`; ConfigError
    for a bad value (under `fixed_path` / `variants_path`.<field>) or combination."""
    check_fields(env_id, default_params, fixed, fixed_path)
    grid: list[dict[str, float]] = [dict(fixed)]
    for name, values in variants.items():
        for value in values:
            check_fields(env_id, default_params, {name: value}, variants_path)
        grid = [{**g, name: v} for g in grid for v in values]
    check = entry(env_id).check
    for point in grid if check else ():
        params = variant_params(env_id, default_params, point)
        problem = check(params)
        if problem:
            name, allowed = problem
            path = variants_path if name in variants else fixed_path
            raise ConfigError(f"{path}.{name}: got {getattr(params, name)!r}; must be {allowed}")
    return grid


def stack_params(env_id: str, default_params: Any, overrides: Sequence[Mapping[str, Any]]) -> Any:
    """EnvParams whose every leaf has a leading axis of len(overrides)."""
    params = [variant_params(env_id, default_params, o) for o in overrides]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params)


def interpolate(env_id: str, before: Any, after: Any, weight: jax.Array) -> Any:
    """EnvParams a fraction `weight` [] of the way from `before` to `after` (jittable).

    Float fields move linearly, integer ones switch at weight 1, and derived fields
    are recomputed, since e.g. masspole * length is not linear along the way.
    """

    def mix(a, b):
        if jnp.issubdtype(jnp.result_type(a), jnp.floating):
            return a + weight * (b - a)
        return jnp.where(weight >= 1.0, b, a)

    return with_derived(env_id, jax.tree.map(mix, before, after))
