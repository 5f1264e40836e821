"""Deep Q-learning: targets and buffer by hand, probes, CartPole in both modes, MinAtar."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents.dqn import (
    double_q_targets,
    one_step_targets,
    q_lambda_targets,
    q_network,
    td_loss,
)
from research.config import ConfigError, parse_experiment
from research.pipelines.train import prepare
from research.rl.exploration import epsilon_greedy
from research.rl.replay import buffer_add, buffer_bytes, buffer_init, buffer_sample
from tests.conftest import compose_raw, probe_runs, train, train_probes


def test_q_lambda_targets_by_hand():
    """Peng's Q(lambda) with V = max Q; gamma .5, lambda .5, a truncation at t=1."""
    r = jnp.array([1.0, 2.0, 3.0])
    v = jnp.array([0.0, 4.0, 0.0])  # max_a Q(s_t); V(s_2) matters only through s'_1 != s_2
    v_next = jnp.array([4.0, 8.0, 10.0])  # max_a Q(s'_t)
    term, trunc = jnp.array([False, False, False]), jnp.array([False, True, False])
    got = q_lambda_targets(r, v, v_next, term, trunc, 0.5, 0.5)
    g2 = 3 + 0.5 * 10  # bootstrap at the rollout end
    g1 = 2 + 0.5 * 8  # truncated: bootstrap from the final observation, no recursion
    g0 = 1 + 0.5 * (0.5 * 4 + 0.5 * g1)
    np.testing.assert_allclose(got, [g0, g1, g2], rtol=1e-6)
    done = q_lambda_targets(r, v, v_next, jnp.array([False, True, False]), term, 0.5, 0.5)
    np.testing.assert_allclose(done[1], 2.0)  # terminated: no bootstrap


def test_one_step_targets_and_loss():
    next_q = jnp.array([[1.0, 3.0], [5.0, 2.0]])
    t = one_step_targets(jnp.array([1.0, 1.0]), next_q, jnp.array([0.0, 1.0]), 0.9)
    np.testing.assert_allclose(t, [1 + 0.9 * 3, 1.0])
    q = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    loss = td_loss(q, jnp.array([1, 0]), jnp.array([2.0, 0.0]))
    np.testing.assert_allclose(loss, 0.5 * ((1 - 2) ** 2 + (2 - 0) ** 2) / 2)


def test_double_q_targets_value_the_online_choice_with_the_target_net():
    next_q_target = jnp.array([[1.0, 3.0], [5.0, 2.0]])
    next_q_online = jnp.array([[2.0, 1.0], [0.0, 4.0]])  # picks a' = 0, then a' = 1
    t = double_q_targets(
        jnp.array([1.0, 1.0]), next_q_target, next_q_online, jnp.array([0.0, 0.0]), 0.9
    )
    np.testing.assert_allclose(t, [1 + 0.9 * 1, 1 + 0.9 * 2])  # plain max: 1 + 0.9 * [3, 5]
    done = double_q_targets(
        jnp.array([1.0]), next_q_target[:1], next_q_online[:1], jnp.array([1.0]), 0.9
    )
    np.testing.assert_allclose(done, [1.0])


def test_huber_td_loss_is_quadratic_then_linear():
    q = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    loss = td_loss(q, jnp.array([1, 0]), jnp.array([1.5, -1.0]), "huber")
    np.testing.assert_allclose(loss, (0.5 * 0.5**2 + (3.0 - 0.5)) / 2)  # errors -0.5 and 3
    grad = jax.grad(lambda q: td_loss(q, jnp.array([0]), jnp.array([-10.0]), "huber"))
    np.testing.assert_allclose(grad(jnp.zeros((1, 2))), [[1.0, 0.0]])  # capped at 1


def test_replay_buffer_wraps_and_samples_filled_slots():
    buffer = buffer_init({"x": jnp.zeros(()), "o": jnp.zeros((3,))}, capacity=5)
    assert buffer_bytes(buffer) == 5 * 4 + 5 * 3 * 4
    buffer = buffer_add(buffer, {"x": jnp.arange(3.0), "o": jnp.ones((3, 3))})
    assert int(buffer.size) == 3 and int(buffer.position) == 3
    sample = buffer_sample(buffer, jax.random.key(0), 1000)
    assert set(np.asarray(sample["x"]).tolist()) == {0.0, 1.0, 2.0}
    buffer = buffer_add(buffer, {"x": jnp.arange(3.0, 7.0), "o": jnp.ones((4, 3))})
    assert int(buffer.size) == 5 and int(buffer.position) == 2
    np.testing.assert_array_equal(buffer.data["x"], [5.0, 6.0, 2.0, 3.0, 4.0])  # 0, 1 overwritten


def test_epsilon_greedy_rates():
    q = jnp.tile(jnp.array([0.0, 1.0, 0.0, 0.0]), (20000, 1))
    for eps in (0.0, 0.2, 1.0):
        a = epsilon_greedy(jax.random.key(1), q, eps)
        # greedy with prob 1 - eps, plus eps / 4 by chance
        assert np.mean(a == 1) == pytest.approx(1 - eps + eps / 4, abs=0.01)
    # exploring picks each action uniformly
    np.testing.assert_allclose(np.bincount(np.asarray(a), minlength=4) / len(a), 0.25, atol=0.01)


