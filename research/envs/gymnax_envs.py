"""What the project adds to gymnax's own environments: derived fields, shaping, tabular use.

gymnax makes these (`EnvEntry.factory` is None); only what gymnax does not know is
registered here. Potentials are scaled to about [-1, 1] (see `EnvEntry.potentials`).
"""

from __future__ import annotations

import jax.numpy as jnp

from research.envs.registry import EnvEntry, register


def _mountain_car_height(obs, params):
    """Height of the car, sin(3 x) in [-1, 1]."""
    return jnp.sin(3.0 * obs[..., 0])


def _mountain_car_position(obs, params):
    """Position scaled to [-1, 1] between min_position and goal_position."""
    span = params.goal_position - params.min_position
    return 2.0 * (obs[..., 0] - params.min_position) / span - 1.0


def _mountain_car_distance(obs, params):
    """How far the car is left of the goal position (0 at or beyond it)."""
    return jnp.maximum(params.goal_position - obs[..., 0], 0.0)


def _cartpole_angle(obs, params):
    """-|pole angle| / threshold: 0 upright, -1 where the episode ends."""
    return -jnp.abs(obs[..., 2]) / params.theta_threshold_radians


def _acrobot_tip_height(obs, params):
    """Height of the tip over the pivot, -cos(t1) - cos(t1 + t2), halved to [-1, 1]."""
    cos1, sin1, cos2, sin2 = obs[..., 0], obs[..., 1], obs[..., 2], obs[..., 3]
    return 0.5 * (-cos1 - (cos1 * cos2 - sin1 * sin2))


def _acrobot_distance(obs, params):
    """1 - tip height: 0 with the tip straight up, 2 hanging down."""
    return 1.0 - _acrobot_tip_height(obs, params)


_MOUNTAIN_CAR = {"height": _mountain_car_height, "position": _mountain_car_position}

register(
    EnvEntry(
        "CartPole-v1",
        derived={
            "total_mass": lambda p: p.masscart + p.masspole,
            "polemass_length": lambda p: p.masspole * p.length,
        },
        potentials={"angle": _cartpole_angle},
    )
)
for _env_id in ("MountainCar-v0", "MountainCarContinuous-v0"):
    register(EnvEntry(_env_id, potentials=_MOUNTAIN_CAR, goal_distance=_mountain_car_distance))
register(
    EnvEntry(
        "Acrobot-v1",
        potentials={"tip_height": _acrobot_tip_height},
        goal_distance=_acrobot_distance,
    )
)
register(EnvEntry("FrozenLake-misc", discrete_states=True))
