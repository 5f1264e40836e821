"""Precision reaching: a two-link planar arm moves its fingertip onto a target (gymnax API).

The arm lies in a horizontal plane (no gravity). Both links are uniform rods hinged at
the shoulder (fixed at the origin) and at the elbow. The state is the joint angles
q = (shoulder, elbow-relative) and velocities dq; the equations of motion are the
standard two-link manipulator

    M(q2) ddq + c(q2, dq) + friction * dq = torque,

integrated with one Runge-Kutta (RK4) step per env step. The shoulder angle wraps to
[-pi, pi); the elbow stops inelastically at +-elbow_limit (its velocity is zeroed there,
the angular momentum about the shoulder kept); joint speeds are capped at max_speed.
The inertia terms are computed from the lengths and masses at every step, so EnvParams
has no derived fields.

Actions: two torques in [-1, 1], scaled by max_torque (`ArmReach-v0`), or one of nine
discrete torque pairs in {-1, 0, 1}^2 (`ArmReachDiscrete-v0`).
Reward per step: -distance(fingertip', target) - control_cost * |action|^2, plus
success_bonus on reaching the target. The episode terminates when the fingertip is
within `tolerance` of the target moving slower than `max_tip_speed` (precision: a
pass through the target at speed does not count), and truncates after
max_steps_in_episode steps.
An episode starts at rest, the shoulder at a uniform angle and the elbow uniform within
half its limit; targets are drawn uniformly in angle, and in radius between
target_radius_min and target_radius_max times the reach l1 + l2.

Observation [10]: cos q1, sin q1, cos q2, sin q2, dq1, dq2, target x, target y, and the
fingertip-to-target vector (dx, dy), whose norm is the distance shaping uses.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

from research.envs.registry import NONNEGATIVE, POSITIVE, EnvEntry, Range, register

# Discrete actions: index a -> torque directions (a // 3 - 1, a % 3 - 1), a = 4 is zero torque.
DISCRETE_TORQUES = np.array([[i - 1, j - 1] for i in range(3) for j in range(3)], np.float32)
OBS_SIZE = 10


@struct.dataclass
class ArmState(environment.EnvState):
    angles: jax.Array  # [2] shoulder, elbow (rad)
    velocities: jax.Array  # [2] rad / s
    target: jax.Array  # [2] x, y (m)


@struct.dataclass
class ArmParams(environment.EnvParams):
    link_length_1: float = 0.5  # m
    link_length_2: float = 0.5
    link_mass_1: float = 1.0  # kg, uniform rods
    link_mass_2: float = 1.0
    max_torque: float = 1.0  # N m per joint: actions in [-1, 1] are scaled by it
    friction: float = 0.1  # viscous joint friction, N m s / rad
    elbow_limit: float = 2.6  # rad: |elbow angle| <= elbow_limit
    max_speed: float = 10.0  # rad / s, per joint
    dt: float = 0.05  # s per step
    tolerance: float = 0.1  # m: success radius around the target
    max_tip_speed: float = 1.0  # m / s: success needs the fingertip slower than this
    target_radius_min: float = 0.4  # x reach (l1 + l2)
    target_radius_max: float = 0.9
    success_bonus: float = 10.0
    control_cost: float = 0.0
    max_steps_in_episode: int = 200


# Every mass, length, time step, limit and success threshold divides or clips: > 0. The
# costs and the bonus only shape the reward (a negative one would pay for effort): >= 0.
RANGES = {
    **{
        name: POSITIVE
        for name in (
            "link_length_1",
            "link_length_2",
            "link_mass_1",
            "link_mass_2",
            "max_torque",
            "max_speed",
            "dt",
            "tolerance",
            "max_tip_speed",
        )
    },
    **{name: NONNEGATIVE for name in ("friction", "control_cost", "success_bonus")},
    # beyond pi the elbow would fold through the upper arm
    "elbow_limit": Range(low=0.0, high=np.pi, low_open=True, high_name="pi"),
    "target_radius_min": Range(
        low=0.0, high=1.0, high_open=True, why="a fraction of the reach l1 + l2"
    ),
    "target_radius_max": Range(
        low=0.0, high=1.0, low_open=True, why="a fraction of the reach l1 + l2"
    ),
}


def check_params(params: ArmParams) -> tuple[str, str] | None:
    """(field, what is allowed) for the first inconsistent combination, else None (each
    field's own range is `RANGES`)."""
    if not params.target_radius_min < params.target_radius_max:
        return "target_radius_min", (
            f"a float with 0 <= x < target_radius_max = {params.target_radius_max!r}"
        )
    return None


def forward_kinematics(angles: jax.Array, params: ArmParams) -> tuple[jax.Array, jax.Array]:
    """angles [..., 2] -> (elbow [..., 2], fingertip [..., 2]) positions in metres."""
    q1, q2 = angles[..., 0], angles[..., 1]
    elbow = params.link_length_1 * jnp.stack([jnp.cos(q1), jnp.sin(q1)], -1)
    tip = elbow + params.link_length_2 * jnp.stack([jnp.cos(q1 + q2), jnp.sin(q1 + q2)], -1)
    return elbow, tip


def tip_velocity(angles: jax.Array, velocities: jax.Array, params: ArmParams) -> jax.Array:
    """Fingertip velocity [..., 2] (m / s): the kinematic Jacobian times dq [..., 2]."""
    q1, q12 = angles[..., 0], angles[..., 0] + angles[..., 1]
    w1, w12 = velocities[..., 0], velocities[..., 0] + velocities[..., 1]
    l1, l2 = params.link_length_1, params.link_length_2
    return jnp.stack(
        [
            -l1 * jnp.sin(q1) * w1 - l2 * jnp.sin(q12) * w12,
            l1 * jnp.cos(q1) * w1 + l2 * jnp.cos(q12) * w12,
        ],
        -1,
    )


def mass_matrix(elbow_angle: jax.Array, params: ArmParams) -> tuple[jax.Array, ...]:
    """(M11, M12, M22) of the symmetric 2x2 inertia matrix at elbow angle q2 [] (uniform rods:
    centre of mass at mid-link, moment of inertia m l^2 / 12 about it)."""
    l1, l2, m1, m2 = (
        params.link_length_1,
        params.link_length_2,
        params.link_mass_1,
        params.link_mass_2,
    )
    c2 = jnp.cos(elbow_angle)
    m22 = m2 * l2**2 / 3.0
    m12 = m22 + m2 * l1 * l2 * c2 / 2.0
    m11 = m1 * l1**2 / 3.0 + m2 * l1**2 + 2.0 * m12 - m22
    return m11, m12, m22


def accelerations(
    angles: jax.Array, velocities: jax.Array, torque: jax.Array, params: ArmParams
) -> jax.Array:
    """ddq [2] from M ddq = torque - c(q, dq) - friction dq; angles, velocities, torque [2]."""
    m11, m12, m22 = mass_matrix(angles[1], params)
    h = params.link_mass_2 * params.link_length_1 * params.link_length_2 * jnp.sin(angles[1]) / 2
    dq1, dq2 = velocities[0], velocities[1]
    coriolis = jnp.stack([-h * (2.0 * dq1 * dq2 + dq2**2), h * dq1**2])
    rhs = torque - coriolis - params.friction * velocities
    # The 2x2 inverse in closed form: a batched LAPACK solve can deadlock XLA on CPU.
    det = m11 * m22 - m12**2
    return jnp.stack([m22 * rhs[0] - m12 * rhs[1], m11 * rhs[1] - m12 * rhs[0]]) / det


def integrate(
    angles: jax.Array, velocities: jax.Array, torque: jax.Array, params: ArmParams
) -> tuple[jax.Array, jax.Array]:
    """One step of dt: ([2] angles, [2] velocities).

    The smooth dynamics take one classical Runge-Kutta step (on a fast swing at dt = 0.05,
    semi-implicit Euler lost 38% of the conserved angular momentum in 11 steps, RK4 3e-5),
    then the speed cap, the wrap and the elbow stop apply.
    """

    def deriv(x):  # x = (q1, q2, dq1, dq2)
        return jnp.concatenate([x[2:], accelerations(x[:2], x[2:], torque, params)])

    x, h = jnp.concatenate([angles, velocities]), params.dt
    k1 = deriv(x)
    k2 = deriv(x + h / 2 * k1)
    k3 = deriv(x + h / 2 * k2)
    k4 = deriv(x + h * k3)
    x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    angles, velocities = x[:2], jnp.clip(x[2:], -params.max_speed, params.max_speed)
    shoulder = (angles[0] + jnp.pi) % (2.0 * jnp.pi) - jnp.pi
    elbow = jnp.clip(angles[1], -params.elbow_limit, params.elbow_limit)
    return jnp.stack([shoulder, elbow]), elbow_stop(angles[1], velocities, params)


def elbow_stop(elbow_angle: jax.Array, velocities: jax.Array, params: ArmParams) -> jax.Array:
    """Velocities [2] after an inelastic stop of the elbow, where `elbow_angle` [] (before
    clipping) reached +-elbow_limit; unchanged elsewhere.

    The stop is internal to the arm, so its impulse keeps the angular momentum about the
    shoulder, M11 dq1 + M12 dq2, while it sets the elbow's velocity to 0; the momentum is
    taken at the unclipped angle and given back at the limit, so none leaks at the stop.
    """
    m11, m12, _ = mass_matrix(elbow_angle, params)
    limit_m11, _, _ = mass_matrix(params.elbow_limit, params)  # M11 is even in the angle
    momentum = m11 * velocities[0] + m12 * velocities[1]
    at_stop = jnp.abs(elbow_angle) >= params.elbow_limit
    return jnp.where(at_stop, jnp.stack([momentum / limit_m11, 0.0]), velocities)


class ArmReach(environment.Environment[ArmState, ArmParams]):
    """Two-link planar arm, continuous torques in [-1, 1]^2 (x max_torque)."""

    @property
    def default_params(self) -> ArmParams:
        return ArmParams()

    def torque(self, action: jax.Array, params: ArmParams) -> jax.Array:
        """The joint torques [2] an action asks for, within the torque limit."""
        return params.max_torque * jnp.clip(jnp.reshape(action, (2,)), -1.0, 1.0)

    def step_env(
        self, key: jax.Array, state: ArmState, action: Any, params: ArmParams
    ) -> tuple[jax.Array, ArmState, jax.Array, jax.Array, dict]:
        torque = self.torque(action, params)
        angles, velocities = integrate(state.angles, state.velocities, torque, params)
        next_state = ArmState(
            time=state.time + 1, angles=angles, velocities=velocities, target=state.target
        )
        distance = tip_distance(next_state, params)
        reached = self.is_terminated(next_state, params)
        effort = jnp.sum((torque / params.max_torque) ** 2)
        reward = -distance - params.control_cost * effort + params.success_bonus * reached
        return (
            self.get_obs(next_state, params),
            next_state,
            reward.astype(jnp.float32),
            reached,
            {},
        )

    def reset_env(self, key: jax.Array, params: ArmParams) -> tuple[jax.Array, ArmState]:
        k_q1, k_q2, k_angle, k_radius = jax.random.split(key, 4)
        angles = jnp.stack(
            [
                jax.random.uniform(k_q1, (), minval=-jnp.pi, maxval=jnp.pi),
                jax.random.uniform(k_q2, (), minval=-0.5, maxval=0.5) * params.elbow_limit,
            ]
        )
        reach = params.link_length_1 + params.link_length_2
        radius = reach * jax.random.uniform(
            k_radius, (), minval=params.target_radius_min, maxval=params.target_radius_max
        )
        angle = jax.random.uniform(k_angle, (), minval=-jnp.pi, maxval=jnp.pi)
        target = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)])
        state = ArmState(time=0, angles=angles, velocities=jnp.zeros(2), target=target)
        return self.get_obs(state, params), state

    def get_obs(self, state: ArmState, params: Any = None, key: Any = None) -> jax.Array:
        _, tip = forward_kinematics(state.angles, params or self.default_params)
        (q1, q2), (dq1, dq2) = state.angles, state.velocities
        (tx, ty), (dx, dy) = state.target, state.target - tip
        return jnp.stack(
            [jnp.cos(q1), jnp.sin(q1), jnp.cos(q2), jnp.sin(q2), dq1, dq2, tx, ty, dx, dy]
        ).astype(jnp.float32)

    def is_terminated(self, state: ArmState, params: ArmParams) -> jax.Array:
        speed = jnp.sqrt(jnp.sum(tip_velocity(state.angles, state.velocities, params) ** 2))
        return (tip_distance(state, params) <= params.tolerance) & (speed <= params.max_tip_speed)

    @property
    def num_actions(self) -> int:
        return 2

    def action_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-1.0, 1.0, (2,), jnp.float32)

    def observation_space(self, params: Any = None) -> spaces.Box:
        return spaces.Box(-jnp.inf, jnp.inf, (OBS_SIZE,), jnp.float32)


