"""Environments: registry, variants, and the wrapper that owns the gymnax step API."""

from research.envs.registry import DISCRETE_STATE_IDS, EnvSpec, available, make_gymnax, register
from research.envs.variants import (
    DERIVED,
    check_fields,
    interpolate,
    stack_params,
    variant_grid,
    variant_params,
)
from research.envs.wrappers import Env, EnvState, Timestep

__all__ = [
    "DERIVED",
    "DISCRETE_STATE_IDS",
    "check_fields",
    "Env",
    "EnvSpec",
    "EnvState",
    "Timestep",
    "available",
    "interpolate",
    "make_gymnax",
    "register",
    "stack_params",
    "variant_grid",
    "variant_params",
]
