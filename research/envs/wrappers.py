"""The only code that calls the gymnax step API.

`Env` wraps one gymnax environment with auto-reset and episode statistics and
hands the runner a `Timestep` in which termination and truncation stay apart:
`next_obs` is the true successor s' of the transition (gymnax's
`info["final_observation"]` where the episode ended), so a learner can
bootstrap from it on truncation and must not on termination.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from research.envs.registry import EnvSpec, make_gymnax, spec_of
from research.envs.tabular import discretized


@struct.dataclass
class EnvState:
    """Gymnax state plus the running return and length of the current episode."""

    inner: Any
    episode_return: jax.Array  # float32 []
    episode_length: jax.Array  # int32 []


class Timestep(NamedTuple):
    """One transition of one environment; every field is per-env (shape [] or obs shape).

    obs: the observation to act on next (already reset where the episode ended).
    next_obs: s' of this transition: the final observation where the episode ended.
    episode_return / episode_length: of the episode that ended here; read only where done.
    """

    obs: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    episode_return: jax.Array
    episode_length: jax.Array

    @property
    def done(self) -> jax.Array:
        return jnp.logical_or(self.terminated, self.truncated)


class Env:
    """A single environment; the runner vmaps `reset` / `step` over envs and runs."""

    def __init__(self, env_id: str, discretize: Any = None):
        """discretize: None, or bins / low / high per observation dimension (config.Discretize)."""
        self.env_id = env_id
        self.gymnax_env, self.default_params = make_gymnax(env_id)
        if discretize is not None:
            self.gymnax_env = discretized(env_id, self.gymnax_env, self.default_params, discretize)
        self.spec: EnvSpec = spec_of(env_id, self.gymnax_env, self.default_params)
        # State indices stay integers (tabular agents index with them); all else is float32.
        self._obs_dtype = jnp.int32 if self.spec.num_states else jnp.float32

    def reset(self, key: jax.Array, params: Any) -> tuple[jax.Array, EnvState]:
        obs, inner = self.gymnax_env.reset(key, params)
        zero = jnp.zeros((), jnp.float32)
        return obs.astype(self._obs_dtype), EnvState(inner, zero, jnp.zeros((), jnp.int32))

    def _env_action(self, action: jax.Array, params: Any) -> jax.Array:
        if self.spec.discrete:
            return action
        space = self.gymnax_env.action_space(params)
        return jnp.clip(action, space.low, space.high).reshape(space.shape)

    def step(
        self, key: jax.Array, state: EnvState, action: jax.Array, params: Any
    ) -> tuple[EnvState, Timestep]:
        obs, inner, reward, terminated, truncated, info = self.gymnax_env.step(
            key, state.inner, self._env_action(action, params), params
        )
        reward = jnp.asarray(reward, jnp.float32).reshape(())
        terminated = jnp.asarray(terminated, bool).reshape(())
        # A step that terminates is not truncated: the bootstrap target is 0 either way.
        truncated = jnp.logical_and(jnp.asarray(truncated, bool).reshape(()), ~terminated)
        done = jnp.logical_or(terminated, truncated)
        ep_return = state.episode_return + reward
        ep_length = state.episode_length + 1
        new_state = EnvState(
            inner,
            jnp.where(done, 0.0, ep_return),
            jnp.where(done, 0, ep_length),
        )
        timestep = Timestep(
            obs=obs.astype(self._obs_dtype),
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            next_obs=info["final_observation"].astype(self._obs_dtype),
            episode_return=ep_return,
            episode_length=ep_length,
        )
        return new_state, timestep