def tip_distance(state: ArmState, params: ArmParams) -> jax.Array:
    """Distance [] from the fingertip to the target."""
    offset = state.target - forward_kinematics(state.angles, params)[1]
    return jnp.sqrt(jnp.sum(offset**2))


def target_distance(obs: jax.Array, params: Any = None) -> jax.Array:
    """Fingertip-to-target distance from observations [..., 10] -> [...]."""
    return jnp.sqrt(obs[..., 8] ** 2 + obs[..., 9] ** 2)


class ArmReachDiscrete(ArmReach):
    """The same arm with nine actions: torque directions {-1, 0, 1}^2 (x max_torque)."""

    def torque(self, action: jax.Array, params: ArmParams) -> jax.Array:
        return params.max_torque * jnp.asarray(DISCRETE_TORQUES)[action]

    @property
    def num_actions(self) -> int:
        return len(DISCRETE_TORQUES)

    def action_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(len(DISCRETE_TORQUES))


def progress(obs: jax.Array, params: ArmParams) -> jax.Array:
    """-distance from fingertip to target / reach (l1 + l2): 0 on the target, about -1 at
    the far side of the workspace."""
    return -target_distance(obs) / (params.link_length_1 + params.link_length_2)


ARMS = {"ArmReach-v0": ArmReach, "ArmReachDiscrete-v0": ArmReachDiscrete}

for _env_id, _arm in ARMS.items():
    register(
        EnvEntry(
            _env_id,
            _arm,
            check=check_params,
            potentials={"distance": progress},
            goal_distance=target_distance,
            ranges=RANGES,
        )
    )
