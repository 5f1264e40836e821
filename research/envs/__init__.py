"""Environments: registry, variants, and the wrapper that owns the gymnax step API.

One `EnvEntry` per environment, registered by the module that defines it; importing this
package imports them all, so any `research.envs` import sees the full registry.
"""

from research.envs.registry import (
    EnvEntry,
    EnvSpec,
    available,
    discrete_state_ids,
    entry,
    make_gymnax,
    register,
    registered,
)

# isort: off
# Registration order is the order of available() and of the "have: ..." lists in errors.
from research.envs import probes, gridworld, tabular, arm, trading, driving  # noqa: F401
from research.envs import gymnax_envs  # noqa: F401

# isort: on
from research.envs.variants import (
    check_fields,
    interpolate,
    stack_params,
    variant_grid,
    variant_params,
    with_derived,
)
from research.envs.wrappers import Env, EnvState, Timestep

__all__ = [
    "check_fields",
    "discrete_state_ids",
    "entry",
    "Env",
    "EnvEntry",
    "EnvSpec",
    "EnvState",
    "Timestep",
    "available",
    "interpolate",
    "make_gymnax",
    "register",
    "registered",
    "stack_params",
    "variant_grid",
    "variant_params",
    "with_derived",
]


def __getattr__(name: str):
    """DISCRETE_STATE_IDS, the old tuple, read from the registry at access time (so it
    includes environments registered since)."""
    if name == "DISCRETE_STATE_IDS":
        return discrete_state_ids()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
