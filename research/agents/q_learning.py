"""Tabular Q-learning (Watkins): one table Q[s, a], updated step by step in time order.

Needs an environment whose observations are state indices (`EnvSpec.num_states > 0`).
Maths and state only: the epsilon schedule and epsilon-greedy live in research/rl/.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from research.agents.base import Agent
from research.config import ConfigError, QLearningConfig, QLearningHParams
from research.envs import EnvSpec, discrete_state_ids
from research.rl.exploration import epsilon_greedy, schedule
from research.rl.rollout import Transition


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
    """Q-learning for `spec`; epsilon follows its schedule over `total_updates`."""
    if not spec.discrete:
        raise ConfigError(
            f"agent.name: 'q_learning' needs discrete actions; env.id "
            f"{spec.env_id!r} has continuous actions (use ppo or reinforce)"
        )
    if not spec.num_states:
        raise ConfigError(
            f"agent.name: 'q_learning' is tabular and needs discrete states; env.id "
            f"{spec.env_id!r} has observations of shape {spec.obs_shape}. Allowed: an env with "
            f"discrete states ({', '.join(discrete_state_ids())}), or env.discretize with bins, "
            "low and high per observation dimension (e.g. env=cartpole_discrete)"
        )

    def init(key: jax.Array, hparams: QLearningHParams) -> QLearningState:
        q = jnp.full((spec.num_states, spec.num_actions), hparams.q_init, jnp.float32)
        return QLearningState(q, jnp.zeros((), jnp.int32))

    def epsilon(state: QLearningState, hparams: QLearningHParams) -> jax.Array:
        return schedule(
            config.epsilon_schedule,
            hparams.epsilon_start,
            hparams.epsilon_end,
            hparams.epsilon_fraction,
            state.num_updates / total_updates,
        )

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
