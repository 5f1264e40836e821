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
from research.envs.probes import PROBES

_OWN: dict[str, Any] = {**PROBES}


@dataclass(frozen=True)
class EnvSpec:
    """What an agent may know about an environment.

    obs_shape: shape of one observation.
    discrete: True for `Discrete(num_actions)`, False for a `Box` of `action_dim`.
    action_low / action_high: bounds of a continuous action (per dimension).
    """

    env_id: str
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()


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
    obs_shape = tuple(int(d) for d in env.observation_space(params).shape)
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(env_id, obs_shape, True, num_actions=int(space.n))
    if isinstance(space, spaces.Box):
        shape = tuple(space.shape) or (1,)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).reshape(-1)
        return EnvSpec(env_id, obs_shape, False, action_dim=int(np.prod(shape)),
                       action_low=tuple(map(float, low)), action_high=tuple(map(float, high)))
    raise ConfigError(f"env.id: {env_id!r} has action space {type(space).__name__}; "
                      "supported: Discrete, Box")
