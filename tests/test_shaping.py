"""Reward shaping: policy invariance (value iteration), Q* - Phi, the bonus counter-example,
F at episode ends, unshaped logging, schedules, config errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents import Agent
from research.config import ConfigError, QLearningHParams, ShapingHParams, parse_experiment
from research.envs import Env, variant_params
from research.extensions import RewardShaping
from research.pipelines.train import prepare, run_experiment
from research.rl.shaping import SCHEDULES, potential_term, proximity_bonus, schedule_factor
from research.runner import RunParams, make_train
from tests.conftest import compose_raw, train
from tests.test_q_learning import RANDOM_4X4_GRID, q_star_gridworld

# ------------------------------------------------------------------ value iteration


def value_iteration(p, r, gamma, sweeps=2000):
    """Q [S, A] of an MDP with transitions p [S, A, S+1] (index S = terminal, absorbing,
    worth 0) and rewards r [S, A, S+1]."""
    q = np.zeros(p.shape[:2])
    for _ in range(sweeps):
        v = np.append(q.max(1), 0.0)
        q = (p * (r + gamma * v)).sum(-1)
    return q


def shaped_rewards(r, phi, gamma):
    """r + gamma * Phi(s') - Phi(s), with Phi(terminal) = 0."""
    phi_next = np.append(phi, 0.0)
    return r + gamma * phi_next[None, None, :] - phi[:, None, None]


@pytest.mark.parametrize("seed", range(5))
def test_potential_shaping_keeps_the_optimal_policy_and_shifts_q_by_phi(seed):
    rng = np.random.default_rng(seed)
    num_states, num_actions, gamma = 6, 3, 0.9
    p = rng.dirichlet(np.ones(num_states + 1), size=(num_states, num_actions))
    r = rng.normal(size=(num_states, num_actions, num_states + 1))
    phi = rng.normal(scale=3.0, size=num_states)
    q = value_iteration(p, r, gamma)
    q_shaped = value_iteration(p, shaped_rewards(r, phi, gamma), gamma)
    np.testing.assert_array_equal(q_shaped.argmax(1), q.argmax(1))
    np.testing.assert_allclose(q_shaped, q - phi[:, None], atol=1e-8)


def test_proximity_bonus_changes_the_optimal_policy():
    """Chain 0-1-2-goal, actions left / stay / right, reward 1 on reaching the goal. A bonus
    1 / (distance(s') + 1) makes staying next to the goal forever (0.5 per step, worth
    5 at gamma 0.9) better than finishing (1 + 1 once)."""
    num_states, gamma = 3, 0.9
    p = np.zeros((num_states, 3, num_states + 1))
    for s in range(num_states):
        for a, move in enumerate((-1, 0, 1)):
            p[s, a, min(max(s + move, 0), num_states)] = 1.0
    r = np.zeros_like(p)
    r[:, :, num_states] = 1.0
    distance = np.arange(num_states + 1)[::-1].astype(float)  # to the goal (index 3)
    bonus = np.asarray(proximity_bonus(jnp.asarray(distance)))[None, None, :]
    plain, with_bonus = value_iteration(p, r, gamma), value_iteration(p, r + bonus, gamma)
    assert plain.argmax(1)[2] == 2  # right, into the goal
    assert with_bonus.argmax(1)[2] == 1  # stay beside it
    # a potential-based term from the same distances keeps "right"
    shaped = value_iteration(p, shaped_rewards(r, -distance[:-1], gamma), gamma)
    assert shaped.argmax(1)[2] == 2


# ------------------------------------------------------------------ F inside the runner


def test_potential_term_at_termination_and_truncation():
    phi, next_phi = jnp.array([1.0, 1.0, 1.0]), jnp.array([4.0, 4.0, 4.0])
    terminated = jnp.array([0.0, 1.0, 0.0])  # the third is truncated: bootstraps from s'
    np.testing.assert_allclose(potential_term(phi, next_phi, terminated, 0.5), [1.0, -1.0, 1.0])


def _recording_agent(num_steps, num_envs):
    """Acts uniformly at random and keeps the last batch it was given."""
    fields = ("reward", "obs", "next_obs", "terminated", "truncated")
    return Agent(
        init=lambda key, hp: {k: jnp.zeros((num_steps, num_envs), jnp.float32) for k in fields},
        act=lambda state, obs, key, hp, explore: (jax.random.randint(key, obs.shape, 0, 4), {}),
        update=lambda state, batch, key, hp, penalty=None: (
            {k: getattr(batch, k).astype(jnp.float32) for k in fields},
            {},
        ),
        value=None,
    )


def _record(weight, num_steps=128, num_envs=8):
    env = Env("GridWorld-tabular")
    params = variant_params(
        env.env_id,
        env.default_params,
        {"size": 4, "goal_row": 2, "goal_col": 2, "max_steps_in_episode": 7},
    )
    table = jnp.asarray(np.random.default_rng(0).normal(size=env.spec.num_states), jnp.float32)
    trainer = make_train(
        _recording_agent(num_steps, num_envs),
        env,
        num_envs,
        num_steps,
        num_updates=4,
        num_logs=2,
        extensions=[RewardShaping("potential", lambda obs, p: table[obs], num_envs)],
    )
    run = jax.jit(trainer.train)
    state, metrics = run(
        jax.random.key(0),
        QLearningHParams(gamma=0.9),
        RunParams(params, {"shaping": ShapingHParams(weight=weight)}),
    )
    return jax.tree.map(np.asarray, state), jax.tree.map(np.asarray, metrics), np.asarray(table)


def test_shaping_at_episode_ends_uses_the_final_observation():
    batch, _, table = _record(weight=1.0)
    obs, nxt = batch["obs"].astype(int), batch["next_obs"].astype(int)
    term, trunc = batch["terminated"], batch["truncated"]
    assert term.any() and trunc.any()
    env_reward = term * 1.0  # goal_reward on entering the goal, step_reward 0 otherwise
    expected = env_reward + 0.9 * (1 - term) * table[nxt] - table[obs]
    np.testing.assert_allclose(batch["reward"], expected, rtol=1e-6, atol=1e-6)
    # At truncation s' is the cell the last move reached (next to s), not the next episode's
    # start: the auto-reset does not leak into F.
    rows, cols = obs // 4, obs % 4
    step = np.abs(rows - nxt // 4) + np.abs(cols - nxt % 4)
    assert (step[trunc > 0] <= 1).all()
    assert ((rows + cols)[trunc > 0] >= 2).any()  # far from the start cell (0, 0)


def test_logged_return_is_unshaped_and_shaped_return_beside_it():
    _, plain, _ = _record(weight=0.0)
    _, shaped, _ = _record(weight=1.0)
    np.testing.assert_array_equal(plain["episode_return"], shaped["episode_return"])
    np.testing.assert_array_equal(plain["shaped_return"], plain["episode_return"])
    assert not np.allclose(shaped["shaped_return"], shaped["episode_return"])
    np.testing.assert_array_equal(shaped["shaping_weight"], 1.0)


@pytest.mark.parametrize(
    "schedule, progress, ema, expected",
    [
        ("constant", 0.7, 0.0, 1.0),
        ("linear", 0.25, 0.0, 0.5),  # anneal_fraction 0.5
        ("linear", 0.75, 0.0, 0.0),
        ("exponential", 0.5, 0.0, np.exp(-2.0)),  # decay 4
        ("adaptive", 0.5, 10.0, 1.0),  # at or below return_low: full weight
        ("adaptive", 0.5, 15.0, 0.5),
        ("adaptive", 0.5, 30.0, 0.0),
    ],
)
def test_schedule_factors(schedule, progress, ema, expected):
    got = schedule_factor(
        jnp.float32(SCHEDULES.index(schedule)), progress, 0.5, 4.0, ema, 10.0, 20.0
    )
    np.testing.assert_allclose(float(got), expected, rtol=1e-6)


# ------------------------------------------------------------------ learning


@pytest.mark.slow
def test_q_learning_with_shaping_converges_to_q_star_minus_phi():
    """Random behaviour, truncation after 10 steps (bootstrapped): the shaped Q-table is
    Q* - Phi with Phi = -distance / 6 (the distance potential of a 4 x 4 grid)."""
    prepared, result = train(
        "progress=false",
        "agent=q_learning",
        *RANDOM_4X4_GRID,
        "+shaping.name=distance",
        "+shaping.weight=1.0",
    )
    cells = np.arange(16)
    phi = -(np.abs(cells // 4 - 3) + np.abs(cells % 4 - 3)) / 6.0
    expected = q_star_gridworld(4, (3, 3), 0.9) - phi[:, None]
    learned = result.agent_states.q[:, :16]
    np.testing.assert_allclose(
        learned[:, :15], np.broadcast_to(expected[:15], (2, 15, 4)), atol=1e-4
    )


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("+shaping.kind=reward",),
            "shaping.kind: got 'reward'; must be one of 'potential', 'bonus'",
        ),
        (
            ("+shaping.schedule=[constant,cosine]",),
            "shaping.schedule[1]: got 'cosine'; must be one "
            "of 'constant', 'linear', 'exponential', "
            "'adaptive'",
        ),
        (("+shaping.potential=value",), "shaping.checkpoint: got None; potential 'value' needs"),
        (
            ("+shaping.return_low=5", "+shaping.return_high=5"),
            "shaping.return_high: got 5.0; must be > shaping.return_low = 5.0",
        ),
        (("+shaping.anneal_fraction=0",), "shaping.anneal_fraction: got 0"),
        (("+shaping.weigth=1",), "shaping.weigth: unknown field"),
    ],
)
def test_shaping_config_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment(compose_raw(*overrides))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("env=pendulum", "+shaping.kind=potential"),
            "shaping.potential: no progress potential for 'Pendulum-v1'",
        ),
        (
            ("+shaping.kind=bonus",),
            "shaping.kind: 'bonus' needs a distance to the goal; 'CartPole-v1' has none",
        ),
        (("+shaping.name=height",), "shaping.name: got 'height'; CartPole-v1 has: angle"),
    ],
)
def test_shaping_errors_that_need_the_env(overrides, message):
    with pytest.raises(ConfigError) as error:
        prepare(parse_experiment(compose_raw(*overrides)))
    assert message in str(error.value)


