"""Deep Q-learning, two modes: PQN (lambda-returns, no replay, LayerNorm) and DQN (replay + target).

Maths and state only: exploration (epsilon-greedy, schedules), returns, the replay
buffer and minibatching are shared pieces under research/rl/.
"""

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
    SCHEDULES,
    UNIT,
    UNIT_OPEN,
    ConfigError,
    Rule,
    check_minibatches,
    setting,
)
from research.envs import EnvSpec
from research.rl import optim
from research.rl.exploration import epsilon_at, epsilon_greedy
from research.rl.minibatch import flatten_time, minibatch_epochs
from research.rl.networks import QNetwork, init_params
from research.rl.replay import ReplayBuffer, buffer_add, buffer_init, buffer_sample
from research.rl.returns import gae


@dataclass(frozen=True)
class DQNConfig:
    """Static deep Q-learning settings.

    mode "pqn": lambda-returns over each fresh rollout, no replay buffer, LayerNorm.
    mode "dqn": a replay buffer per run and a target network (soft updates with tau).
    """

    mode: str = setting("pqn", Rule("str", choices=("pqn", "dqn")))
    num_envs: int = setting(16, POS_INT)
    num_steps: int = setting(32, POS_INT)
    num_epochs: int = setting(2, POS_INT)  # pqn: epochs over the rollout; dqn: grad steps / update
    num_minibatches: int = setting(4, POS_INT)  # pqn only
    hidden_sizes: tuple[int, ...] = setting((128, 128), POS_INT, sequence=True)
    activation: str = setting("relu", Rule("str", choices=("tanh", "relu")))
    layer_norm: bool = setting(True, BOOL)
    buffer_size: int = setting(10_000, POS_INT)  # dqn, transitions per run
    batch_size: int = setting(128, POS_INT)  # dqn
    learning_starts: int = setting(1_000, Rule("int", low=0))  # dqn, transitions before learning
    double_q: bool = setting(False, BOOL)  # dqn: online net picks a', target net values it
    loss: str = setting("mse", Rule("str", choices=("mse", "huber")))  # TD loss, both modes
    epsilon_schedule: str = setting("linear", SCHEDULES)
    anneal_lr: bool = setting(False, BOOL)


@struct.dataclass
class DQNHParams:
    lr: float = setting(3e-4, POS_FLOAT)
    gamma: float = setting(0.99, UNIT)
    q_lambda: float = setting(0.65, UNIT)  # pqn
    tau: float = setting(0.01, UNIT_OPEN)  # dqn target-network soft update
    epsilon_start: float = setting(1.0, UNIT)
    epsilon_end: float = setting(0.05, UNIT)
    epsilon_fraction: float = setting(0.2, UNIT_OPEN)
    max_grad_norm: float = setting(10.0, POS_FLOAT)
    l2_init: float = setting(0.0, NONNEG_FLOAT)  # weight of the L2 pull to the starting params


def check_config(config: DQNConfig) -> None:
    """The minibatches divide the rollout, and a replay minibatch fits in the buffer."""
    check_minibatches(config)
    if config.batch_size > config.buffer_size:
        raise ConfigError(
            f"agent.batch_size: got {config.batch_size}; must be <= "
            f"agent.buffer_size = {config.buffer_size}"
        )


@struct.dataclass
class DQNState:
    params: Any
    target_params: Any  # dqn mode; None in pqn mode
    opt_state: Any
    buffer: ReplayBuffer | None  # dqn mode: obs, action, reward, terminated, next_obs
    num_updates: jax.Array  # [] int32


def q_lambda_targets(rewards, q_taken_max, next_q_max, terminated, truncated, gamma, lam):
    """Peng's Q(lambda) targets, [T, ...]: the GAE recursion with V(s) = max_a Q(s, a).

    G_t = r_t + gamma * (1 - term_t) * [(1 - lam) * V(s'_t) + lam * G_{t+1}], cut at episode
    ends and bootstrapped from V(s'_t) on truncation and at the rollout's end.
    """
    return gae(rewards, q_taken_max, next_q_max, terminated, truncated, gamma, lam)[1]


