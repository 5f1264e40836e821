"""Tabular Q-learning: the update by hand, schedules, discrete-state envs, Q*, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents import q_learning
from research.config import (
    ConfigError,
    Discretize,
    QLearningConfig,
    QLearningHParams,
    parse_experiment,
)
from research.envs import DISCRETE_STATE_IDS, Env, EnvSpec
from research.envs.tabular import bin_index
from research.pipelines.train import execute, prepare
from research.rl.exploration import schedule
from research.rl.rollout import Transition, reset_envs, rollout
from tests.conftest import compose_raw

HP = QLearningHParams(lr=0.5, gamma=0.9)
SPEC = EnvSpec("hand", (), True, num_actions=2, num_states=3)
MAYBE_JIT = pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])


def _agent(config=QLearningConfig(), spec=SPEC, total_updates=10):
    return q_learning.make(config, spec, total_updates)


def _batch(obs, action, reward, terminated, truncated, next_obs) -> Transition:
    """A [T, N] batch from nested lists."""
    f = lambda x, dtype: jnp.asarray(x, dtype)
    zeros = jnp.zeros(np.shape(reward))
    return Transition(
        f(obs, jnp.int32),
        f(action, jnp.int32),
        f(reward, jnp.float32),
        f(terminated, bool),
        f(truncated, bool),
        f(next_obs, jnp.int32),
        {},
        zeros,
        zeros,
    )


def _update(q, batch, jit):
    agent = _agent()
    state = q_learning.QLearningState(jnp.asarray(q, jnp.float32), jnp.zeros((), jnp.int32))
    update = jax.jit(agent.update) if jit else agent.update
    new_state, metrics = update(state, batch, jax.random.key(0), HP)
    return np.asarray(new_state.q), metrics


# --------------------------------------------------------------------------- the update by hand


@MAYBE_JIT
def test_no_bootstrap_at_termination_bootstrap_on_truncation(jit):
    q = [[0.0, 0.0], [1.0, 2.0], [3.0, 0.5]]
    # env 0 terminates into state 1, env 1 is truncated into state 2: same reward 1
    batch = _batch([[0, 0]], [[0, 1]], [[1.0, 1.0]], [[True, False]], [[False, True]], [[1, 2]])
    new_q, metrics = _update(q, batch, jit)
    # terminated: target 1                  -> 0 + 0.5 * (1 - 0)             = 0.5
    # truncated:  target 1 + 0.9 * max(3, .5) = 3.7 -> 0 + 0.5 * (3.7 - 0) = 1.85
    np.testing.assert_allclose(new_q, [[0.5, 1.85], [1.0, 2.0], [3.0, 0.5]], rtol=1e-6)
    assert float(metrics["abs_td_error"]) == pytest.approx((1.0 + 3.7) / 2)


@MAYBE_JIT
def test_steps_are_applied_in_time_order(jit):
    # t=0: (1, 0) terminates with r=1; t=1: (0, 0) -> state 1 with r=0 must see the new Q[1, 0]
    batch = _batch(
        [[1], [0]], [[0], [0]], [[1.0], [0.0]], [[True], [False]], [[False], [False]], [[2], [1]]
    )
    new_q, _ = _update(np.zeros((3, 2)), batch, jit)
    assert new_q[1, 0] == pytest.approx(0.5)  # 0.5 * (1 - 0)
    assert new_q[0, 0] == pytest.approx(0.5 * 0.9 * 0.5)  # 0.225; 0 if updated all at once


@MAYBE_JIT
def test_duplicate_state_actions_average_their_td_errors(jit):
    # three envs hit (0, 0) with rewards 1, 2, 6 (terminal); a fourth hits (2, 1) with 4
    batch = _batch(
        [[0, 0, 0, 2]],
        [[0, 0, 0, 1]],
        [[1.0, 2.0, 6.0, 4.0]],
        [[True] * 4],
        [[False] * 4],
        [[1, 1, 1, 1]],
    )
    new_q, _ = _update(np.zeros((3, 2)), batch, jit)
    assert new_q[0, 0] == pytest.approx(0.5 * 3.0)  # mean TD 3; summing would give 4.5
    assert new_q[2, 1] == pytest.approx(0.5 * 4.0)
    assert new_q.sum() == pytest.approx(1.5 + 2.0)


def test_mean_over_duplicates():
    out = q_learning.mean_over_duplicates(
        jnp.array([3, 1, 3, 3, 7]), jnp.array([1.0, 5.0, 2.0, 6.0, -1.0])
    )
    np.testing.assert_allclose(out, [3.0, 5.0, 3.0, 3.0, -1.0])


def test_optimistic_init_and_greedy_action():
    agent = _agent()
    state = agent.init(jax.random.key(0), QLearningHParams(q_init=2.0))
    assert state.q.shape == (3, 2) and (np.asarray(state.q) == 2.0).all()
    # after (0, 0) is tried once and found worse than its optimistic value, greedy tries action 1
    batch = _batch([[0]], [[0]], [[0.0]], [[True]], [[False]], [[0]])
    state, _ = agent.update(state, batch, jax.random.key(0), QLearningHParams(q_init=2.0))
    action, _ = agent.act(state, jnp.array([0, 1]), jax.random.key(1), HP, False)
    np.testing.assert_array_equal(action, [1, 0])  # state 1 is untouched: a tie, first action


def test_epsilon_follows_its_schedule_over_updates():
    agent = _agent(QLearningConfig(epsilon_schedule="linear"), total_updates=10)
    hp = QLearningHParams(epsilon_start=1.0, epsilon_end=0.0, epsilon_fraction=1.0)
    state = agent.init(jax.random.key(0), hp)
    batch = _batch([[0]], [[0]], [[0.0]], [[True]], [[False]], [[0]])
    eps = []
    for _ in range(3):
        state, metrics = agent.update(state, batch, jax.random.key(0), hp)
        eps.append(float(metrics["epsilon"]))
    assert eps == pytest.approx([1.0, 0.9, 0.8])  # the epsilon the rollout before each used
    # now epsilon 0.7: of 4000 draws, about 0.7 / 2 are not the greedy action 0 (4 sigma: 0.03)
    actions, _ = agent.act(state, jnp.zeros(4000, jnp.int32), jax.random.key(3), hp, True)
    assert float(actions.mean()) == pytest.approx(0.35, abs=0.03)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "kind,expected",
    [
        ("constant", [1.0, 1.0, 1.0, 1.0]),
        ("linear", [1.0, 0.55, 0.1, 0.1]),  # halfway through fraction 0.5: (1 + 0.1) / 2
        ("exponential", [1.0, 0.1**0.5, 0.1, 0.1]),  # halfway: geometric mean sqrt(1 * 0.1)
    ],
)
@MAYBE_JIT
def test_schedule_values(kind, expected, jit):
    progress = jnp.array([0.0, 0.25, 0.5, 1.0])
    fn = jax.jit(schedule, static_argnums=0) if jit else schedule
    values = fn(kind, 1.0, 0.1, 0.5, progress)
    np.testing.assert_allclose(np.broadcast_to(values, (4,)), expected, rtol=1e-6)


# --------------------------------------------------------------------------- discrete-state envs


def test_bin_index_against_hand_computed_cells():
    bins, low, high = (3, 4), (-1.0, 0.0), (1.0, 2.0)  # cell = i * 4 + j, 12 states
    cases = {
        (-0.5, 1.2): 0 * 4 + 2,  # (-0.5 + 1) / 2 * 3 = 0.75 -> 0; 1.2 / 2 * 4 = 2.4 -> 2
        (0.0, 0.49): 1 * 4 + 0,  # 1.5 -> 1; 0.98 -> 0
        (-1.0, 0.0): 0,  # the low edges
        (1.0, 2.0): 2 * 4 + 3,  # the high edges fall into the last bins
        (5.0, -3.0): 2 * 4 + 0,  # outside: clipped into the edge bins
    }
    for obs, cell in cases.items():
        assert int(bin_index(jnp.asarray(obs), bins, low, high)) == cell, obs


def test_discretized_cartpole_steps_with_state_indices():
    discretize = Discretize(
        bins=(1, 1, 4, 2), low=(-1.0, -1.0, -0.2, -1.0), high=(1.0, 1.0, 0.2, 1.0)
    )
    env = Env("CartPole-v1", discretize)
    assert env.spec.num_states == 8 and env.spec.obs_shape == ()
    obs, state = env.reset(jax.random.key(0), env.default_params)
    for t in range(30):
        raw = state.inner  # CartPole state before the step
        state, ts = env.step(jax.random.key(t), state, jnp.asarray(t % 2), env.default_params)
        assert ts.obs.dtype == jnp.int32 and ts.next_obs.dtype == jnp.int32
        theta, theta_dot = float(state.inner.theta), float(state.inner.theta_dot)
        if not ts.terminated:  # mid-episode s' == next obs, whose cell we compute by hand
            theta_bin = min(max(int((theta + 0.2) / 0.4 * 4), 0), 3)
            assert int(ts.next_obs) == theta_bin * 2 + (theta_dot >= 0.0), (t, raw)


def test_four_rooms_encoder():
    env = Env("FourRooms-tabular")
    params = env.default_params.replace(fail_prob=0.0)
    assert env.spec.num_states == 104 * 104 and env.spec.num_actions == 4
    obs, state = env.reset(jax.random.key(0), params)
    # open cells row-major: rows 1-3 hold 31, so start (4, 1) is cell 31; rows 1-7 hold 63,
    # row 8 has (8,1..5) = 63..67 and (8,7..9) = 68..70, so goal (8, 9) is cell 70
    assert int(obs) == 70 * 104 + 31
    state, ts = env.step(jax.random.key(1), state, jnp.asarray(1), params)  # right: (4, 2)
    assert int(ts.obs) == 70 * 104 + 32
    encode = env.gymnax_env.encode
    cells = {int(encode(jnp.array([r, c, 8, 9]))) for r, c in np.asarray(env.gymnax_env.coords)}
    assert cells == set(range(70 * 104, 71 * 104))  # 104 open cells, 104 distinct states


def test_deep_sea_encoder():
    env = Env("DeepSea-tabular")
    assert env.spec.num_states == 8 * 8 + 1 and env.spec.num_actions == 2
    obs, state = env.reset(jax.random.key(0), env.default_params)
    assert int(obs) == 0
    for t in range(8):
        state, ts = env.step(jax.random.key(t), state, jnp.asarray(t % 2), env.default_params)
        if t < 7:
            assert int(ts.obs) == int(state.inner.row) * 8 + int(state.inner.column)
    assert bool(ts.terminated) and int(ts.next_obs) == 64 and int(ts.obs) == 0


@pytest.mark.parametrize("env_id", DISCRETE_STATE_IDS)
def test_listed_envs_have_discrete_states(env_id):
    assert Env(env_id).spec.num_states > 0


# --------------------------------------------------------------------------- learning


def _train(*overrides):
    prepared = prepare(
        parse_experiment(compose_raw("progress=false", "agent=q_learning", *overrides))
    )
    return prepared, execute(prepared)


def q_star_gridworld(size, goal, gamma, step_reward=0.0, goal_reward=1.0, sweeps=200):
    """Q* [size * size, 4] of the deterministic gridworld by value iteration (moves u, r, d, l)."""
    moves = [(-1, 0), (0, 1), (1, 0), (0, -1)]
    q = np.zeros((size * size, 4))
    for _ in range(sweeps):
        v = q.max(1)
        for r in range(size):
            for c in range(size):
                for a, (dr, dc) in enumerate(moves):
                    nr, nc = min(max(r + dr, 0), size - 1), min(max(c + dc, 0), size - 1)
                    at_goal = (nr, nc) == goal
                    q[r * size + c, a] = (
                        goal_reward if at_goal else step_reward + gamma * v[nr * size + nc]
                    )
    return q


# Uniformly random behaviour on a 4 x 4 grid, goal in the far corner, truncated after 10 steps
# (tests/test_shaping.py learns the shaped Q-table on the same setting).
RANDOM_4X4_GRID = (
    "env=gridworld",
    "env.params.size=4",
    "env.params.goal_row=3",
    "env.params.goal_col=3",
    "env.params.max_steps_in_episode=10",
    "agent.gamma=0.9",
    "agent.lr=0.5",
    "agent.epsilon_schedule=constant",
    "agent.epsilon_start=1.0",
    "train.total_timesteps=32000",
    "train.num_logs=4",
    "runs.seeds=2",
)


@pytest.mark.slow
def test_reaches_q_star_of_gridworld():
    """Off-policy: a uniformly random behaviour policy learns Q* on every non-goal cell.

    Episodes are truncated after 10 steps (most are), so this also needs the bootstrap on
    truncation: treating truncation as termination leaves errors of about 0.5 here.
    """
    prepared, result = _train(*RANDOM_4X4_GRID)
    assert not np.isnan(result.metrics["episode_return"]).any()  # episodes ended in every log
    q_star = q_star_gridworld(4, (3, 3), 0.9)
    learned = result.agent_states.q[:, :16]
    # deterministic model and rewards: Q-learning converges to float32 rounding (measured 3e-7)
    np.testing.assert_allclose(learned[:, :15], np.broadcast_to(q_star[:15], (2, 15, 4)), atol=1e-4)
    assert (result.agent_states.q[:, 15:] == 0.0).all()  # goal and off-grid rows: never updated


def _greedy_episodes(prepared, result, num_steps):
    """(terminated [R], length [R]) of each run's first greedy episode."""
    env, agent = prepared.env, prepared.agent

    def one(state, hparams, env_params):
        key = jax.random.key(0)
        obs, env_state = reset_envs(env, key, env_params, 1)
        act = lambda o, k, env_state: agent.act(state, o, k, hparams, False)
        _, batch = rollout(env, act, env_params, env_state, obs, key, num_steps)
        first = jnp.argmax(batch.terminated[:, 0] | batch.truncated[:, 0])
        return batch.terminated[first, 0], batch.episode_length[first, 0]

    run = jax.jit(jax.vmap(one))
    terminated, length = run(result.agent_states, prepared.runs.hparams, prepared.runs.env_params)
    return np.asarray(terminated), np.asarray(length)


