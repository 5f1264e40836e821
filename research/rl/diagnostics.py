"""Plasticity diagnostics (issue 22): pure functions of parameters, features and policies.

Everything here is jittable and vmappable over runs; no function calls LAPACK (no
jnp.linalg.svd / eigh / qr), since vmapped LAPACK custom calls inside a jitted program can
deadlock XLA's CPU pool (docs/design.md). Singular values come from an eigenvalue
algorithm in plain jnp instead (`symmetric_eigenvalues`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from research.rl.distributions import Categorical, DiagGaussian, kl

_HIGHEST = jax.lax.Precision.HIGHEST  # float32 dots: no TF32 / bf16 passes on accelerators
_EPS = float(np.finfo(np.float32).eps)
_PIVMIN = 1e-30  # smallest Sturm pivot: e^2 / pivot stays finite for the unit-norm Gram

# --- hidden activations ---------------------------------------------------------------


def hidden_activations(
    network: nn.Module, params: Any, obs: jax.Array, torso: str = "torso"
) -> list[jax.Array]:
    """Post-activation features of each hidden layer of the MLP `torso` of `network`.

    params: the network's variables ({"params": ...}, as the agents hold them);
    obs: [B, *obs_shape], what the network sees (normalised already, if the agent does).
    Returns one [B, units_l] array per hidden layer l, in order.

    How: the network runs as it is (no change to its modules or parameters), and a flax
    method interceptor records what each Dense layer of the torso after the first is given
    (the previous layer's post-activation, after its LayerNorm if any) and what the torso
    returns (the last layer's). So the features are exactly what the next layer sees,
    whatever the activation or normalisation.
    """
    inputs: dict[int, jax.Array] = {}
    output: list[jax.Array] = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        path = context.module.path
        if context.method_name == "__call__" and path[:1] == (torso,):
            if len(path) == 1:
                output.append(out)
            elif len(path) == 2 and path[1].startswith("Dense_"):
                inputs[int(path[1].removeprefix("Dense_"))] = args[0]
        return out

    with nn.intercept_methods(record):
        network.apply(params, obs)
    if len(output) != 1:
        raise ValueError(f"hidden_activations: no single call of a module named {torso!r}")
    return [inputs[k] for k in sorted(inputs) if k > 0] + output


# --- dormant units (Sokar et al. 2023, ReDo) --------------------------------------------


def dormant_scores(h: jax.Array) -> jax.Array:
    """ReDo scores s_i = E_B|h_i| / mean_k E_B|h_k|. h: [B, units] -> [units].

    All units dead (0/0): every score 0, so every unit counts as dormant.
    """
    mean_abs = jnp.mean(jnp.abs(h), axis=0)
    layer_mean = jnp.mean(mean_abs)
    return jnp.where(layer_mean > 0, mean_abs / jnp.where(layer_mean > 0, layer_mean, 1.0), 0.0)


def dormant_mask(h: jax.Array, tau: jax.Array | float) -> jax.Array:
    """[units] bool: s_i <= tau (tau = 0 marks exactly the dead units). h: [B, units]."""
    return dormant_scores(h) <= tau


def dormant_fraction(h: jax.Array, tau: jax.Array | float) -> jax.Array:
    """[] fraction of the layer's units that are tau-dormant. h: [B, units]."""
    return jnp.mean(dormant_mask(h, tau).astype(jnp.float32))


# --- feature rank -------------------------------------------------------------------------


def tridiagonalize(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Householder reduction of a symmetric a: [n, n] to tridiagonal T = Q^T a Q.

    Returns (diagonal [n], off-diagonal [n - 1]) of T, which has a's eigenvalues. Plain jnp:
    n - 2 reflections in a `lax.fori_loop`, each a matrix-vector product and a rank-2
    update on the whole (fixed-shape) matrix, O(n^3) in all; backward stable.
    """
    n = a.shape[0]
    idx = jnp.arange(n)

    def reflect(k, a):
        # H = I - beta v v^T maps column k below the diagonal onto e_{k+1} (Golub & Van
        # Loan 8.3.1); H a H = a - v w^T - w v^T with p = beta a v, w = p - beta/2 (p.v) v.
        x = jnp.where(idx > k, a[:, k], 0.0)
        sign = jnp.where(x[k + 1] >= 0, 1.0, -1.0)  # the sign that avoids cancellation
        v = x.at[k + 1].add(sign * jnp.sqrt(jnp.sum(x * x)))
        vv = jnp.sum(v * v)
        beta = jnp.where(vv > 0, 2.0 / jnp.where(vv > 0, vv, 1.0), 0.0)  # 0: nothing to do
        p = beta * jnp.dot(a, v, precision=_HIGHEST)
        w = p - 0.5 * beta * jnp.dot(p, v, precision=_HIGHEST) * v
        return a - jnp.outer(v, w) - jnp.outer(w, v)

    a = jax.lax.fori_loop(0, max(n - 2, 0), reflect, a)
    return jnp.diagonal(a), jnp.diagonal(a, 1)


def tridiagonal_eigenvalues(diagonal: jax.Array, off: jax.Array, iterations: int = 40) -> jax.Array:
    """Eigenvalues, ascending, of the symmetric tridiagonal matrix (diagonal [n], off [n-1]).

    Bisection on Sturm counts (as LAPACK's stebz): the number of negative pivots of
    T - x I is the number of eigenvalues below x, and the k-th eigenvalue is bisected
    inside the Gershgorin interval, all n at once. `iterations` (static) halvings of that
    interval: 40 take it below float32 resolution. The count is backward stable (exact for
    a T perturbed by rounding), so errors are about eps * ||T||.
    """
    n = diagonal.shape[0]
    zero = jnp.zeros(1, diagonal.dtype)
    off2 = jnp.concatenate([zero, off * off])  # off2[i] couples pivot i to pivot i - 1
    radius = jnp.concatenate([jnp.abs(off), zero]) + jnp.concatenate([zero, jnp.abs(off)])
    lo, hi = jnp.min(diagonal - radius), jnp.max(diagonal + radius)
    margin = 2 * n * _EPS * jnp.maximum(jnp.abs(lo), jnp.abs(hi)) + _PIVMIN
    k = jnp.arange(n)

    def count_below(x):  # x: [n] points -> [n] number of eigenvalues below each
        def pivot(q, row):
            d, o2 = row
            q = d - x - o2 / q
            q = jnp.where(jnp.abs(q) < _PIVMIN, -_PIVMIN, q)  # no division by 0 next
            return q, q < 0

        _, negative = jax.lax.scan(pivot, jnp.ones_like(x), (diagonal, off2), unroll=8)
        return jnp.sum(negative, axis=0)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = count_below(mid) > k  # the k-th eigenvalue lies below mid
        return jnp.where(below, lo, mid), jnp.where(below, mid, hi)

    bounds = (jnp.full(n, lo - margin), jnp.full(n, hi + margin))
    lo, hi = jax.lax.fori_loop(0, iterations, halve, bounds)
    return 0.5 * (lo + hi)


def symmetric_eigenvalues(a: jax.Array) -> jax.Array:
    """Eigenvalues, ascending, of a symmetric a: [n, n] -> [n], without LAPACK.

    Householder tridiagonalisation, then Sturm bisection. Chosen over cyclic Jacobi
    sweeps (parallel ordering, O(sweeps n^3)): on 256 x 256 Gram matrices, 10 sweeps were
    off by 1e-5 of the largest eigenvalue against 1e-7 here, and 64 of them vmapped took
    146 s against 1.3 s (2-core CPU).
    """
    # Sorted as insurance: the bisections are independent, rounding could swap neighbours.
    return jnp.sort(tridiagonal_eigenvalues(*tridiagonalize(a)))


def singular_values(features: jax.Array) -> jax.Array:
    """Singular values of features [B, d], descending: [min(B, d)].

    sqrt of the eigenvalues of the smaller Gram matrix (F^T F or F F^T), computed in float32
    at HIGHEST matmul precision, on F scaled to unit Frobenius norm (no overflow of squares;
    rank measures are scale-free) and scaled back. Squaring costs precision: eigenvalues come
    out within about 2 eps of the largest (exactly rank-deficient matrices of d = 16-256 gave
    spurious ones up to 1.8 eps), so those at most 4 eps of the largest are taken as 0:
    singular values below 7e-4 of the largest read as 0. (Features of B >= 2d random rows
    have none that small; a square [256, 256] ReLU matrix had 2, and its effective rank
    came out 0.02% low.)
    """
    b, d = features.shape
    f = features.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(f * f))
    f = f / jnp.where(norm > 0, norm, 1.0)
    gram = (
        jnp.matmul(f.T, f, precision=_HIGHEST) if d <= b else jnp.matmul(f, f.T, precision=_HIGHEST)
    )
    gram = 0.5 * (gram + gram.T)  # exactly symmetric
    eig = symmetric_eigenvalues(gram)
    eig = jnp.where(eig > eig[-1] * 4.0 * _EPS, eig, 0.0)  # and no sqrt of a negative
    return jnp.sqrt(eig)[::-1] * norm


def effective_rank(features: jax.Array) -> jax.Array:
    """Roy & Vetterli (2007): exp(-sum_i p_i log p_i), p = sigma / sum sigma. [B, d] -> [].

    Between 1 and min(B, d) for a non-zero matrix; 0 for a zero matrix (rank 0).
    """
    sigma = singular_values(features)
    total = jnp.sum(sigma)
    p = sigma / jnp.where(total > 0, total, 1.0)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.where(total > 0, jnp.exp(entropy), 0.0)


def srank(features: jax.Array, delta: jax.Array | float = 0.01) -> jax.Array:
    """Kumar et al. (2021): the smallest k with sum_{i<=k} sigma_i >= (1 - delta) sum sigma.

    features: [B, d] -> [] int32; 0 for a zero matrix.
    """
    sigma = singular_values(features)
    total = jnp.sum(sigma)
    below = jnp.cumsum(sigma) < (1.0 - delta) * total  # prefixes that fall short
    return jnp.where(total > 0, jnp.sum(below, dtype=jnp.int32) + 1, 0)


# --- parameters -----------------------------------------------------------------------------


def tree_norm(tree: Any) -> jax.Array:
    """[] global L2 norm over every leaf (parameters, gradients, updates)."""
    leaves = jax.tree.leaves(tree)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def param_norm(params: Any) -> jax.Array:
    """[] ||theta||_2 over all parameters."""
    return tree_norm(params)


def param_distance(params: Any, anchor: Any) -> jax.Array:
    """[] ||theta - anchor||_2, e.g. to the run's starting parameters (OptState.anchor)."""
    return tree_norm(jax.tree.map(jnp.subtract, params, anchor))


# --- churn -------------------------------------------------------------------------------------


def policy_kl(before: Categorical | DiagGaussian, after: Categorical | DiagGaussian) -> jax.Array:
    """[] mean over the batch of KL(before || after): how far an update moved the policy."""
    return jnp.mean(kl(before, after))


def greedy_changed(q_before: jax.Array, q_after: jax.Array) -> jax.Array:
    """[] fraction of states whose greedy action changed. q_before, q_after: [B, A]."""
    changed = jnp.argmax(q_before, axis=-1) != jnp.argmax(q_after, axis=-1)
    return jnp.mean(changed.astype(jnp.float32))