def td_loss(q: jax.Array, actions: jax.Array, targets: jax.Array, kind: str = "mse") -> jax.Array:
    """Mean TD loss of e = Q(s, a) - target. q: [B, A], actions, targets: [B].

    "mse": 0.5 * e^2. "huber": 0.5 * e^2 for |e| <= 1, |e| - 0.5 beyond, so one
    transition's gradient is at most 1 however stale its target (Mnih et al. 2015).
    """
    taken = jnp.take_along_axis(q, actions[:, None].astype(jnp.int32), axis=-1)[:, 0]
    error = taken - jax.lax.stop_gradient(targets)
    if kind == "huber":
        small = jnp.minimum(jnp.abs(error), 1.0)
        return jnp.mean(0.5 * small**2 + (jnp.abs(error) - small))
    return 0.5 * jnp.mean(error**2)


def one_step_targets(rewards, next_q_target, terminated, gamma):
    """r + gamma * (1 - term) * max_a Q_target(s', a). [B]."""
    return rewards + gamma * (1.0 - terminated) * jnp.max(next_q_target, axis=-1)


def double_q_targets(rewards, next_q_target, next_q_online, terminated, gamma):
    """r + gamma * (1 - term) * Q_target(s', argmax_a Q_online(s', a)). [B]; next_q_*: [B, A].

    The max of one noisy estimate is biased upwards; choosing a' with the online net and
    valuing it with the target net decouples the two errors (van Hasselt et al. 2016).
    """
    best = jnp.argmax(next_q_online, axis=-1)
    value = jnp.take_along_axis(next_q_target, best[:, None], axis=-1)[:, 0]
    return rewards + gamma * (1.0 - terminated) * value


def q_network(config: DQNConfig, spec: EnvSpec) -> QNetwork:
    """The Q-network of this config: apply(state.params, obs [..]) -> Q-values [.., A]."""
    return QNetwork(spec, config.hidden_sizes, config.activation, config.layer_norm)


