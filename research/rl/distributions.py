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


def kl(p: Categorical | DiagGaussian, q: Categorical | DiagGaussian) -> jax.Array:
    """Forward KL(p || q) = E_p[log p - log q] per batch element: [...].

    Categorical: sum_a p_a (log p_a - log q_a), with 0 log 0 = 0 (an action p never takes,
    e.g. a -inf logit, adds nothing). DiagGaussian: the closed form summed over action dims,
    log(s_q / s_p) + (s_p^2 + (m_p - m_q)^2) / (2 s_q^2) - 1/2.
    """
    if isinstance(p, Categorical) and isinstance(q, Categorical):
        logp, logq = jax.nn.log_softmax(p.logits), jax.nn.log_softmax(q.logits)
        taken = logp > -jnp.inf
        # The inner where keeps -inf - (-inf) out of the unselected branch (and its gradient).
        terms = jnp.where(taken, jnp.exp(logp) * (jnp.where(taken, logp, 0.0) - logq), 0.0)
        return jnp.sum(terms, axis=-1)
    if isinstance(p, DiagGaussian) and isinstance(q, DiagGaussian):
        log_ratio = q.log_std - p.log_std
        per_dim = (
            log_ratio
            + 0.5 * (jnp.exp(-2.0 * log_ratio) + (p.mean - q.mean) ** 2 * jnp.exp(-2.0 * q.log_std))
            - 0.5
        )
        return jnp.sum(per_dim, axis=-1)  # (m_p - m_q)^2 carries the batch shape
    raise TypeError(f"kl: no KL between {type(p).__name__} and {type(q).__name__}")
