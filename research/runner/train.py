"""`make_train`: the only training loop, for one run, as pure jittable functions.

A run is split into `num_logs` equal segments of updates. Each segment returns
one row of metrics, so metrics are logged at an interval, never every step.
The batched executor (`research.runner.execute`) scans segments over a vmapped
batch of runs; `train` here is the same computation for a single run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from research.agents import Agent
from research.config import FinetuneConfig
from research.envs import Env, EnvState, interpolate
from research.rl.rollout import reset_envs, rollout
from research.rl.shaping import episode_sums, potential_term, proximity_bonus, schedule_factor
from research.runner.finetune import adopt


@struct.dataclass
class Shift:
    """Env params of runs whose environment changes during training: before -> after."""

    before: Any
    after: Any


@struct.dataclass
class Shaped:
    """Env params of runs with reward shaping: the env's, and the traced ShapingHParams."""

    env: Any
    shaping: Any


class Shaping(NamedTuple):
    """Static shaping: kind "potential" with fn = Phi, or "bonus" with fn = distance to the
    goal; fn(obs [..., *obs_shape], env_params) -> [...]."""

    kind: str
    fn: Callable[[Any, Any], Any]


@struct.dataclass
class ShapingStats:
    return_ema: jax.Array  # [] running mean of the unshaped episode return (adaptive schedule)
    shaped_return: jax.Array  # [N] shaped return of each env's episode so far


@struct.dataclass
class RunnerState:
    agent_state: Any
    env_state: EnvState  # [N]
    obs: jax.Array  # [N, *obs_shape]
    key: jax.Array
    num_updates: jax.Array  # [] int32
    shaping: ShapingStats | None = None


class Trainer(NamedTuple):
    """Pure functions of one run. Statics (sizes, counts) are closed over.

    init(key, hparams, env_params, init_state=None) -> RunnerState
    segment(runner, hparams, env_params) -> (runner, metrics: dict of [] scalars)
    train(key, hparams, env_params, init_state=None) -> (agent_state, metrics: dict of [num_logs])
    """

    init: Callable[..., RunnerState]
    segment: Callable[..., tuple[RunnerState, dict]]
    train: Callable[..., tuple[Any, dict]]
    num_logs: int
    steps_per_segment: int


def episode_metrics(done: jax.Array, episode_return: jax.Array, episode_length: jax.Array) -> dict:
    """Mean return and length of the episodes that ended (NaN if none did; never a fake 0)."""
    count = done.sum()
    mean = lambda x: jnp.where(
        count > 0, jnp.sum(jnp.where(done, x, 0.0)) / jnp.maximum(count, 1), jnp.nan
    )
    return {
        "episode_return": mean(episode_return),
        "episode_length": mean(episode_length),
        "episodes": count,
    }


