"""Optimiser whose learning rate and clipping norm are traced values, not constants.

The learning rate lives in the optimiser state (optax.inject_hyperparams), so
runs with different learning rates share one compiled program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def adam(eps: float = 1e-5) -> optax.GradientTransformation:
    """Adam with an injectable learning rate (set per step by `apply_gradients`)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=0.0, eps=eps)


def annealed_lr(lr: jax.Array, num_updates: jax.Array, total_updates: int,
                anneal: bool) -> jax.Array:
    """lr, or lr decayed linearly to 0 over total_updates when `anneal` (a static choice)."""
    return lr * (1.0 - num_updates / total_updates) if anneal else lr


def apply_gradients(
    optimizer: optax.GradientTransformation,
    opt_state: Any,
    params: Any,
    grads: Any,
    lr: jax.Array,
    max_grad_norm: jax.Array,
) -> tuple[Any, Any, jax.Array]:
    """Clips grads to `max_grad_norm` (global norm), then steps with learning rate `lr`.

    Returns (new params, new opt_state, the unclipped gradient norm).
    """
    grad_norm = optax.tree.norm(grads)
    scale = jnp.minimum(1.0, max_grad_norm / jnp.maximum(grad_norm, 1e-12))
    grads = jax.tree.map(lambda g: g * scale, grads)
    hyper = {**opt_state.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
    updates, opt_state = optimizer.update(grads, opt_state._replace(hyperparams=hyper), params)
    return optax.apply_updates(params, updates), opt_state, grad_norm
