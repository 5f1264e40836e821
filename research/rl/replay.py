"""A fixed-size circular replay buffer per run, as a pytree (vmappable over runs)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class ReplayBuffer:
    data: Any  # pytree, leaves [capacity, ...]
    position: jax.Array  # [] int32: next slot to write
    size: jax.Array  # [] int32: filled slots

    @property
    def capacity(self) -> int:
        return jax.tree.leaves(self.data)[0].shape[0]


def buffer_init(example: Any, capacity: int) -> ReplayBuffer:
    """An empty buffer whose items look like `example` (one item, no leading axis)."""
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example
    )
    return ReplayBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def buffer_add(buffer: ReplayBuffer, items: Any) -> ReplayBuffer:
    """Writes items (leaves [B, ...], B <= capacity) after the newest, overwriting the oldest."""
    count = jax.tree.leaves(items)[0].shape[0]
    index = (buffer.position + jnp.arange(count)) % buffer.capacity
    data = jax.tree.map(lambda d, x: d.at[index].set(x.astype(d.dtype)), buffer.data, items)
    return ReplayBuffer(
        data,
        (buffer.position + count) % buffer.capacity,
        jnp.minimum(buffer.size + count, buffer.capacity),
    )


def buffer_sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Any:
    """batch_size items drawn uniformly (with replacement) from the filled slots."""
    index = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree.map(lambda d: d[index], buffer.data)


def buffer_bytes(buffer: ReplayBuffer) -> int:
    """Memory of one run's buffer."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(buffer.data))
