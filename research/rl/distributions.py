"""Action distributions as small pytrees (batch dims lead; the action dims trail)."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

_LOG_2PI = math.log(2.0 * math.pi)  # a Python float: no device work at import


class Categorical(NamedTuple):
    logits: jax.Array  # [..., num_actions]

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.categorical(key, self.logits)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, axis=-1)

    def log_prob(self, action: jax.Array) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        # A one-hot product, not a gather: the same value for finite logits, and its
        # gradient is elementwise where a gather's is a scatter-add (slow on XLA:CPU).
        one_hot = jax.nn.one_hot(action, self.logits.shape[-1], dtype=logp.dtype)
        return jnp.sum(logp * one_hot, axis=-1)

    def entropy(self) -> jax.Array:
        logp = jax.nn.log_softmax(self.logits)
        return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


class DiagGaussian(NamedTuple):
    mean: jax.Array  # [..., action_dim]
    log_std: jax.Array  # [action_dim] or [..., action_dim]

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + jnp.exp(self.log_std) * jax.random.normal(key, self.mean.shape)

    def mode(self) -> jax.Array:
        return self.mean

    def log_prob(self, action: jax.Array) -> jax.Array:
        z = (action - self.mean) * jnp.exp(-self.log_std)
        per_dim = -0.5 * z**2 - self.log_std - 0.5 * _LOG_2PI
        return jnp.sum(per_dim, axis=-1)

    def entropy(self) -> jax.Array:
        per_dim = jnp.broadcast_to(self.log_std + 0.5 * (1.0 + _LOG_2PI), self.mean.shape)
        return jnp.sum(per_dim, axis=-1)
