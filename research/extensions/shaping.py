"""Reward shaping: the rewards the agent learns from get a shaping term.

kind "potential": F = gamma * Phi(s') - Phi(s) (policy-preserving); kind "bonus":
1 / (distance(s') + 1) (not). The weight is the traced ShapingHParams of the run
(`RunParams.ext["shaping"]`) times its schedule's factor (research.rl.shaping). The logged
episode_return stays the env's own (unshaped) return; shaped_return and shaping_weight are
logged beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from research.rl.shaping import episode_sums, potential_term, proximity_bonus, schedule_factor
from research.runner.extension import Extension, Start, Step
from research.runner.train import episode_metrics


@struct.dataclass
class ShapingStats:
    return_ema: jax.Array  # [] running mean of the unshaped episode return (adaptive schedule)
    shaped_return: jax.Array  # [N] shaped return of each env's episode so far


@dataclass(frozen=True)
class RewardShaping(Extension):
    """kind "potential" with fn = Phi, or "bonus" with fn = distance to the goal;
    fn(obs [..., *obs_shape], env_params) -> [...]."""

    kind: str
    fn: Callable[[Any, Any], Any]
    num_envs: int
    name: str = "shaping"
    traced = True

    def start(self, s: Start) -> tuple[Any, ShapingStats]:
        return s.agent_state, ShapingStats(s.traced.return_low, jnp.zeros(self.num_envs))

    def term(self, batch: Any, env_params: Any, gamma: jax.Array) -> jax.Array:
        """The shaping term per unit weight, [T, N]."""
        if self.kind == "potential":
            phi = lambda obs: self.fn(obs, env_params)
            terminated = batch.terminated.astype(jnp.float32)
            return potential_term(phi(batch.obs), phi(batch.next_obs), terminated, gamma)
        return proximity_bonus(self.fn(batch.next_obs, env_params))

    def on_batch(self, batch: Any, stats: ShapingStats, step: Step):
        h = step.traced
        factor = schedule_factor(
            h.schedule, step.progress, h.anneal_fraction, h.decay, stats.return_ema,
            h.return_low, h.return_high,
        )  # fmt: skip
        weight = h.weight * factor
        reward = batch.reward + weight * self.term(batch, step.env_params, step.hparams.gamma)
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

    def on_segment(self, agent_state: Any, stats: ShapingStats, metrics: Any, step: Step):
        shaped, done = metrics["shaped_return"]
        row = {
            "shaped_return": episode_metrics(done, shaped, shaped)["episode_return"],
            "shaping_weight": metrics["shaping_weight"].mean(),
        }
        return agent_state, stats, row
