"""What shaping asks of an environment: its progress potentials and its distance to the goal.

Both live in the environment's registry entry (`EnvEntry.potentials`, `.goal_distance`),
defined beside the environment; these lookups turn a missing one into a ConfigError that
lists the environments that have one. Every function maps (obs [..., *obs_shape],
env_params) -> [...], elementwise over the leading dims, and is jittable.
"""

from __future__ import annotations

from research.config import ConfigError
from research.envs.registry import ObsFn, entry, registered

Fn = ObsFn


def progress_potential(env_id: str, name: str | None) -> Fn:
    """The env's potential `name` (its first one if None), or a ConfigError."""
    options = entry(env_id).potentials
    if not options:
        have = [e.env_id for e in registered() if e.potentials]
        raise ConfigError(
            f"shaping.potential: no progress potential for {env_id!r}; have: "
            f"{', '.join(have)} (or use potential: value with a checkpoint)"
        )
    name = name or next(iter(options))
    if name not in options:
        raise ConfigError(f"shaping.name: got {name!r}; {env_id} has: {', '.join(options)}")
    return options[name]


def goal_distance(env_id: str) -> Fn:
    """The env's distance to the goal (for the bonus), or a ConfigError."""
    distance = entry(env_id).goal_distance
    if distance is None:
        have = [e.env_id for e in registered() if e.goal_distance is not None]
        raise ConfigError(
            f"shaping.kind: 'bonus' needs a distance to the goal; {env_id!r} has "
            f"none; have: {', '.join(have)}"
        )
    return distance
