"""Networks and a QR-free orthogonal initialiser.

Why QR-free: on a 2-core CPU, vmapped LAPACK QR inside a jitted program can
deadlock XLA's intra-op pool (see DESIGN.md). Gram-Schmidt in plain jnp under
`lax.fori_loop` gives the same Haar-distributed matrices with matmuls only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.envs import EnvSpec
from research.rl.distributions import Categorical, DiagGaussian


def orthonormal_columns(a: jax.Array) -> jax.Array:
    """Q with orthonormal columns spanning `a`'s, as QR with a positive R diagonal.

    a: [n, m] with n >= m. Classical Gram-Schmidt with one re-orthogonalisation
    pass per column ("twice is enough"), orthogonal to float32 precision.
    """
    n, m = a.shape

    def add_column(j, q):
        v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        for _ in range(2):  # unfilled columns of q are zero, so they project out nothing
            v = v - q @ (q.T @ v)
        v = v / jnp.sqrt(jnp.sum(v * v))
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=1)

    return jax.lax.fori_loop(0, m, add_column, jnp.zeros_like(a))


def orthogonal(scale: float = 1.0):
    """Flax initialiser: a (scaled) random orthogonal matrix of shape [fan_in, fan_out]."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        n, m = max(rows, cols), min(rows, cols)
        q = orthonormal_columns(jax.random.normal(key, (n, m), jnp.float32))
        q = q if rows >= cols else q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


_ACTIVATIONS = {"tanh": nn.tanh, "relu": nn.relu}


class MLP(nn.Module):
    """Dense layers with orthogonal(sqrt 2) init: [..., in] -> [..., hidden_sizes[-1]].

    layer_norm: LayerNorm before each activation (stabilises Q-learning without a
    target network, as in PQN).
    """

    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_sizes:
            x = nn.Dense(size, kernel_init=orthogonal(jnp.sqrt(2.0)))(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = _ACTIVATIONS[self.activation](x)
        return x


def flatten_obs(obs: jax.Array, obs_shape: Sequence[int]) -> jax.Array:
    """[..., *obs_shape] -> [..., prod(obs_shape)]."""
    return obs.reshape(*obs.shape[: obs.ndim - len(obs_shape)], -1)


class QNetwork(nn.Module):
    """obs [..., *obs_shape] -> Q-values [..., num_actions]. Groups: torso, head."""

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "relu"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = flatten_obs(obs, self.spec.obs_shape)
        h = MLP(self.hidden_sizes, self.activation, self.layer_norm, name="torso")(x)
        return nn.Dense(self.spec.num_actions, kernel_init=orthogonal(1.0), name="head")(h)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs.

    Parameter groups (used by fine-tuning options): actor_torso, actor_head,
    critic_torso, critic_head, and log_std for continuous actions.
    obs [..., *obs_shape] -> (Categorical | DiagGaussian over [...], value [...]).
    """

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"

    @nn.compact
    def __call__(self, obs: jax.Array):
        x = flatten_obs(obs, self.spec.obs_shape)
        h = MLP(self.hidden_sizes, self.activation, name="actor_torso")(x)
        out = self.spec.num_actions if self.spec.discrete else self.spec.action_dim
        head = nn.Dense(out, kernel_init=orthogonal(0.01), name="actor_head")(h)
        if self.spec.discrete:
            dist = Categorical(head)
        else:
            log_std = self.param("log_std", nn.initializers.zeros, (out,))
            dist = DiagGaussian(head, log_std)
        v = MLP(self.hidden_sizes, self.activation, name="critic_torso")(x)
        value = nn.Dense(1, kernel_init=orthogonal(1.0), name="critic_head")(v)[..., 0]
        return dist, value
