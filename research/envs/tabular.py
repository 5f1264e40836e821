"""Discrete-state views of environments, for tabular agents.

`IndexObservation` wraps a gymnax environment so that every observation, and
`info["final_observation"]`, is an int32 state index in [0, num_states); its
observation space is `Discrete(num_states)`, which is what `EnvSpec.num_states`
is read from. Encoders (obs -> index):

- `four_rooms_encoder`, `deep_sea_encoder`: exact, for gymnax's FourRooms-misc and
  DeepSea-bsuite (registered as FourRooms-tabular and DeepSea-tabular);
- `bin_index`: a grid of equal bins over [low, high] per dimension, for any flat
  continuous observation (`env.discretize` in the config).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
from gymnax.environments import spaces
from gymnax.wrappers.purerl import GymnaxWrapper

from research.config import ConfigError
from research.envs.registry import EnvEntry, Range, register

Encoder = Callable[[jax.Array], jax.Array]  # one observation -> [] int32 state index


class IndexObservation(GymnaxWrapper):
    """The wrapped environment, observed through `encode` as one of `num_states` indices."""

    def __init__(self, env: Any, encode: Encoder, num_states: int):
        super().__init__(env)
        self.encode = encode
        self.num_states = num_states

    def reset(self, key: jax.Array, params: Any = None) -> tuple[jax.Array, Any]:
        obs, state = self._env.reset(key, params)
        return self.encode(obs), state

    def step(self, key: jax.Array, state: Any, action: Any, params: Any = None):
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, params)
        info = {**info, "final_observation": self.encode(info["final_observation"])}
        return self.encode(obs), state, reward, terminated, truncated, info

    def observation_space(self, params: Any = None) -> spaces.Discrete:
        return spaces.Discrete(self.num_states)


def bin_index(
    obs: jax.Array, bins: Sequence[int], low: Sequence[float], high: Sequence[float]
) -> jax.Array:
    """obs [D] -> [] int32: the cell of an equal-width grid of bins[d] bins over [low, high].

    Values outside [low, high] fall into the edge bins. Cells are numbered in C order
    (the first dimension varies slowest), so there are prod(bins) states.
    """
    bins_a = jnp.asarray(bins, jnp.int32)
    low_a, high_a = jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32)
    cell = jnp.floor((obs - low_a) / (high_a - low_a) * bins_a).astype(jnp.int32)
    cell = jnp.clip(cell, 0, bins_a - 1)
    strides = np.cumprod((list(bins) + [1])[:0:-1])[::-1]  # prod(bins[d + 1:])
    return jnp.sum(cell * jnp.asarray(strides, jnp.int32)).astype(jnp.int32)


def four_rooms_encoder(env: Any) -> tuple[Encoder, int]:
    """FourRooms obs [4] = (pos_row, pos_col, goal_row, goal_col) -> goal_cell * n + pos_cell.

    Cells are the n = 104 open squares in row-major order. The goal is part of the
    state because `resample_goal_pos` may move it; with a fixed goal only n states occur.
    """
    open_map = np.asarray(env.env_map, bool)
    cells = np.full(open_map.shape, -1, np.int32)
    cells[open_map] = np.arange(open_map.sum())
    n, lookup = int(open_map.sum()), jnp.asarray(cells)

    def encode(obs: jax.Array) -> jax.Array:
        o = obs.astype(jnp.int32)
        return lookup[o[2], o[3]] * n + lookup[o[0], o[1]]

    return encode, n * n


def deep_sea_encoder(env: Any) -> tuple[Encoder, int]:
    """DeepSea obs [size, size], one-hot at (row, col) -> row * size + col.

    After the last row the observation is all zeros: that terminal state is size**2.
    """
    cells = env.size * env.size

    def encode(obs: jax.Array) -> jax.Array:
        flat = obs.reshape(-1)
        return jnp.where(flat.max() > 0, jnp.argmax(flat), cells).astype(jnp.int32)

    return encode, cells + 1


def _encoded(gymnax_id: str, encoder: Callable[[Any], tuple[Encoder, int]]) -> Callable[[], Any]:
    def factory() -> IndexObservation:
        env, _ = gymnax.make(gymnax_id)
        return IndexObservation(env, *encoder(env))

    return factory


ENCODED = {
    "FourRooms-tabular": _encoded("FourRooms-misc", four_rooms_encoder),
    "DeepSea-tabular": _encoded("DeepSea-bsuite", deep_sea_encoder),
}

# gymnax's FourRooms replaces the action by a uniformly random one of the four with
# probability fail_prob * 4/3, so a move goes another way with probability fail_prob; above
# 0.75 every move would be random (the same as 0.75). DeepSea's unscaled_move_cost is free:
# a negative cost pays for moving right, a well-defined ablation of its exploration problem.
FOUR_ROOMS_RANGES = {
    "fail_prob": Range(
        low=0.0, high=0.75, why="the chance a move goes another way; at 0.75 all moves are random"
    )
}
RANGES = {"FourRooms-tabular": FOUR_ROOMS_RANGES}

for _env_id, _factory in ENCODED.items():
    register(EnvEntry(_env_id, _factory, discrete_states=True, ranges=RANGES.get(_env_id, {})))


def discretized(env_id: str, env: Any, params: Any, discretize: Any) -> IndexObservation:
    """`env` observed through `bin_index`; `discretize` has bins, low, high (config.Discretize).

    ConfigError when the environment already has discrete states, or its observation
    is not a flat vector with one entry per bin count.
    """
    space = env.observation_space(params)
    if isinstance(space, spaces.Discrete):
        raise ConfigError(
            f"env.discretize: env.id {env_id!r} already has discrete states "
            f"({space.n}); remove env.discretize"
        )
    shape = tuple(int(d) for d in space.shape)
    if len(shape) != 1:
        raise ConfigError(
            f"env.discretize: needs a flat observation vector; env.id {env_id!r} "
            f"has observations of shape {shape}"
        )
    if len(discretize.bins) != shape[0]:
        raise ConfigError(
            f"env.discretize.bins: got {len(discretize.bins)} values; env.id {env_id!r} has "
            f"{shape[0]} observation dimensions, so bins, low and high need {shape[0]} "
            "entries each"
        )
    encode = partial(bin_index, bins=discretize.bins, low=discretize.low, high=discretize.high)
    return IndexObservation(env, encode, math.prod(discretize.bins))
