"""REINFORCE (Monte-Carlo policy gradient) with a learned, running-mean or no baseline.

One gradient step per rollout on
    -mean(log pi(a|s) * (G - b)) - ent_coef * entropy + vf_coef * 0.5 * mean((V(s) - G)^2),
the value loss only where b is the learned V. G are discounted returns within the rollout.
With the "value" baseline they bootstrap from V(s') on truncation and at the rollout's end;
with "mean" or "none" they are pure Monte Carlo (an episode cut by the rollout's end counts
as ended there), so num_steps should then cover most of an episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from research.agents.base import Agent, AgentEntry
from research.config import BOOL, NONNEG_FLOAT, POS_FLOAT, POS_INT, UNIT, Rule, setting
from research.envs import EnvSpec
from research.rl import optim
from research.rl.networks import ActorCritic
from research.rl.normalization import RunningMeanStd
from research.rl.policy import Policy, actor_critic_objective, standardize
from research.rl.returns import discounted_returns
from research.rl.rollout import Transition


@dataclass(frozen=True)
class ReinforceConfig:
    """Static REINFORCE settings; baseline: learned "value", running "mean" return, or "none"."""

    num_envs: int = setting(8, POS_INT)
    num_steps: int = setting(128, POS_INT)
    hidden_sizes: tuple[int, ...] = setting((64, 64), POS_INT, sequence=True)
    activation: str = setting("tanh", Rule("str", choices=("tanh", "relu")))
    baseline: str = setting("value", Rule("str", choices=("value", "mean", "none")))
    normalize_obs: bool = setting(False, BOOL)
    normalize_advantages: bool = setting(False, BOOL)  # G - b to zero mean, unit std per batch
    layer_norm: bool = setting(False, BOOL)  # LayerNorm before each hidden activation


@struct.dataclass
class ReinforceHParams:
    lr: float = setting(1e-3, POS_FLOAT)
    gamma: float = setting(0.99, UNIT)
    ent_coef: float = setting(0.0, NONNEG_FLOAT)
    vf_coef: float = setting(0.5, NONNEG_FLOAT)
    baseline_decay: float = setting(0.99, UNIT)  # running-mean baseline
    max_grad_norm: float = setting(0.5, POS_FLOAT)
    init_log_std: float = setting(0.0, Rule("float"))
    reward_scale: float = setting(1.0, POS_FLOAT)
    l2_init: float = setting(0.0, NONNEG_FLOAT)  # weight of the L2 pull to the starting params
    weight_decay: float = setting(0.0, NONNEG_FLOAT)  # decoupled, AdamW-style (rl/optim.py)


@struct.dataclass
class ReinforceState:
    params: Any
    opt_state: Any
    obs_stats: RunningMeanStd
    baseline: jax.Array  # [] running mean of observed returns ("mean" baseline)
    num_updates: jax.Array  # [] int32: updates done so far


def policy_gradient_loss(log_probs: jax.Array, advantages: jax.Array) -> jax.Array:
    """-mean(log pi(a|s) * A) over [B] (or any shape); no gradient flows into A."""
    return -jnp.mean(log_probs * jax.lax.stop_gradient(advantages))


def value_loss(values: jax.Array, returns: jax.Array) -> jax.Array:
    """0.5 * mean((V - G)^2) over [B]; G is a fixed target."""
    return 0.5 * jnp.mean((values - jax.lax.stop_gradient(returns)) ** 2)


def running_mean(
    mean: jax.Array, returns: jax.Array, decay: jax.Array, first: jax.Array
) -> jax.Array:
    """Exponential running mean of returns [...]: decay * mean + (1 - decay) * mean(returns).

    It starts at the first batch's mean (`first`), not at 0, which would act as no baseline
    for about 1 / (1 - decay) updates. Returns [].
    """
    batch_mean = jnp.mean(returns)
    return jnp.where(first, batch_mean, decay * mean + (1.0 - decay) * batch_mean)


def make(
    config: ReinforceConfig,
    spec: EnvSpec,
    total_updates: int,
    optimizer: optim.Optimizer = optim.Optimizer(),
) -> Agent:
    """REINFORCE for `spec` (discrete or continuous actions); constant learning rate."""
    network = ActorCritic(spec, config.hidden_sizes, config.activation, config.layer_norm)
    policy = Policy(network, config.normalize_obs)
    learned_baseline = config.baseline == "value"

    def init(key: jax.Array, hparams: ReinforceHParams) -> ReinforceState:
        params, obs_stats = policy.init(key, hparams.init_log_std)
        return ReinforceState(
            params, optimizer.init(params), obs_stats, jnp.zeros(()), jnp.zeros((), jnp.int32)
        )

    def act(
        state: ReinforceState,
        obs: jax.Array,
        key: jax.Array,
        hparams: ReinforceHParams,
        explore: bool = True,
    ) -> tuple[jax.Array, dict]:
        return policy.act(state.params, state.obs_stats, obs, key, explore)

    def loss(params, obs, action, returns, baseline, hparams: ReinforceHParams, penalty):
        """obs [T, N, ...], action [T, N, ...], returns [T, N], baseline [] (unused for "value")."""
        dist, values = policy.network.apply(params, obs)
        if learned_baseline:
            baseline = values
        advantages = returns - baseline
        if config.normalize_advantages:
            advantages = standardize(advantages)
        policy_loss = policy_gradient_loss(dist.log_prob(action), advantages)
        v_loss = value_loss(values, returns) if learned_baseline else jnp.zeros(())
        total, metrics = actor_critic_objective(
            policy_loss, v_loss, dist.entropy().mean(), hparams.vf_coef, hparams.ent_coef
        )
        return optim.with_penalty(total, penalty, params, obs), metrics

    def update(
        state: ReinforceState,
        batch: Transition,
        key: jax.Array,
        hparams: ReinforceHParams,
        penalty=None,
    ) -> tuple[ReinforceState, dict]:
        obs = policy.observe(state.obs_stats, batch.obs)
        if learned_baseline:
            _, bootstrap = policy.network.apply(
                state.params, policy.observe(state.obs_stats, batch.next_obs)
            )
        else:
            bootstrap = jnp.zeros_like(batch.reward)
        returns = discounted_returns(
            batch.reward * hparams.reward_scale,
            batch.terminated,
            batch.truncated,
            bootstrap,
            hparams.gamma,
        )
        # The mean baseline excludes this batch, so it does not correlate with the returns
        # it is subtracted from (which would bias the gradient).
        baseline = state.baseline if config.baseline == "mean" else jnp.zeros(())
        grads, metrics = jax.grad(loss, has_aux=True)(
            state.params, obs, batch.action, returns, baseline, hparams, penalty
        )
        params, opt_state, grad_norm = optimizer.step(
            state.opt_state,
            state.params,
            grads,
            hparams.lr,
            hparams.max_grad_norm,
            hparams.weight_decay,
        )
        new_state = ReinforceState(
            params,
            opt_state,
            policy.update_stats(state.obs_stats, batch.obs),
            running_mean(state.baseline, returns, hparams.baseline_decay, state.num_updates == 0),
            state.num_updates + 1,
        )
        metrics = {**metrics, "grad_norm": grad_norm, "return": returns.mean()}
        if config.baseline == "mean":
            metrics["baseline"] = baseline
        return new_state, metrics

    def value(state, obs: jax.Array) -> jax.Array:
        return policy.value(state.params, state.obs_stats, obs)

    observe = lambda state, obs: policy.observe(state.obs_stats, obs)
    return Agent(init, act, update, value, policy.network.apply, observe)


ENTRY = AgentEntry(
    name="reinforce",
    make=make,
    config=ReinforceConfig,
    hparams=ReinforceHParams,
    state=ReinforceState,
    discrete_actions=True,
    continuous_actions=True,
    network_fields=("hidden_sizes", "activation", "normalize_obs"),
    loaded_fields=("obs_stats",),
)
