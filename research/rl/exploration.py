"""Schedules over training progress, and epsilon-greedy action selection."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def schedule(
    kind: str, start: jax.Array, end: jax.Array, fraction: jax.Array, progress: jax.Array
) -> jax.Array:
    """A value moving from `start` to `end` over the first `fraction` of training.

    kind: "constant" (always start), "linear", or "exponential" (geometric: start *
    (end / start) ** (progress / fraction), needs start, end > 0); `end` after that.
    progress: in [0, 1], the fraction of training done. Scalars, or broadcastable arrays.
    """
    t = jnp.clip(progress / fraction, 0.0, 1.0)
    if kind == "constant":
        return jnp.asarray(start, jnp.float32)
    if kind == "linear":
        return start + t * (end - start)
    if kind == "exponential":
        start, end = jnp.maximum(start, 1e-8), jnp.maximum(end, 1e-8)
        return start * (end / start) ** t
    raise ValueError(f"unknown schedule {kind!r}; allowed: constant, linear, exponential")


def epsilon_at(kind: str, hparams, num_updates: jax.Array, total_updates: int) -> jax.Array:
    """The exploration rate after `num_updates` of `total_updates`: `schedule(kind, ...)`
    of the hyperparameters' epsilon_start, epsilon_end and epsilon_fraction."""
    return schedule(
        kind,
        hparams.epsilon_start,
        hparams.epsilon_end,
        hparams.epsilon_fraction,
        num_updates / total_updates,
    )


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon: jax.Array) -> jax.Array:
    """Greedy action of q_values [..., A] with probability 1 - epsilon, else uniform. -> [...]

    One uniform draw [2, ...] decides both (explore?, which action): each random call is
    compiled on its own, and acting sits inside every rollout step.
    """
    greedy = jnp.argmax(q_values, axis=-1)
    num_actions = q_values.shape[-1]
    u = jax.random.uniform(key, (2, *greedy.shape))
    random = jnp.minimum((u[1] * num_actions).astype(greedy.dtype), num_actions - 1)
    return jnp.where(u[0] < epsilon, random, greedy)
