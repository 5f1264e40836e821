"""Reward shaping maths: the potential-based term, the proximity bonus, weight schedules.

Potential-based shaping (Ng, Harada & Russell 1999) adds F = gamma * Phi(s') - Phi(s),
which leaves optimal policies unchanged when Phi(s') = 0 at true termination and s' is
the real successor (the final observation on truncation, never the next episode's
first). A bonus c / (distance(s') + 1) is *not* of that form and can change them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SCHEDULES = ("constant", "linear", "exponential", "adaptive")


def potential_term(
    phi: jax.Array, next_phi: jax.Array, terminated: jax.Array, gamma: jax.Array
) -> jax.Array:
    """F = gamma * (1 - terminated) * Phi(s') - Phi(s), elementwise ([T, N] or any shape)."""
    return gamma * (1.0 - terminated) * next_phi - phi


def proximity_bonus(next_distance: jax.Array) -> jax.Array:
    """1 / (distance(s') + 1): the bonus per unit weight; not policy-preserving."""
    return 1.0 / (next_distance + 1.0)


def schedule_factor(
    schedule: jax.Array,
    progress: jax.Array,
    anneal_fraction: jax.Array,
    decay: jax.Array,
    return_ema: jax.Array,
    return_low: jax.Array,
    return_high: jax.Array,
) -> jax.Array:
    """The multiplier of the shaping weight, []; every argument a traced scalar.

    schedule: index into SCHEDULES (traced, so schedules can differ across runs):
    constant 1; linear 1 -> 0 over the first `anneal_fraction` of training; exponential
    exp(-decay * progress); adaptive (return_high - R) / (return_high - return_low) clipped
    to [0, 1], R a running mean of the *unshaped* episode return: shaping fades as the
    agent succeeds on the true task.
    """
    linear = jnp.clip(1.0 - progress / anneal_fraction, 0.0, 1.0)
    exponential = jnp.exp(-decay * progress)
    adaptive = jnp.clip((return_high - return_ema) / (return_high - return_low), 0.0, 1.0)
    index = jnp.round(schedule).astype(jnp.int32)
    return jnp.select(
        [index == 0, index == 1, index == 2], [1.0, linear, exponential], adaptive
    ).astype(jnp.float32)


def episode_sums(
    rewards: jax.Array, done: jax.Array, running: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per-env sums of rewards [T, N] over episodes; `running` [N] carries across rollouts.

    Returns (sum of the episode ending at each step, read where done [T, N]; new running [N]).
    """

    def step(acc, x):
        reward, end = x
        total = acc + reward
        return jnp.where(end, 0.0, total), total

    running, totals = jax.lax.scan(step, running, (rewards, done))
    return totals, running