@pytest.mark.slow
def test_learns_shortest_path_in_gridworld():
    """The saved experiment: every run's greedy policy walks the 8-step shortest path."""
    prepared, result = _train("experiment=q_learning_gridworld", "runs.seeds=4")
    terminated, length = _greedy_episodes(prepared, result, num_steps=30)
    assert terminated.all() and (length == 8).all(), length
    final = result.metrics["episode_length"][:, -1]
    assert final.mean() < 9.0, final  # epsilon = 0.05 at the end costs a few extra steps


@pytest.mark.slow
def test_optimistic_init_alone_explores():
    """Greedy (epsilon 0), zero step reward: q_init 0 never finds the goal, q_init 1 does."""
    prepared, result = _train("experiment=q_learning_optimistic_init", "runs.seeds=2")
    optimistic = prepared.runs.table.q_init.to_numpy() == 1.0
    returns = result.metrics["episode_return"]
    assert (returns[~optimistic] == 0.0).all()  # every episode truncated without the goal
    terminated, length = _greedy_episodes(prepared, result, num_steps=30)
    assert terminated[optimistic].all() and (length[optimistic] == 8).all(), length
    assert not terminated[~optimistic].any()


DISCRETIZE_PROBE = (
    "env=gymnax",
    "+env.discretize={bins: [3], low: [-1.0], high: [1.0]}",
    "agent.lr=0.2",
    "train.total_timesteps=4000",
    "train.num_logs=1",
    "runs.seeds=2",
)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id,gamma,expected",
    [
        # obs -1, 0, +1 fall in bins 0, 1, 2; expected Q[bin] for actions (0, 1)
        ("ConstantReward-probe", 0.99, {1: (1.0, 1.0)}),
        ("ObsDependentReward-probe", 0.99, {0: (-1.0, -1.0), 2: (1.0, 1.0)}),
        ("TwoStepDiscount-probe", 0.5, {1: (0.5, 0.5), 2: (1.0, 1.0)}),
        ("ActionDependentReward-probe", 0.99, {1: (-1.0, 1.0)}),
        ("ObsActionReward-probe", 0.99, {0: (1.0, -1.0), 2: (-1.0, 1.0)}),
    ],
)
def test_probe(env_id, gamma, expected):
    """Exact values within 0.01 (deterministic rewards, each cell updated hundreds of times)."""
    prepared, result = _train(*DISCRETIZE_PROBE, f"env.id={env_id}", f"agent.gamma={gamma}")
    assert prepared.env.spec.num_states == 3
    q = result.agent_states.q  # [R, 3, 2]
    for cell, values in expected.items():
        np.testing.assert_allclose(q[:, cell], np.broadcast_to(values, (2, 2)), atol=0.01)
    unseen = [c for c in range(3) if c not in expected]
    assert (q[:, unseen] == 0.0).all()


