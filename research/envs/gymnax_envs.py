"""What the project adds to gymnax's own environments: derived fields, parameter ranges,
shaping, tabular use.

gymnax makes these (`EnvEntry.factory` is None); only what gymnax does not know is
registered here. Potentials are scaled to about [-1, 1] (see `EnvEntry.potentials`).

Ranges (`EnvEntry.ranges`) refuse what gymnax would silently turn into NaN or a
meaningless task: masses, lengths, time steps and speed limits > 0 (they divide, or clip
to +-limit), termination thresholds > 0 (<= 0 ends every episode on its first step).
Signs that change the task but keep it well defined stay allowed: a negative push
(CartPole's force_mag, MountainCar's force / power: reversed actions, a target of the
transfer and meta experiments) and, where no potential assumes its sign, gravity.
"""

from __future__ import annotations

import jax.numpy as jnp

from research.envs.registry import NONNEGATIVE, POSITIVE, EnvEntry, Range, register
from research.envs.tabular import FOUR_ROOMS_RANGES


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

# gravity and force_mag are free: negative gravity makes the upright pole stable (an easy,
# well-defined variant; nothing divides by it), a negative force_mag reverses the pushes.
CARTPOLE_RANGES = {
    "masscart": POSITIVE,
    # total_mass = masscart + masspole divides the dynamics: masspole = -1 makes it 0 (NaN)
    "masspole": POSITIVE,
    "length": POSITIVE,  # thetaacc divides by the pole's half-length
    "tau": POSITIVE,  # the Euler step
    "theta_threshold_radians": POSITIVE,  # episodes end at |theta| > threshold
    "x_threshold": POSITIVE,  # and at |x| > threshold
}

# Reset draws the position uniformly in [-0.6, -0.4] whatever the params (gymnax).
_START = "episodes start at a position in [-0.6, -0.4]"
# force / power are free: negative reverses the engine, 0 leaves the car to gravity.
MOUNTAIN_CAR_RANGES = {
    "min_position": Range(high=-0.6, why=_START),
    "goal_position": Range(low=-0.4, low_open=True, why=_START),
    "max_speed": POSITIVE,  # velocities are clipped to +-max_speed
    # Its sign decides where the hills are; the `height` potential sin(3 x) and the task
    # (swing up out of the valley) assume it pulls down. 0 is a flat road.
    "gravity": NONNEGATIVE,
}


def check_mountain_car(params) -> tuple[str, str] | None:
    """The goal must lie on the track and its speed be reachable under the speed cap; the
    continuous car's action bounds must span an interval."""
    if not params.goal_position <= params.max_position:
        return "goal_position", f"a float <= max_position = {params.max_position!r}"
    if not params.goal_velocity <= params.max_speed:
        return "goal_velocity", (
            f"a float <= max_speed = {params.max_speed!r} (velocities are clipped there)"
        )
    if hasattr(params, "min_action") and not params.min_action < params.max_action:
        return "min_action", f"a float < max_action = {params.max_action!r}"
    return None


ACROBOT_RANGES = {
    "dt": POSITIVE,  # the RK4 step
    "link_length_1": POSITIVE,
    "link_length_2": POSITIVE,
    "link_mass_1": POSITIVE,
    "link_mass_2": POSITIVE,
    "link_com_pos_1": NONNEGATIVE,  # along the link from its joint; <= its length (check)
    "link_com_pos_2": NONNEGATIVE,
    "link_moi": POSITIVE,  # keeps the 2x2 mass matrix invertible
    "max_vel_1": POSITIVE,  # joint speeds are clipped to +-max_vel
    "max_vel_2": POSITIVE,
    "torque_noise_max": NONNEGATIVE,  # half-width of the uniform torque noise
}


def check_acrobot(params) -> tuple[str, str] | None:
    """A link's centre of mass lies on the link."""
    for i in (1, 2):
        length = getattr(params, f"link_length_{i}")
        if not getattr(params, f"link_com_pos_{i}") <= length:
            return f"link_com_pos_{i}", f"a float <= link_length_{i} = {length!r}"
    return None


# g is free: negative makes the upright position stable (an easy, well-defined variant).
PENDULUM_RANGES = {
    "max_speed": POSITIVE,  # theta_dot is clipped to +-max_speed
    "max_torque": POSITIVE,  # the action space is [-max_torque, max_torque]
    "dt": POSITIVE,
    "m": POSITIVE,  # the torque term divides by m l^2
    "l": POSITIVE,
}

register(
    EnvEntry(
        "CartPole-v1",
        derived={
            "total_mass": lambda p: p.masscart + p.masspole,
            "polemass_length": lambda p: p.masspole * p.length,
        },
        potentials={"angle": _cartpole_angle},
        ranges=CARTPOLE_RANGES,
    )
)
for _env_id in ("MountainCar-v0", "MountainCarContinuous-v0"):
    register(
        EnvEntry(
            _env_id,
            check=check_mountain_car,
            potentials=_MOUNTAIN_CAR,
            goal_distance=_mountain_car_distance,
            ranges=MOUNTAIN_CAR_RANGES,
        )
    )
register(
    EnvEntry(
        "Acrobot-v1",
        check=check_acrobot,
        potentials={"tip_height": _acrobot_tip_height},
        goal_distance=_acrobot_distance,
        ranges=ACROBOT_RANGES,
    )
)
register(EnvEntry("Pendulum-v1", ranges=PENDULUM_RANGES))
register(EnvEntry("FrozenLake-misc", discrete_states=True))  # max_steps_in_episode only
register(EnvEntry("FourRooms-misc", ranges=FOUR_ROOMS_RANGES))  # as FourRooms-tabular