def make(
    config: DQNConfig,
    spec: EnvSpec,
    total_updates: int,
    optimizer: optim.Optimizer = optim.Optimizer(),
) -> Agent:
    """Deep Q-learning for `spec` (discrete actions, checked by make_agent)."""
    network = q_network(config, spec)
    replay = config.mode == "dqn"

    def init(key: jax.Array, hparams: DQNHParams) -> DQNState:
        obs = jnp.zeros(spec.obs_shape, jnp.float32)
        params = init_params(network, key, obs[None])
        buffer = None
        if replay:
            item = {
                "obs": obs,
                "action": jnp.zeros((), jnp.int32),
                "reward": jnp.zeros(()),
                "terminated": jnp.zeros(()),
                "next_obs": obs,
            }
            buffer = buffer_init(item, config.buffer_size)
        return DQNState(
            params,
            params if replay else None,
            optimizer.init(params),
            buffer,
            jnp.zeros((), jnp.int32),
        )

    def epsilon(state: DQNState, hparams: DQNHParams) -> jax.Array:
        return epsilon_at(config.epsilon_schedule, hparams, state.num_updates, total_updates)

    def act(
        state: DQNState, obs: jax.Array, key: jax.Array, hparams: DQNHParams, explore: bool = True
    ) -> tuple[jax.Array, dict]:
        q = network.apply(state.params, obs)
        action = epsilon_greedy(key, q, epsilon(state, hparams)) if explore else q.argmax(-1)
        # PQN's targets need max_a Q(s_t, a) under the rollout's params: keep it rather than
        # recompute the network over the whole batch in the update.
        return action, ({} if replay else {"q_max": q.max(-1)})

    def learning_rate(state: DQNState, hparams: DQNHParams) -> jax.Array:
        return optim.annealed_lr(hparams.lr, state.num_updates, total_updates, config.anneal_lr)

    def sgd_step(carry, minibatch, targets_fn, hparams, lr, penalty):
        params, opt_state = carry

        def loss(p):
            targets = targets_fn(minibatch)
            td = td_loss(
                network.apply(p, minibatch["obs"]), minibatch["action"], targets, config.loss
            )
            return optim.with_penalty(td, penalty, p, minibatch["obs"]), td

        (_, value), grads = jax.value_and_grad(loss, has_aux=True)(params)
        params, opt_state, grad_norm = optimizer.step(
            opt_state, params, grads, lr, hparams.max_grad_norm
        )
        return (params, opt_state), {"td_loss": value, "grad_norm": grad_norm}

    def update_pqn(state: DQNState, batch, key, hparams: DQNHParams, penalty):
        next_q = network.apply(state.params, batch.next_obs)  # [T, N, A]
        targets = q_lambda_targets(
            batch.reward,
            batch.aux["q_max"],
            next_q.max(-1),
            batch.terminated,
            batch.truncated,
            hparams.gamma,
            hparams.q_lambda,
        )
        flat = flatten_time({"obs": batch.obs, "action": batch.action, "target": targets})
        lr = learning_rate(state, hparams)
        step = lambda c, mb: sgd_step(c, mb, lambda m: m["target"], hparams, lr, penalty)
        (params, opt_state), metrics = minibatch_epochs(
            key,
            (state.params, state.opt_state),
            flat,
            config.num_epochs,
            config.num_minibatches,
            step,
        )
        return state.replace(params=params, opt_state=opt_state), metrics

    def update_dqn(state: DQNState, batch, key, hparams: DQNHParams, penalty):
        items = flatten_time(
            {
                "obs": batch.obs,
                "action": batch.action,
                "reward": batch.reward,
                "terminated": batch.terminated.astype(jnp.float32),
                "next_obs": batch.next_obs,
            }
        )
        buffer = buffer_add(state.buffer, items)
        lr = learning_rate(state, hparams)

        def targets(params, m):
            next_q_target = network.apply(state.target_params, m["next_obs"])
            if config.double_q:  # a' picked by the online params of this gradient step
                return double_q_targets(
                    m["reward"],
                    next_q_target,
                    network.apply(params, m["next_obs"]),
                    m["terminated"],
                    hparams.gamma,
                )
            return one_step_targets(m["reward"], next_q_target, m["terminated"], hparams.gamma)

        def grad_step(carry, step_key):
            minibatch = buffer_sample(buffer, step_key, config.batch_size)
            minibatch = {**minibatch, "target": targets(carry[0], minibatch)}
            return sgd_step(carry, minibatch, lambda m: m["target"], hparams, lr, penalty)

        (params, opt_state), metrics = jax.lax.scan(
            grad_step, (state.params, state.opt_state), jax.random.split(key, config.num_epochs)
        )
        # Before learning_starts transitions are stored, the update is discarded.
        ready = buffer.size >= config.learning_starts
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(ready, new, old),
            (params, opt_state),
            (state.params, state.opt_state),
        )
        target = jax.tree.map(
            lambda t, p: (1.0 - hparams.tau) * t + hparams.tau * p, state.target_params, params
        )
        return state.replace(
            params=params, target_params=target, opt_state=opt_state, buffer=buffer
        ), metrics

    def update(
        state: DQNState, batch, key, hparams: DQNHParams, penalty=None
    ) -> tuple[DQNState, dict]:
        update_mode = update_dqn if replay else update_pqn
        state, metrics = update_mode(state, batch, key, hparams, penalty)
        metrics = {**jax.tree.map(jnp.mean, metrics), "epsilon": epsilon(state, hparams)}
        return state.replace(num_updates=state.num_updates + 1), metrics

    def value(state, obs: jax.Array) -> jax.Array:
        return network.apply(state.params, obs).max(-1)

    def heads(params, obs: jax.Array) -> tuple[jax.Array, jax.Array]:
        q = network.apply(params, obs)
        return q, q.max(-1)

    return Agent(init=init, act=act, update=update, value=value, heads=heads)


ENTRY = AgentEntry(
    name="dqn",
    make=make,
    config=DQNConfig,
    hparams=DQNHParams,
    state=DQNState,
    discrete_actions=True,
    continuous_actions=False,
    network_fields=("mode", "hidden_sizes", "activation", "layer_norm"),
    param_copies=("target_params",),
    check=check_config,
)
