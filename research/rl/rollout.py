"""Collects T steps from N environments with any agent's `act`: the only rollout loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from research.envs import Env, EnvState


class Transition(NamedTuple):
    """A rollout, time-major: every leaf is [T, N, ...].

    next_obs is the true successor s' (final observation where an episode ended);
    aux holds what `act` returned beside the action (e.g. log-prob, value).
    episode_return / episode_length are of the episode ending at that step (read where done).
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    next_obs: jax.Array
    aux: Any
    episode_return: jax.Array
    episode_length: jax.Array


# (obs [N, ...], key, env_state [N]) -> (action [N, ...], aux); the env states let a
# policy depend on where each episode is (e.g. its step count, for guide-policy roll-in).
ActFn = Callable[[jax.Array, jax.Array, EnvState], tuple[jax.Array, Any]]


def reset_envs(
    env: Env, key: jax.Array, env_params: Any, num_envs: int
) -> tuple[jax.Array, EnvState]:
    """obs [N, ...], states [N] from N fresh episodes."""
    return jax.vmap(env.reset, in_axes=(0, None))(jax.random.split(key, num_envs), env_params)


def rollout(
    env: Env,
    act: ActFn,
    env_params: Any,
    env_state: EnvState,
    obs: jax.Array,
    key: jax.Array,
    num_steps: int,
) -> tuple[tuple[EnvState, jax.Array], Transition]:
    """Steps N envs (auto-resetting) for num_steps.

    Returns ((env_state, obs), Transition [T, N])."""
    num_envs = obs.shape[0]
    step_envs = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def one_step(carry, keys):
        env_state, obs = carry
        action, aux = act(obs, keys[0], env_state)
        env_state, ts = step_envs(keys[1:], env_state, action, env_params)
        transition = Transition(
            obs,
            action,
            ts.reward,
            ts.terminated,
            ts.truncated,
            ts.next_obs,
            aux,
            ts.episode_return,
            ts.episode_length,
        )
        return (env_state, ts.obs), transition

    # Every step's keys in one draw [T, 1 + N] (acting, then each env): each separate
    # random call in a program costs its own compile time, about 0.5 s on CPU at -O3.
    keys = jax.random.split(key, (num_steps, 1 + num_envs))
    return jax.lax.scan(one_step, (env_state, obs), keys)
