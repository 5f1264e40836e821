"""Reptile (Nichol, Achiam & Schulman 2018), first order: a meta-learned initialisation.

Each outer iteration fine-tunes the current initialisation phi on a batch of B sampled
env variants with the runner's own `train` (vmapped over the variants), then moves phi
towards the mean of the fine-tuned parameters:

    phi <- phi + eps_i * mean_b (theta_b - phi)

The whole meta-training is one `lax.scan` over iterations inside one jitted program.
Only the network parameters are meta-learned: the inner `train` adopts them as a
fine-tuning start (research/extensions/finetune.py), with a fresh optimiser every time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.runner.train import Trainer


def reptile_step(phi: Any, thetas: Any, size: jax.Array) -> Any:
    """phi + size * mean_b (thetas_b - phi): phi's leaves [...], thetas' [B, ...].

    Written as a mean of differences, so thetas equal to phi leave phi bit-for-bit
    unchanged (zero inner steps change nothing)."""
    return jax.tree.map(lambda p, t: p + size * jnp.mean(t - p, axis=0), phi, thetas)


def step_size(outer_lr: float, iteration: jax.Array, iterations: int, anneal: bool) -> jax.Array:
    """The outer step eps_i []: outer_lr, or (anneal) linearly down to outer_lr / iterations
    at the last iteration, as in the Reptile paper."""
    if not anneal:
        return jnp.asarray(outer_lr, jnp.float32)
    return outer_lr * (1.0 - iteration.astype(jnp.float32) / iterations)


def make_reptile(
    trainer: Trainer, iterations: int, outer_lr: float, anneal: bool = True
) -> Callable:
    """meta_train(key, state, hparams, variants) -> (state, metrics), pure and jittable.

    trainer: the inner loop, built with fine-tuning adoption (`finetune` options).
    state: one agent state; its `params` are the initialisation phi_0.
    variants: env params of the inner runs, every leaf [iterations, B, ...].
    metrics, each [iterations]: inner_return (last logged return, mean over the B runs),
    inner_auc (mean over their logs), step_norm (global norm of phi's change).
    """
    inner = jax.vmap(trainer.train, in_axes=(0, None, 0, None))

    def meta_train(key, state, hparams, variants):
        batch = jax.tree.leaves(variants)[0].shape[1]

        def iteration(state, xs):
            i, k, env_params = xs
            finals, metrics = inner(jax.random.split(k, batch), hparams, env_params, state)
            params = reptile_step(
                state.params, finals.params, step_size(outer_lr, i, iterations, anneal)
            )
            moved = jax.tree.map(jnp.subtract, params, state.params)
            returns = metrics["episode_return"]  # [B, logs]
            return state.replace(params=params), {
                "inner_return": jnp.nanmean(returns[:, -1]),
                "inner_auc": jnp.nanmean(returns),
                "step_norm": optax.tree.norm(moved),
            }

        xs = (jnp.arange(iterations), jax.random.split(key, iterations), variants)
        return jax.lax.scan(iteration, state, xs)

    return meta_train
