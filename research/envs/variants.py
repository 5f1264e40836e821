"""Environment variants: EnvParams fields set from the config, derived fields recomputed.

A variant is a dict of field overrides. `variant_params` builds one EnvParams
from it, `stack_params` a batch whose leaves carry a leading [R] axis so the
runner can vmap over variants like over seeds. Which fields are derived, and which
combinations are invalid, each environment's registry entry says (`EnvEntry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.config import ConfigError
from research.envs.registry import entry


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


def check_fields(env_id: str, default_params: Any, overrides: Mapping[str, Any], path: str) -> None:
    """ConfigError at `path`.<field> for an override that is not a settable field."""
    allowed = settable_fields(env_id, default_params)
    derived = entry(env_id).derived
    for name, value in overrides.items():
        if name in derived:
            raise ConfigError(
                f"{path}.{name}: '{name}' of {env_id} is derived from other fields and is "
                f"recomputed; set its inputs instead. Settable: {', '.join(allowed)}"
            )
        if name not in allowed:
            raise ConfigError(
                f"{path}.{name}: not a field of {env_id}'s EnvParams; settable: "
                f"{', '.join(allowed)}"
            )
        if isinstance(allowed[name], (int, np.integer)) and not float(value).is_integer():
            raise ConfigError(f"{path}.{name}: got {value!r}; must be an integer")


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
) -> list[dict[str, float]]:
    """Every combination of the `variants` values, each merged over `fixed`."""
    check_fields(env_id, default_params, fixed, "env.params")
    grid: list[dict[str, float]] = [dict(fixed)]
    for name, values in variants.items():
        for value in values:
            check_fields(env_id, default_params, {name: value}, "env.variants")
        grid = [{**g, name: v} for g in grid for v in values]
    check = entry(env_id).check
    for point in grid if check else ():
        params = variant_params(env_id, default_params, point)
        problem = check(params)
        if problem:
            name, allowed = problem
            path = "env.variants" if name in variants else "env.params"
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