# --------------------------------------------------------------------------- config errors


BAD = [
    (
        ("agent.epsilon_schedule=cosine",),
        r"agent.epsilon_schedule: got 'cosine'; must be one of 'constant', 'linear', 'exponential'",
    ),
    (
        ("env=cartpole_discrete", "env.discretize.bins=[3,3]"),
        r"env.discretize: bins, low and high need one entry per observation dimension each; "
        r"got 2, 4 and 4",
    ),
    (
        ("env=cartpole_discrete", "env.discretize.bins=[3,0,3,3]"),
        r"env.discretize.bins\[1\]: got 0; must be an int with 1 <= x",
    ),
    (
        ("env=cartpole_discrete", "env.discretize.high=[2.4,3.0,-0.3,3.0]"),
        r"env.discretize.high\[2\]: got -0.3; must be > low\[2\] = -0.21",
    ),
    (("env=cartpole_discrete", "~env.discretize.low"), r"env.discretize.low: missing"),
    (
        ("env=cartpole_discrete", "+env.discretize.edges=[1]"),
        r"env.discretize.edges: unknown field; allowed: bins, high, low",
    ),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_value_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_experiment(compose_raw("agent=q_learning", "env=gridworld", *overrides))


BAD_PREPARE = [
    (
        ("env=cartpole",),
        r"agent.name: 'q_learning' is tabular and needs discrete states; env.id 'CartPole-v1' "
        r"has observations of shape \(4,\). Allowed: an env with discrete states "
        r"\(GridWorld-tabular, FourRooms-tabular, DeepSea-tabular, FrozenLake-misc\), or "
        r"env.discretize",
    ),
    (
        (
            "env=gymnax",
            "env.id=Pendulum-v1",
            "+env.discretize={bins: [2, 2, 2], low: [-1, -1, -8], high: [1, 1, 8]}",
        ),
        r"agent.name: 'q_learning' needs discrete actions; env.id 'Pendulum-v1' has continuous",
    ),
    (
        ("env=gridworld", "+env.discretize={bins: [3], low: [0], high: [1]}"),
        r"env.discretize: env.id 'GridWorld-tabular' already has discrete states \(100\); "
        r"remove env.discretize",
    ),
    (
        (
            "env=cartpole_discrete",
            "env.discretize.bins=[3,3]",
            "env.discretize.low=[0,0]",
            "env.discretize.high=[1,1]",
        ),
        r"env.discretize.bins: got 2 values; env.id 'CartPole-v1' has 4 observation dimensions",
    ),
    (
        (
            "env=gymnax",
            "env.id=Breakout-MinAtar",
            "+env.discretize={bins: [2], low: [0], high: [1]}",
        ),
        r"env.discretize: needs a flat observation vector; env.id 'Breakout-MinAtar' has "
        r"observations of shape \(10, 10, 4\)",
    ),
    (
        ("env=gridworld", "env.params.size=3"),
        r"env.params.goal_row: got 4; must be an int with "
        r"0 <= x < size = 3",
    ),
    (
        ("env=gridworld", "env.variants.size=[5,11]"),
        r"env.variants.size: got 11; must be an int with 2 <= x <= 10",
    ),
    (
        ("env=gridworld", "env.params.start_row=4", "env.params.start_col=4"),
        r"env.params.start_row: got 4; must be a start cell other than the goal cell",
    ),
]


@pytest.mark.parametrize(
    "overrides,message",
    BAD_PREPARE,
    ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD_PREPARE)],
)
def test_bad_value_is_named_before_compiling(overrides, message):
    with pytest.raises(ConfigError, match=message):
        prepare(parse_experiment(compose_raw("agent=q_learning", *overrides)))
