"""Evaluation: the greedy policy's return on given env params, optionally under obs noise.

The only evaluation loop. It reuses the rollout: N envs run for T steps with
`explore=False`, and each env's first completed episode counts, so every
episode is scored from its reset. T must cover the longest episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.agents import Agent
from research.envs import Env
from research.envs.registry import ObservedMetric
from research.platform import straight_line_threefry
from research.rl.rollout import reset_envs, rollout


def first_episode_returns(done: jax.Array, episode_return: jax.Array) -> jax.Array:
    """Return of each env's first completed episode, [N] (NaN where none ended).

    done, episode_return: [T, N], episode_return read where done.
    """
    first = done & (jnp.cumsum(done, axis=0) == 1)
    return jnp.where(first.any(0), jnp.sum(jnp.where(first, episode_return, 0.0), 0), jnp.nan)


def first_episode(done: jax.Array) -> jax.Array:
    """[T, N] bool: the steps of each env's first episode, its last step included.

    done: [T, N].
    """
    return jnp.cumsum(done, axis=0) - done == 0


def first_episode_metric(
    metric: Callable | ObservedMetric,
    done: jax.Array,
    reward: jax.Array,
    env_params: Any,
    next_obs: jax.Array | None = None,
) -> jax.Array:
    """metric(rewards [T], env_params) -> [] of each env's first episode, [N] (NaN where none
    ended); its rewards are zero after the episode's end. done, reward: [T, N]. An
    `ObservedMetric` is given next_obs [T, N, ...] and the first episode's steps instead."""
    valid = first_episode(done)
    if isinstance(metric, ObservedMetric):
        values = jax.vmap(metric.fn, in_axes=(1, 1, None))(next_obs, valid, env_params)
    else:
        rewards = jnp.where(valid, reward, 0.0)
        values = jax.vmap(metric, in_axes=(1, None))(rewards, env_params)
    return jnp.where(done.any(0), values, jnp.nan)


def make_evaluate(
    agent: Agent, env: Env, num_envs: int, num_steps: int, metric: Callable | None = None
) -> Callable:
    """evaluate(agent_state, hparams, env_params, key, obs_noise []) -> mean return [].

    obs_noise: std of Gaussian noise added to every observation the agent sees
    (robustness); integer (state-index) observations are never perturbed.
    metric: score each first episode by metric(rewards [T], env_params) -> [] instead of
    its return (e.g. the trading env's max drawdown: research.envs.registry.EnvEntry
    .episode_metrics).
    """

    def evaluate(agent_state, hparams, env_params, key, obs_noise):
        reset_key, run_key = jax.random.split(key)
        obs, env_state = reset_envs(env, reset_key, env_params, num_envs)

        def act(obs, k, env_state):
            noise_key, act_key = jax.random.split(k)
            if jnp.issubdtype(obs.dtype, jnp.floating):
                obs = obs + obs_noise * jax.random.normal(noise_key, obs.shape, obs.dtype)
            return agent.act(agent_state, obs, act_key, hparams, False)

        _, batch = rollout(env, act, env_params, env_state, obs, run_key, num_steps)
        done = batch.terminated | batch.truncated
        if metric is not None:
            values = first_episode_metric(metric, done, batch.reward, env_params, batch.next_obs)
            return jnp.nanmean(values)
        return jnp.nanmean(first_episode_returns(done, batch.episode_return))

    return evaluate


def make_collect(agent: Agent, env: Env, num_envs: int, num_states: int) -> Callable:
    """collect(agent_state, hparams, env_params, key) -> {"obs": [S, *obs_shape], "action":
    [S, ...]}: S = num_states states the greedy policy visits on env_params (num_envs
    envs, auto-resetting) and its action in each: the source data a checkpoint keeps for
    behaviour cloning, EWC's Fisher and the forgetting measures."""
    num_steps = -(-num_states // num_envs)

    def collect(agent_state, hparams, env_params, key):
        reset_key, run_key = jax.random.split(key)
        obs, env_state = reset_envs(env, reset_key, env_params, num_envs)
        act = lambda obs, k, env_state: agent.act(agent_state, obs, k, hparams, False)
        _, batch = rollout(env, act, env_params, env_state, obs, run_key, num_steps)
        flat = lambda x: x.reshape(num_steps * num_envs, *x.shape[2:])[:num_states]
        return {"obs": flat(batch.obs), "action": flat(batch.action)}

    return collect


def collect_batch(
    collect: Callable, agent_states: Any, hparams: Any, env_params: Any, seeds: np.ndarray
) -> dict[str, np.ndarray]:
    """`make_collect`'s data for R runs, leaves [R, S, ...] (arguments' leaves [R, ...])."""
    keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
    with straight_line_threefry():
        data = jax.jit(jax.vmap(collect))(agent_states, hparams, env_params, keys)
    return jax.tree.map(np.asarray, data)


def evaluate_batch(
    evaluate: Callable,
    agent_states: Any,
    hparams: Any,
    env_params: Any,
    seeds: np.ndarray,
    obs_noise: float = 0.0,
) -> np.ndarray:
    """Mean greedy return of R runs, [R]; every leaf of the first three has leading [R].

    One compiled program per evaluator and shapes: new params, seeds or noise reuse it.
    """
    if evaluate not in _BATCHED:
        _BATCHED[evaluate] = jax.jit(jax.vmap(evaluate, (0, 0, 0, 0, None)))
    batched = _BATCHED[evaluate]
    keys = jax.vmap(jax.random.key)(np.asarray(seeds, np.uint32))
    with straight_line_threefry():  # the first call lowers the program
        return np.asarray(batched(agent_states, hparams, env_params, keys, np.float32(obs_noise)))


_BATCHED: dict[Callable, Callable] = {}
