"""Networks and a QR-free orthogonal initialiser.

Why QR-free: on a 2-core CPU, vmapped LAPACK QR inside a jitted program can
deadlock XLA's intra-op pool (see docs/design.md). Gram-Schmidt in plain jnp under
`lax.fori_loop` gives the same Haar-distributed matrices with matmuls only.

Why `init_params`: through flax, each kernel derives its own key, draws its own
Gaussian matrix and runs its own Gram-Schmidt loop, and each of those compiles to
its own XLA kernels. `init_params` draws every kernel of a network at once and
orthonormalises them in one batched loop: the PPO init program compiled in about
half the time (results/benchmarks/peers_cpu_analysis.md).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.envs import EnvSpec
from research.rl.distributions import Categorical, DiagGaussian


def orthonormal_columns(a: jax.Array, groups: np.ndarray | None = None) -> jax.Array:
    """Q with orthonormal columns spanning `a`'s, as QR with a positive R diagonal.

    a: [n, m] with n >= m. Classical Gram-Schmidt with one re-orthogonalisation
    pass per column ("twice is enough"), orthogonal to float32 precision.
    groups: [m] ints (static); if given, each group of columns is orthonormalised on its
    own, as if it were a separate matrix (`orthonormal_batch`).
    """
    n, m = a.shape
    group_of = None if groups is None else jnp.asarray(groups, jnp.int32)

    def add_column(j, q):
        v = jax.lax.dynamic_index_in_dim(a, j, axis=1, keepdims=False)
        # Unfilled columns of q are zero, so they project out nothing; nor do other groups'.
        basis = q if group_of is None else q * (group_of == group_of[j])
        for _ in range(2):
            v = v - basis @ (basis.T @ v)
        v = v / jnp.sqrt(jnp.sum(v * v))
        return jax.lax.dynamic_update_index_in_dim(q, v, j, axis=1)

    return jax.lax.fori_loop(0, m, add_column, jnp.zeros_like(a))


def orthonormal_batch(key: jax.Array, shapes: Sequence[tuple[int, int]]) -> list[jax.Array]:
    """Independent Haar-random matrices with orthonormal columns, one [n, m] (n >= m) per
    entry of `shapes`, from one Gaussian draw and one Gram-Schmidt loop.

    The matrices sit side by side in one [N, sum m] draw (N the largest n), each zero
    below its n rows, and each is orthonormalised as its own group of columns.

    The trade: one loop to compile instead of one per kernel (the PPO init program
    compiled in 0.9-1.2 s instead of 2.3 s), for O(N (sum m)^2) work instead of
    O(sum n m^2). Measured per run (jit(vmap), 2-core CPU, 64 / 1024 runs): CartPole's
    actor-critic 0.67 / 2.7 ms against 0.25 / 0.63 ms with flax's per-kernel init; a
    MinAtar Q-network (400 inputs) 5.8 / 9.4 ms against 0.83 / 3.4 ms. One loop per shape
    (vmapped over the kernels of a shape) ran as fast as per-kernel but compiled in 1.8-2.0 s.
    """
    big_n = max(n for n, _ in shapes)
    widths = [m for _, m in shapes]
    groups = np.repeat(np.arange(len(shapes)), widths)
    rows = np.repeat([n for n, _ in shapes], widths)  # [sum m] rows of each column's matrix
    draws = jax.random.normal(key, (big_n, len(groups)), jnp.float32)
    q = orthonormal_columns(jnp.where(np.arange(big_n)[:, None] < rows, draws, 0.0), groups)
    starts = np.cumsum([0, *widths])
    return [q[:n, start : start + m] for (n, m), start in zip(shapes, starts)]


class _KernelPool:
    """`orthogonal` kernels inside `init_params`: their shapes in call order (`matrices`
    None), then the matrices to hand out in that same order."""

    def __init__(self):
        self.shapes: list[tuple[int, int]] = []
        self.matrices: list[jax.Array] | None = None

    def take(self, n: int, m: int) -> jax.Array:
        if self.matrices is None:
            self.shapes.append((n, m))
            return jnp.zeros((n, m), jnp.float32)
        if not self.matrices or self.matrices[0].shape != (n, m):
            raise RuntimeError(
                f"init_params: the module asked for an [{n}, {m}] kernel that "
                f"its first pass did not create (created: {self.shapes})"
            )
        return self.matrices.pop(0)


_POOL: contextvars.ContextVar[_KernelPool | None] = contextvars.ContextVar(
    "research.rl.networks.kernel_pool", default=None
)


def orthogonal(scale: float = 1.0):
    """Flax initialiser: a (scaled) random orthogonal matrix of shape [fan_in, fan_out].
    Inside `init_params`, the matrix comes from the network's pooled draw instead."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        rows, cols = math.prod(shape[:-1]), shape[-1]
        n, m = max(rows, cols), min(rows, cols)
        pool = _POOL.get()
        q = (
            orthonormal_columns(jax.random.normal(key, (n, m), jnp.float32))
            if pool is None
            else pool.take(n, m)
        )
        q = q if rows >= cols else q.T
        return (scale * q).reshape(shape).astype(dtype)

    return init


def init_params(module: nn.Module, key: jax.Array, *inputs: Any) -> Any:
    """module.init(key, *inputs) (variables, leaves [...]), except that every `orthogonal`
    kernel comes from one `orthonormal_batch` call: the same distribution as flax's
    per-kernel draws, other numbers.

    Two passes over the module: an abstract one (no computation) records the kernels'
    shapes in the order flax creates them, then the real one hands the pooled matrices out
    in that order. Other initialisers get flax's keys, from a key split off the pool's.
    Not for modules whose kernels are created under flax's vmap or scan (ensembles,
    scanned layers): their members would share one kernel.
    """
    pool_key, init_key = jax.random.split(key)
    pool = _KernelPool()
    token = _POOL.set(pool)
    try:
        # A fresh function: jax caches traces of a function, and a cached trace would
        # record nothing.
        jax.eval_shape(lambda k: module.init(k, *inputs), init_key)
        pool.matrices = orthonormal_batch(pool_key, pool.shapes) if pool.shapes else []
        variables = module.init(init_key, *inputs)
    finally:
        _POOL.reset(token)
    if pool.matrices:
        raise RuntimeError(
            f"init_params: the module created fewer kernels the second time "
            f"({len(pool.matrices)} of {pool.shapes} left)"
        )
    return variables


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
    layer_norm: LayerNorm before each hidden activation of both torsos (a plasticity
    option, Lyle et al. 2023; adds LayerNorm_i parameters, so a checkpoint's structure
    tells whether it had them).
    """

    spec: EnvSpec
    hidden_sizes: Sequence[int]
    activation: str = "tanh"
    layer_norm: bool = False

    @nn.compact
    def __call__(self, obs: jax.Array):
        x = flatten_obs(obs, self.spec.obs_shape)
        h = MLP(self.hidden_sizes, self.activation, self.layer_norm, name="actor_torso")(x)
        out = self.spec.num_actions if self.spec.discrete else self.spec.action_dim
        head = nn.Dense(out, kernel_init=orthogonal(0.01), name="actor_head")(h)
        if self.spec.discrete:
            dist = Categorical(head)
        else:
            log_std = self.param("log_std", nn.initializers.zeros, (out,))
            dist = DiagGaussian(head, log_std)
        v = MLP(self.hidden_sizes, self.activation, self.layer_norm, name="critic_torso")(x)
        value = nn.Dense(1, kernel_init=orthogonal(1.0), name="critic_head")(v)[..., 0]
        return dist, value