def test_sweeping_weight_and_schedule_in_one_program():
    prepared, result = train(
        "progress=false",
        "agent.num_envs=4",
        "agent.num_steps=16",
        "train.total_timesteps=512",
        "train.num_logs=2",
        "runs.seeds=2",
        "+shaping.weight=[0.0,2.0]",
        "+shaping.schedule=[constant,linear]",
    )
    table = prepared.runs.table
    assert len(table) == 8 and set(table["shaping.schedule"]) == {"constant", "linear"}
    weight = result.metrics["shaping_weight"]  # [runs, logs], mean over each log's updates
    base = table["shaping.weight"].to_numpy()[:, None]
    constant = (table["shaping.schedule"] == "constant").to_numpy()
    np.testing.assert_array_equal(weight[constant], np.broadcast_to(base, weight.shape)[constant])
    annealed = ~constant & (base[:, 0] > 0)
    assert (weight[annealed, 1] < weight[annealed, 0]).all() and (weight[annealed] < 2).all()
    assert (weight[base[:, 0] == 0] == 0).all()


def test_value_potential_from_a_checkpoint(tmp_path):
    raw = compose_raw(
        "progress=false",
        "plot=false",
        "agent.num_envs=4",
        "agent.num_steps=16",
        "train.total_timesteps=256",
        "train.num_logs=1",
        "runs.seeds=1",
        "save_checkpoint=true",
    )
    out = run_experiment(parse_experiment(raw), raw, tmp_path / "src")
    _, result = train(
        "progress=false",
        "agent=dqn",
        "agent.num_envs=4",
        "agent.num_steps=8",
        "train.total_timesteps=128",
        "train.num_logs=1",
        "runs.seeds=1",
        "+shaping.potential=value",
        f"+shaping.checkpoint={out / 'checkpoint'}",
    )
    assert np.isfinite(result.metrics["shaped_return"]).all()
    assert not np.allclose(result.metrics["shaped_return"], result.metrics["episode_return"])
    with pytest.raises(ConfigError, match="its agent sees observations of shape"):
        prepare(
            parse_experiment(
                compose_raw(
                    "env=acrobot",
                    "+shaping.potential=value",
                    f"+shaping.checkpoint={out / 'checkpoint'}",
                )
            )
        )
