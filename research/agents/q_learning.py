"""Tabular Q-learning (Watkins): one table Q[s, a], updated step by step in time order.

Needs an environment whose observations are state indices (`EnvSpec.num_states > 0`).
Maths and state only: the epsilon schedule and epsilon-greedy live in research/rl/.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import struct

from research.agents.base import Agent, AgentEntry
from research.config import POS_INT, SCHEDULES, UNIT, UNIT_OPEN, Rule, setting
from research.envs import EnvSpec
from research.rl.exploration import epsilon_at, epsilon_greedy
from research.rl.rollout import Transition


@dataclass(frozen=True)
class QLearningConfig:
    """Static tabular Q-learning settings. Needs an environment with discrete states."""

    num_envs: int = setting(16, POS_INT)
    num_steps: int = setting(1, POS_INT)
    epsilon_schedule: str = setting("linear", SCHEDULES)


@struct.dataclass
class QLearningHParams:
    """alpha (lr), gamma, epsilon schedule end points, optimistic initial value q_init."""

    lr: float = setting(0.1, UNIT_OPEN)
    gamma: float = setting(0.99, UNIT)
    epsilon_start: float = setting(1.0, UNIT)
    epsilon_end: float = setting(0.05, UNIT)
    epsilon_fraction: float = setting(0.5, UNIT_OPEN)  # of training, to reach epsilon_end
    q_init: float = setting(0.0, Rule("float"))


@struct.dataclass
class QLearningState:
    q: jax.Array  # [S, A] float32
    num_updates: jax.Array  # [] int32: updates done so far


def td_errors(
    q: jax.Array,
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    next_obs: jax.Array,
    gamma: jax.Array,
) -> jax.Array:
    """r + gamma * (1 - terminated) * max_a' Q[s', a'] - Q[s, a], [N].

    q: [S, A]; obs, action, next_obs: [N] int32; reward, terminated: [N]. next_obs is the
    true successor s', so a truncated step bootstraps from it and a terminated one does not.
    """
    target = reward + gamma * (1.0 - terminated) * q[next_obs].max(-1)
    return target - q[obs, action]


def mean_over_duplicates(index: jax.Array, values: jax.Array) -> jax.Array:
    """[N] -> [N]: each value replaced by the mean of the values that share its index.

    Segment sums / counts, computed pairwise: O(N^2) in the number of envs but
    independent of the table size, which a segment_sum over all S * A cells is not.
    """
    same = index[:, None] == index[None, :]  # [N, N]
    return jnp.where(same, values[None, :], 0.0).sum(-1) / same.sum(-1)


def td_step(
    q: jax.Array,
    obs: jax.Array,
    action: jax.Array,
    reward: jax.Array,
    terminated: jax.Array,
    next_obs: jax.Array,
    lr: jax.Array,
    gamma: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One synchronous Q-learning step of N envs -> (Q [S, A], TD errors [N]).

    Envs that hit the same (s, a) move it by lr times their mean TD error: summing
    them would make the step size grow with the number of duplicates.
    """
    td = td_errors(q, obs, action, reward, terminated, next_obs, gamma)
    mean_td = mean_over_duplicates(obs * q.shape[1] + action, td)
    # Duplicates write the same value, so the scatter's order does not matter.
    return q.at[obs, action].set(q[obs, action] + lr * mean_td), td


def make(config: QLearningConfig, spec: EnvSpec, total_updates: int) -> Agent:
    """Q-learning for `spec` (discrete actions and states, checked by make_agent); epsilon
    follows its schedule over `total_updates`."""

    def init(key: jax.Array, hparams: QLearningHParams) -> QLearningState:
        q = jnp.full((spec.num_states, spec.num_actions), hparams.q_init, jnp.float32)
        return QLearningState(q, jnp.zeros((), jnp.int32))

    def epsilon(state: QLearningState, hparams: QLearningHParams) -> jax.Array:
        return epsilon_at(config.epsilon_schedule, hparams, state.num_updates, total_updates)

    def act(
        state: QLearningState,
        obs: jax.Array,
        key: jax.Array,
        hparams: QLearningHParams,
        explore: bool = True,
    ) -> tuple[jax.Array, dict]:
        q = state.q[obs]  # [N, A]
        action = epsilon_greedy(key, q, epsilon(state, hparams)) if explore else q.argmax(-1)
        return action, {}

    def update(
        state: QLearningState,
        batch: Transition,
        key: jax.Array,
        hparams: QLearningHParams,
        penalty=None,
    ) -> tuple[QLearningState, dict]:
        if penalty is not None:
            raise ValueError("tabular Q-learning has no gradient step to add a loss term to")

        def step(q, t):
            return td_step(q, *t, hparams.lr, hparams.gamma)

        steps = (
            batch.obs,
            batch.action,
            batch.reward,
            batch.terminated.astype(jnp.float32),
            batch.next_obs,
        )
        q, td = jax.lax.scan(step, state.q, steps)
        metrics = {"abs_td_error": jnp.abs(td).mean(), "epsilon": epsilon(state, hparams)}
        return QLearningState(q, state.num_updates + 1), metrics

    def value(state, obs: jax.Array) -> jax.Array:
        return state.q[obs].max(-1)

    return Agent(init=init, act=act, update=update, value=value)


ENTRY = AgentEntry(
    name="q_learning",
    make=make,
    config=QLearningConfig,
    hparams=QLearningHParams,
    state=QLearningState,
    discrete_actions=True,
    continuous_actions=False,
    state_indices=True,
    gradient_based=False,
    loaded_fields=("q",),
)
