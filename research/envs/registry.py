"""One registry for every environment: gymnax's built-ins and the project's own.

`make(env_id)` returns the wrapped environment the runner steps; `spec` tells an
agent the observation shape and the action space without touching gymnax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnax
import numpy as np
from gymnax.environments import spaces

from research.config import ConfigError
from research.envs import trading
from research.envs.arm import ARMS
from research.envs.gridworld import GridWorld
from research.envs.probes import PROBES
from research.envs.tabular import ENCODED

_OWN: dict[str, Any] = {
    **PROBES,
    "GridWorld-tabular": GridWorld,
    **ENCODED,
    **ARMS,
    **trading.TRADING,
}

# Per-episode statistics beyond the return, by env id: name -> fn(rewards [T] of one
# episode from its start, zeros after its end; env params) -> []. Evaluation reports them.
EPISODE_METRICS: dict[str, dict[str, Any]] = {
    "Trading-v0": {"max_drawdown": trading.max_drawdown},
}

# Ids observed as state indices (a Discrete observation space), for tabular agents;
# any flat continuous env becomes one with env.discretize.
DISCRETE_STATE_IDS = ("GridWorld-tabular", *ENCODED, "FrozenLake-misc")


@dataclass(frozen=True)
class EnvSpec:
    """What an agent may know about an environment.

    obs_shape: shape of one observation.
    discrete: True for `Discrete(num_actions)`, False for a `Box` of `action_dim`.
    action_low / action_high: bounds of a continuous action (per dimension).
    num_states: > 0 when each observation is an int32 state index in [0, num_states)
    (obs_shape is then ()): what tabular agents need.
    """

    env_id: str
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    num_states: int = 0


def available() -> list[str]:
    """All environment ids, gymnax's first."""
    return list(gymnax.registered_envs) + [k for k in _OWN if k not in gymnax.registered_envs]


def register(env_id: str, factory: Any) -> None:
    """Adds an environment class (gymnax API) under `env_id`."""
    if env_id in available():
        raise ValueError(f"environment {env_id!r} is already registered")
    _OWN[env_id] = factory


def make_gymnax(env_id: str) -> tuple[Any, Any]:
    """The raw gymnax environment and its default params; ConfigError if unknown."""
    if env_id in _OWN:
        env = _OWN[env_id]()
        return env, env.default_params
    if env_id in gymnax.registered_envs:
        return gymnax.make(env_id)
    raise ConfigError(f"env.id: got {env_id!r}; allowed: {', '.join(available())}")


def spec_of(env_id: str, env: Any, params: Any) -> EnvSpec:
    obs_space = env.observation_space(params)
    obs_shape = tuple(int(d) for d in obs_space.shape)
    num_states = int(obs_space.n) if isinstance(obs_space, spaces.Discrete) else 0
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(env_id, obs_shape, True, num_actions=int(space.n), num_states=num_states)
    if isinstance(space, spaces.Box):
        shape = tuple(space.shape) or (1,)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).reshape(-1)
        return EnvSpec(
            env_id,
            obs_shape,
            False,
            action_dim=int(np.prod(shape)),
            action_low=tuple(map(float, low)),
            action_high=tuple(map(float, high)),
            num_states=num_states,
        )
    raise ConfigError(
        f"env.id: {env_id!r} has action space {type(space).__name__}; supported: Discrete, Box"
    )
