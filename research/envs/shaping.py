"""What shaping knows about each environment: progress potentials and distances to the goal.

Every function maps (obs [..., *obs_shape], env_params) -> [...], elementwise over the
leading dims, and is jittable. Potentials are scaled to about [-1, 1] so that one
shaping weight means something similar across environments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from research.config import ConfigError
from research.envs.arm import target_distance

Fn = Callable[[Any, Any], Any]


def _mountain_car_height(obs, params):
    """Height of the car, sin(3 x) in [-1, 1]."""
    return jnp.sin(3.0 * obs[..., 0])


def _mountain_car_position(obs, params):
    """Position scaled to [-1, 1] between min_position and goal_position."""
    span = params.goal_position - params.min_position
    return 2.0 * (obs[..., 0] - params.min_position) / span - 1.0


def _cartpole_angle(obs, params):
    """-|pole angle| / threshold: 0 upright, -1 where the episode ends."""
    return -jnp.abs(obs[..., 2]) / params.theta_threshold_radians


def _acrobot_tip_height(obs, params):
    """Height of the tip over the pivot, -cos(t1) - cos(t1 + t2), halved to [-1, 1]."""
    cos1, sin1, cos2, sin2 = obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3]
    return 0.5 * (-cos1 - (cos1 * cos2 - sin1 * sin2))


def _grid_distance(obs, params):
    """Manhattan distance from the cell (obs = row * size + col) to the goal."""
    row, col = obs // params.size, obs % params.size
    return (jnp.abs(row - params.goal_row) + jnp.abs(col - params.goal_col)).astype(jnp.float32)


def _grid_potential(obs, params):
    """-distance to the goal / (2 (size - 1)): 0 at the goal, -1 in the far corner."""
    return -_grid_distance(obs, params) / (2.0 * (params.size - 1))


def _arm_progress(obs, params):
    """-distance from fingertip to target / reach (l1 + l2): 0 on the target, about -1 at
    the far side of the workspace."""
    return -target_distance(obs) / (params.link_length_1 + params.link_length_2)


POTENTIALS: dict[str, dict[str, Fn]] = {
    "MountainCar-v0": {"height": _mountain_car_height, "position": _mountain_car_position},
    "MountainCarContinuous-v0": {
        "height": _mountain_car_height,
        "position": _mountain_car_position,
    },
    "CartPole-v1": {"angle": _cartpole_angle},
    "Acrobot-v1": {"tip_height": _acrobot_tip_height},
    "GridWorld-tabular": {"distance": _grid_potential},
    "ArmReach-v0": {"distance": _arm_progress},
    "ArmReachDiscrete-v0": {"distance": _arm_progress},
}

DISTANCES: dict[str, Fn] = {
    "MountainCar-v0": lambda obs, p: jnp.maximum(p.goal_position - obs[..., 0], 0.0),
    "MountainCarContinuous-v0": lambda obs, p: jnp.maximum(p.goal_position - obs[..., 0], 0.0),
    "Acrobot-v1": lambda obs, p: 1.0 - _acrobot_tip_height(obs, p),
    "GridWorld-tabular": _grid_distance,
    "ArmReach-v0": target_distance,
    "ArmReachDiscrete-v0": target_distance,
}


def progress_potential(env_id: str, name: str | None) -> Fn:
    """The env's potential `name` (its first one if None), or a ConfigError."""
    options = POTENTIALS.get(env_id)
    if not options:
        raise ConfigError(
            f"shaping.potential: no progress potential for {env_id!r}; have: "
            f"{', '.join(POTENTIALS)} (or use potential: value with a checkpoint)"
        )
    name = name or next(iter(options))
    if name not in options:
        raise ConfigError(f"shaping.name: got {name!r}; {env_id} has: {', '.join(options)}")
    return options[name]


def goal_distance(env_id: str) -> Fn:
    if env_id not in DISTANCES:
        raise ConfigError(
            f"shaping.kind: 'bonus' needs a distance to the goal; {env_id!r} has "
            f"none; have: {', '.join(DISTANCES)}"
        )
    return DISTANCES[env_id]
