"""Schedules over training progress, and epsilon-greedy action selection."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def schedule(kind: str, start: jax.Array, end: jax.Array, fraction: jax.Array,
             progress: jax.Array) -> jax.Array:
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


def epsilon_greedy(key: jax.Array, q_values: jax.Array, epsilon: jax.Array) -> jax.Array:
    """Greedy action of q_values [..., A] with probability 1 - epsilon, else uniform. -> [...]"""
    explore_key, action_key = jax.random.split(key)
    greedy = jnp.argmax(q_values, axis=-1)
    random = jax.random.randint(action_key, greedy.shape, 0, q_values.shape[-1])
    explore = jax.random.uniform(explore_key, greedy.shape) < epsilon
    return jnp.where(explore, random, greedy)
