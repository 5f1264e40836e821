"""Proximal Policy Optimisation (clipped surrogate, GAE, clipped value loss): maths and state."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from research.agents.base import Agent
from research.config import PPOConfig, PPOHParams
from research.envs import EnvSpec
from research.rl import optim
from research.rl.minibatch import flatten_time, minibatch_epochs
from research.rl.networks import ActorCritic
from research.rl.normalization import RunningMeanStd
from research.rl.returns import gae
from research.rl.rollout import Transition


@struct.dataclass
class PPOState:
    params: Any
    opt_state: Any
    obs_stats: RunningMeanStd
    num_updates: jax.Array  # [] int32: updates done so far


def clipped_surrogate(
    logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, clip_eps: jax.Array
) -> jax.Array:
    """PPO policy loss, mean over [B]: -E[min(rho A, clip(rho, 1 +- eps) A)]."""
    ratio = jnp.exp(logp - old_logp)
    clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return -jnp.mean(jnp.minimum(ratio * advantages, clipped * advantages))


def clipped_value_loss(
    values: jax.Array, old_values: jax.Array, targets: jax.Array, clip_eps: jax.Array
) -> jax.Array:
    """0.5 * E[max((V - G)^2, (V_clip - G)^2)], V_clip within clip_eps of the old value. [B]."""
    clipped = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    return 0.5 * jnp.mean(jnp.maximum((values - targets) ** 2, (clipped - targets) ** 2))


def make(config: PPOConfig, spec: EnvSpec, total_updates: int) -> Agent:
    """PPO for `spec`; `total_updates` sets the linear learning-rate anneal."""
    network = ActorCritic(spec, config.hidden_sizes, config.activation)
    optimizer = optim.adam()

    def observe(state: PPOState, obs: jax.Array) -> jax.Array:
        return state.obs_stats.normalize(obs) if config.normalize_obs else obs

    def init(key: jax.Array, hparams: PPOHParams) -> PPOState:
        params = network.init(key, jnp.zeros((1, *spec.obs_shape)))
        if not spec.discrete:
            params["params"]["log_std"] = params["params"]["log_std"] + hparams.init_log_std
        return PPOState(params, optimizer.init(params), RunningMeanStd.create(spec.obs_shape),
                        jnp.zeros((), jnp.int32))

    def act(state: PPOState, obs: jax.Array, key: jax.Array, hparams: PPOHParams,
            explore: bool = True) -> tuple[jax.Array, dict]:
        dist, value = network.apply(state.params, observe(state, obs))
        action = dist.sample(key) if explore else dist.mode()
        return action, {"log_prob": dist.log_prob(action), "value": value}

    def loss(params, minibatch, hparams: PPOHParams):
        obs, action, old_logp, old_value, adv, target = minibatch
        dist, value = network.apply(params, obs)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        policy_loss = clipped_surrogate(dist.log_prob(action), old_logp, adv, hparams.clip_eps)
        value_loss = clipped_value_loss(value, old_value, target, hparams.clip_eps)
        entropy = dist.entropy().mean()
        total = policy_loss + hparams.vf_coef * value_loss - hparams.ent_coef * entropy
        return total, {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy}

    def update(state: PPOState, batch: Transition, key: jax.Array,
               hparams: PPOHParams) -> tuple[PPOState, dict]:
        obs, next_obs = observe(state, batch.obs), observe(state, batch.next_obs)
        _, next_values = network.apply(state.params, next_obs)
        advantages, targets = gae(batch.reward * hparams.reward_scale, batch.aux["value"], next_values,
                                  batch.terminated, batch.truncated,
                                  hparams.gamma, hparams.gae_lambda)
        flat = flatten_time((obs, batch.action, batch.aux["log_prob"], batch.aux["value"],
                             advantages, targets))
        frac = 1.0 - state.num_updates / total_updates if config.anneal_lr else 1.0
        lr = hparams.lr * frac

        def sgd_step(carry, minibatch):
            params, opt_state = carry
            grads, metrics = jax.grad(loss, has_aux=True)(params, minibatch, hparams)
            params, opt_state, grad_norm = optim.apply_gradients(
                optimizer, opt_state, params, grads, lr, hparams.max_grad_norm)
            return (params, opt_state), {**metrics, "grad_norm": grad_norm}

        (params, opt_state), metrics = minibatch_epochs(
            key, (state.params, state.opt_state), flat, config.num_epochs,
            config.num_minibatches, sgd_step)
        # Statistics move after the update, so acting and learning saw the same normalisation.
        obs_stats = state.obs_stats.update(batch.obs) if config.normalize_obs else state.obs_stats
        new_state = PPOState(params, opt_state, obs_stats, state.num_updates + 1)
        return new_state, jax.tree.map(jnp.mean, metrics)

    return Agent(init=init, act=act, update=update)
