"""Epochs of shuffled minibatches over a flat batch, as nested `lax.scan`s."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax


def flatten_time(batch: Any) -> Any:
    """[T, N, ...] -> [T * N, ...] for every leaf."""
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)


def shuffled_minibatches(key: jax.Array, batch: Any, num_minibatches: int) -> Any:
    """Leaves [B, ...] -> [num_minibatches, B // num_minibatches, ...], randomly permuted."""
    size = jax.tree.leaves(batch)[0].shape[0]
    perm = jax.random.permutation(key, size)
    return jax.tree.map(
        lambda x: x[perm].reshape(num_minibatches, size // num_minibatches, *x.shape[1:]), batch
    )


def minibatch_epochs(
    key: jax.Array,
    carry: Any,
    batch: Any,
    num_epochs: int,
    num_minibatches: int,
    step: Callable[[Any, Any], tuple[Any, Any]],
) -> tuple[Any, Any]:
    """Runs `step(carry, minibatch) -> (carry, metrics)` over epochs x minibatches.

    batch leaves: [B, ...]. Returns (carry, metrics with leading [num_epochs, num_minibatches]).
    """

    def epoch(carry, epoch_key):
        return jax.lax.scan(step, carry, shuffled_minibatches(epoch_key, batch, num_minibatches))

    return jax.lax.scan(epoch, carry, jax.random.split(key, num_epochs))
