"""Proximal Policy Optimisation (clipped surrogate, GAE, clipped value loss): maths and state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from research.agents.base import Agent, AgentEntry
from research.config import (
    BOOL,
    NONNEG_FLOAT,
    POS_FLOAT,
    POS_INT,
    UNIT,
    Rule,
    check_minibatches,
    setting,
)
from research.envs import EnvSpec
from research.rl import optim
from research.rl.minibatch import flatten_time, minibatch_epochs
from research.rl.networks import ActorCritic
from research.rl.normalization import RunningMeanStd
from research.rl.policy import Policy, actor_critic_objective, standardize
from research.rl.returns import gae
from research.rl.rollout import Transition


@dataclass(frozen=True)
class PPOConfig:
    """Static PPO settings (shapes and loop counts)."""

    num_envs: int = setting(4, POS_INT)
    num_steps: int = setting(128, POS_INT)
    num_epochs: int = setting(4, POS_INT)
    num_minibatches: int = setting(4, POS_INT)
    hidden_sizes: tuple[int, ...] = setting((64, 64), POS_INT, sequence=True)
    activation: str = setting("tanh", Rule("str", choices=("tanh", "relu")))
    normalize_obs: bool = setting(False, BOOL)
    anneal_lr: bool = setting(True, BOOL)
    layer_norm: bool = setting(False, BOOL)  # LayerNorm before each hidden activation


@struct.dataclass
class PPOHParams:
    """Traced PPO hyperparameters: each leaf is a scalar, or [R] across runs."""

    lr: float = setting(2.5e-4, POS_FLOAT)
    gamma: float = setting(0.99, UNIT)
    gae_lambda: float = setting(0.95, UNIT)
    clip_eps: float = setting(0.2, POS_FLOAT)
    ent_coef: float = setting(0.01, NONNEG_FLOAT)
    vf_coef: float = setting(0.5, NONNEG_FLOAT)
    max_grad_norm: float = setting(0.5, POS_FLOAT)
    init_log_std: float = setting(0.0, Rule("float"))
    reward_scale: float = setting(1.0, POS_FLOAT)
    l2_init: float = setting(0.0, NONNEG_FLOAT)  # weight of the L2 pull to the starting params
    weight_decay: float = setting(0.0, NONNEG_FLOAT)  # decoupled, AdamW-style (rl/optim.py)


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


def make(
    config: PPOConfig,
    spec: EnvSpec,
    total_updates: int,
    optimizer: optim.Optimizer = optim.Optimizer(),
) -> Agent:
    """PPO for `spec`; `total_updates` sets the linear learning-rate anneal."""
    network = ActorCritic(spec, config.hidden_sizes, config.activation, config.layer_norm)
    policy = Policy(network, config.normalize_obs)

    def init(key: jax.Array, hparams: PPOHParams) -> PPOState:
        params, obs_stats = policy.init(key, hparams.init_log_std)
        return PPOState(params, optimizer.init(params), obs_stats, jnp.zeros((), jnp.int32))

    def act(
        state: PPOState, obs: jax.Array, key: jax.Array, hparams: PPOHParams, explore: bool = True
    ) -> tuple[jax.Array, dict]:
        return policy.act(state.params, state.obs_stats, obs, key, explore)

    def loss(params, minibatch, hparams: PPOHParams, penalty):
        obs, action, old_logp, old_value, adv, target = minibatch
        dist, value = network.apply(params, obs)
        policy_loss = clipped_surrogate(
            dist.log_prob(action), old_logp, standardize(adv), hparams.clip_eps
        )
        value_loss = clipped_value_loss(value, old_value, target, hparams.clip_eps)
        total, metrics = actor_critic_objective(
            policy_loss, value_loss, dist.entropy().mean(), hparams.vf_coef, hparams.ent_coef
        )
        return optim.with_penalty(total, penalty, params, obs), metrics

    def update(
        state: PPOState, batch: Transition, key: jax.Array, hparams: PPOHParams, penalty=None
    ) -> tuple[PPOState, dict]:
        obs = policy.observe(state.obs_stats, batch.obs)
        next_obs = policy.observe(state.obs_stats, batch.next_obs)
        _, next_values = network.apply(state.params, next_obs)
        advantages, targets = gae(
            batch.reward * hparams.reward_scale,
            batch.aux["value"],
            next_values,
            batch.terminated,
            batch.truncated,
            hparams.gamma,
            hparams.gae_lambda,
        )
        flat = flatten_time(
            (obs, batch.action, batch.aux["log_prob"], batch.aux["value"], advantages, targets)
        )
        lr = optim.annealed_lr(hparams.lr, state.num_updates, total_updates, config.anneal_lr)

        def sgd_step(carry, minibatch):
            params, opt_state = carry
            grads, metrics = jax.grad(loss, has_aux=True)(params, minibatch, hparams, penalty)
            params, opt_state, grad_norm = optimizer.step(
                opt_state, params, grads, lr, hparams.max_grad_norm, hparams.weight_decay
            )
            return (params, opt_state), {**metrics, "grad_norm": grad_norm}

        (params, opt_state), metrics = minibatch_epochs(
            key,
            (state.params, state.opt_state),
            flat,
            config.num_epochs,
            config.num_minibatches,
            sgd_step,
        )
        obs_stats = policy.update_stats(state.obs_stats, batch.obs)
        new_state = PPOState(params, opt_state, obs_stats, state.num_updates + 1)
        return new_state, jax.tree.map(jnp.mean, metrics)

    def value(state, obs: jax.Array) -> jax.Array:
        return policy.value(state.params, state.obs_stats, obs)

    observe = lambda state, obs: policy.observe(state.obs_stats, obs)
    return Agent(init, act, update, value, network.apply, observe)


ENTRY = AgentEntry(
    name="ppo",
    make=make,
    config=PPOConfig,
    hparams=PPOHParams,
    state=PPOState,
    discrete_actions=True,
    continuous_actions=True,
    network_fields=("hidden_sizes", "activation", "normalize_obs"),
    loaded_fields=("obs_stats",),
    check=check_minibatches,
)