def make_train(
    agent: Agent,
    env: Env,
    num_envs: int,
    num_steps: int,
    num_updates: int,
    num_logs: int,
    finetune: FinetuneConfig | None = None,
    env_shift: tuple[int, int] | None = None,
    shaping: Shaping | None = None,
) -> Trainer:
    """One run: `num_updates` updates of `num_envs * num_steps` env steps each.

    num_updates must be a multiple of num_logs (the config layer rounds it).
    An `init_state` continues training exactly as it is (resume), or, with `finetune`
    options, is adopted as a fine-tuning start (research.runner.finetune.adopt).
    env_shift (start, end): the env changes during training, and env_params is a `Shift`;
    updates before `start` see `before`, from `end` on `after`, linearly in between
    (start == end: a step change).
    shaping: rewards the agent learns from get a shaping term, and env_params is a
    `Shaped`; the logged episode_return stays the env's own (unshaped) return, and
    shaped_return / shaping_weight are logged beside it.
    """
    if num_updates % num_logs:
        raise ValueError(f"num_updates={num_updates} is not a multiple of num_logs={num_logs}")
    updates_per_log = num_updates // num_logs

    def params_at(env_params, update: jax.Array):
        if env_shift is None:
            return env_params
        start, end = env_shift
        weight = jnp.clip((update - start) / max(end - start, 1), 0.0, 1.0)
        weight = jnp.where(update >= end, 1.0, weight)
        return interpolate(env.env_id, env_params.before, env_params.after, weight)

    def split_shaping(env_params):
        return (env_params.env, env_params.shaping) if shaping is not None else (env_params, None)

    def shape(batch, stats: ShapingStats, h, env_params, hparams, progress):
        """(batch with shaped rewards, new stats, metrics)."""
        if shaping.kind == "potential":
            phi = lambda obs: shaping.fn(obs, env_params)
            term = potential_term(
                phi(batch.obs),
                phi(batch.next_obs),
                batch.terminated.astype(jnp.float32),
                hparams.gamma,
            )
        else:
            term = proximity_bonus(shaping.fn(batch.next_obs, env_params))
        weight = h.weight * schedule_factor(
            h.schedule,
            progress,
            h.anneal_fraction,
            h.decay,
            stats.return_ema,
            h.return_low,
            h.return_high,
        )
        reward = batch.reward + weight * term
        done = jnp.logical_or(batch.terminated, batch.truncated)
        shaped_returns, running = episode_sums(reward, done, stats.shaped_return)
        finished = episode_metrics(done, batch.episode_return, batch.episode_length)
        ema = jnp.where(
            finished["episodes"] > 0,
            stats.return_ema + h.return_rate * (finished["episode_return"] - stats.return_ema),
            stats.return_ema,
        )
        metrics = {"shaped_return": (shaped_returns, done), "shaping_weight": weight}
        return batch._replace(reward=reward), ShapingStats(ema, running), metrics

    def init(key, hparams, env_params, init_state=None) -> RunnerState:
        env_params, h = split_shaping(env_params)
        agent_key, env_key, run_key = jax.random.split(key, 3)
        agent_state = agent.init(agent_key, hparams)
        if init_state is not None:
            agent_state = (
                init_state if finetune is None else adopt(agent_state, init_state, finetune)
            )
        obs, env_state = reset_envs(env, env_key, params_at(env_params, 0), num_envs)
        stats = None if h is None else ShapingStats(h.return_low, jnp.zeros(num_envs))
        return RunnerState(agent_state, env_state, obs, run_key, jnp.zeros((), jnp.int32), stats)

    def one_update(runner: RunnerState, hparams, env_params):
        env_params, h = split_shaping(env_params)
        key, rollout_key, update_key = jax.random.split(runner.key, 3)
        env_params = params_at(env_params, runner.num_updates)
        act = lambda obs, k: agent.act(runner.agent_state, obs, k, hparams, True)
        (env_state, obs), batch = rollout(
            env, act, env_params, runner.env_state, runner.obs, rollout_key, num_steps
        )
        done = jnp.logical_or(batch.terminated, batch.truncated)
        episodes = {"done": done, "return": batch.episode_return, "length": batch.episode_length}
        stats = runner.shaping
        if shaping is not None:
            batch, stats, extra = shape(
                batch, stats, h, env_params, hparams, runner.num_updates / num_updates
            )
            episodes.update(extra)
        agent_state, metrics = agent.update(runner.agent_state, batch, update_key, hparams)
        runner = RunnerState(agent_state, env_state, obs, key, runner.num_updates + 1, stats)
        return runner, (metrics, episodes)

    def segment(runner: RunnerState, hparams, env_params) -> tuple[RunnerState, dict]:
        runner, (losses, episodes) = jax.lax.scan(
            lambda r, _: one_update(r, hparams, env_params), runner, None, updates_per_log
        )
        metrics = {
            "env_steps": runner.num_updates * (num_envs * num_steps),
            **episode_metrics(episodes["done"], episodes["return"], episodes["length"]),
            **jax.tree.map(jnp.mean, losses),
        }
        if shaping is not None:
            shaped, done = episodes["shaped_return"]
            metrics["shaped_return"] = episode_metrics(done, shaped, shaped)["episode_return"]
            metrics["shaping_weight"] = episodes["shaping_weight"].mean()
        return runner, metrics

    def train(key, hparams, env_params, init_state=None):
        runner = init(key, hparams, env_params, init_state)
        runner, metrics = jax.lax.scan(
            lambda r, _: segment(r, hparams, env_params), runner, None, num_logs
        )
        return runner.agent_state, metrics

    return Trainer(init, segment, train, num_logs, updates_per_log * num_envs * num_steps)