def test_continuous_actions_are_refused_before_compiling():
    with pytest.raises(
        ConfigError,
        match=r"agent.name: 'dqn' needs discrete actions; env.id "
        r"'Pendulum-v1'",
    ):
        prepare(parse_experiment(compose_raw("agent=dqn", "env=pendulum")))


def _train(*overrides):
    return train("progress=false", "agent=dqn", *overrides)


# (env_id, gamma, observations, Q* at each [len(obs), 2 actions])
Q_PROBES = [
    ("ConstantReward-probe", 0.9, [0.0], [[1.0, 1.0]]),
    ("ObsDependentReward-probe", 0.9, [-1.0, 1.0], [[-1.0, -1.0], [1.0, 1.0]]),
    ("TwoStepDiscount-probe", 0.5, [0.0, 1.0], [[0.5, 0.5], [1.0, 1.0]]),
    ("ActionDependentReward-probe", 0.9, [0.0], [[-1.0, 1.0]]),
    ("ObsActionReward-probe", 0.9, [-1.0, 1.0], [[1.0, -1.0], [-1.0, 1.0]]),
]


@pytest.fixture(scope="module")
def probes():
    """Every probe in each mode, one program per mode (the mode is static)."""
    # dqn mode: more gradient steps per update and a faster target, for the few updates here
    extra = {"pqn": (), "dqn": ("agent.num_epochs=16", "agent.tau=0.1")}
    return {
        mode: train_probes(
            *extra[mode],
            "progress=false",
            "agent=dqn",
            f"agent.mode={mode}",
            "agent.epsilon_end=0.5",
            "agent.lr=5e-3",
            "agent.learning_starts=64",
            "agent.buffer_size=1024",
            "agent.batch_size=64",
            "agent.hidden_sizes=[32,32]",
            "runs.seeds=2",
            "train.total_timesteps=40000",
            "train.num_logs=1",
            gammas=(0.9, 0.5),
        )
        for mode in ("pqn", "dqn")
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", Q_PROBES, ids=[c[0] for c in Q_PROBES])
@pytest.mark.parametrize("mode", ["pqn", "dqn"])
def test_probe_q_values(probes, mode, case):
    env_id, gamma, obs, q_star = case
    prepared, result = probes[mode]
    _, states = probe_runs(prepared, result, env_id, gamma)
    net = q_network(prepared.config.agent.config, prepared.env.spec)
    q = jax.vmap(lambda s: net.apply(s.params, jnp.asarray(obs)[:, None]))(states)
    np.testing.assert_allclose(q, np.broadcast_to(q_star, q.shape), atol=0.15)


@pytest.mark.slow
def test_pqn_solves_cartpole():
    """Mean final return >= 475 over 4 seeds (measured 2026-12-04: 500 in each of 4; 8 runs
    in one program gave 487-500 in 64 s, against 40 s for 4)."""
    _, result = _train("experiment=pqn_cartpole", "runs.seeds=4")
    final = result.metrics["episode_return"][:, -1]
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_pqn_learns_minatar_breakout_clearly_above_random():
    """Random play (epsilon fixed at 1) runs beside the learner in the same program."""
    prepared, result = _train(
        "experiment=pqn_minatar_breakout",
        "runs.seeds=2",
        "sweep.epsilon_end=[1.0,0.01]",
        "train.total_timesteps=250000",
    )
    final = result.metrics["episode_return"][:, -1]
    is_random = prepared.runs.table["epsilon_end"].to_numpy() == 1.0
    random_return, learned = final[is_random].mean(), final[~is_random].mean()
    assert random_return < 1.0  # measured: about 0.4
    assert learned > 5 * random_return and learned > 3.0, (learned, random_return)


@pytest.mark.slow
def test_dqn_with_replay_learns_cartpole():
    """Replay mode (Double DQN targets, soft target network) learns CartPole in 300k steps.

    Measured: final return 500 in all 8 runs for seeds 0-7 and for seeds 100-107 on an
    earlier machine; on the machine of 2026-12-02 the same 4-run program gave
    [500, 360, 500, 299] (one run never passed 360, one fell from 500), and an 8-run
    program 441-500 (mean 486): the program's shape changes float rounding, and DQN's
    instability amplifies it. So this asserts learning with margin (random play: ~22), and
    that some run solves it, not that every run does. Two runs, since the program costs
    about its runs (measured 2026-12-03: 59 s for 2 runs, both at 500 from 260k steps,
    against 145 s for 4).
    """
    _, result = _train("experiment=dqn_cartpole", "runs.seeds=2")
    final = result.metrics["episode_return"][:, -1]
    assert result.metrics["episode_return"][:, 0].mean() < 50  # it started near random play
    assert final.mean() >= 300, final
    assert (final >= 475).any(), final


def test_replay_memory_per_run_matches_the_readme_formula():
    """docs/agents.md: buffer_size x (2 x obs size + 3) x 4 bytes; CartPole, 50k slots: 2.2 MB."""
    prepared = prepare(parse_experiment(compose_raw("experiment=dqn_cartpole", "runs.seeds=1")))
    state = jax.eval_shape(prepared.agent.init, jax.random.key(0), prepared.config.agent.hparams)
    expected = prepared.config.agent.config.buffer_size * (2 * 4 + 3) * 4
    assert buffer_bytes(state.buffer) == expected == 2_200_000
