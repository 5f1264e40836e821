"""REINFORCE: the loss and the baselines by hand, probes, CartPole-v1, Pendulum-v1."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents.reinforce import make, policy_gradient_loss, running_mean
from research.config import ReinforceConfig, ReinforceHParams
from research.envs import Env
from research.rl.rollout import Transition
from tests.conftest import PROBE_CASES, check_probe, train, train_probes


class LossTest(chex.TestCase):
    @chex.all_variants(with_pmap=False)
    def test_policy_gradient_by_hand(self):
        """Uniform 2-action policy, actions [1, 0], advantages [2, -1].

        loss = -mean(log .5 * [2, -1]) = -0.5 log .5; d loss / d logits =
        -mean_i A_i (onehot(a_i) - pi) = -0.5 * (2 (-.5, .5) - (.5, -.5)) = (.75, -.75).
        """
        actions, advantages = jnp.array([1, 0]), jnp.array([2.0, -1.0])

        def loss(logits, adv):
            logp = jax.nn.log_softmax(jnp.broadcast_to(logits, (2, 2)))
            taken = jnp.take_along_axis(logp, actions[:, None], axis=1)[:, 0]
            return policy_gradient_loss(taken, adv)

        value, (g_logits, g_adv) = self.variant(jax.value_and_grad(loss, argnums=(0, 1)))(
            jnp.zeros(2), advantages
        )
        np.testing.assert_allclose(value, -0.5 * np.log(0.5), rtol=1e-6)
        np.testing.assert_allclose(g_logits, [0.75, -0.75], rtol=1e-6)
        np.testing.assert_allclose(g_adv, [0.0, 0.0])  # advantages are constants

    @chex.all_variants(with_pmap=False)
    def test_running_mean_by_hand(self):
        returns = jnp.array([[1.0, 3.0], [5.0, 3.0]])  # mean 3
        update = self.variant(running_mean)
        np.testing.assert_allclose(update(2.0, returns, 0.9, False), 0.9 * 2 + 0.1 * 3)
        np.testing.assert_allclose(update(2.0, returns, 0.9, True), 3.0)  # starts at the data


def _batch(rewards, terminated=(False,) * 3, truncated=(False,) * 3, action=0):
    """A [T=3, N=1] rollout that always sees observation 0 of a 1-d probe."""
    col = lambda x, dtype=jnp.float32: jnp.asarray(x, dtype)[:, None]
    zeros = jnp.zeros((3, 1))
    return Transition(
        obs=zeros[..., None],
        action=jnp.full((3, 1), action),
        reward=col(rewards),
        terminated=col(terminated, bool),
        truncated=col(truncated, bool),
        next_obs=zeros[..., None],
        aux={},
        episode_return=zeros,
        episode_length=zeros,
    )


def _agent(baseline):
    return make(
        ReinforceConfig(num_envs=1, num_steps=3, baseline=baseline),
        Env("ConstantReward-probe").spec,
        total_updates=10,
    )


def test_mean_baseline_in_update_by_hand():
    """gamma .5; first batch ends (terminated) at t=1: G = [1 + .5 * 2, 2, 3], mean 7/3.
    Second batch, no ends, pure Monte Carlo: G = [.75, 1.5, 3], mean 1.75."""
    agent, hp = _agent("mean"), ReinforceHParams(gamma=0.5, baseline_decay=0.9)
    state = agent.init(jax.random.key(0), hp)
    action, aux = agent.act(state, jnp.zeros((1, 1)), jax.random.key(1), hp, False)
    logp = float(aux["log_prob"][0])
    state, m1 = agent.update(
        state,
        _batch([1.0, 2.0, 3.0], terminated=(False, True, False), action=int(action[0])),
        jax.random.key(2),
        hp,
    )
    np.testing.assert_allclose(m1["return"], 7 / 3, rtol=1e-6)
    np.testing.assert_allclose(m1["baseline"], 0.0)  # nothing seen before the first batch
    np.testing.assert_allclose(m1["policy_loss"], -logp * 7 / 3, rtol=1e-5)
    np.testing.assert_allclose(state.baseline, 7 / 3, rtol=1e-6)
    state, m2 = agent.update(state, _batch([0.0, 0.0, 3.0]), jax.random.key(3), hp)
    np.testing.assert_allclose(m2["baseline"], 7 / 3, rtol=1e-6)  # this batch is excluded
    np.testing.assert_allclose(state.baseline, 0.9 * 7 / 3 + 0.1 * 1.75, rtol=1e-6)


def test_value_baseline_bootstraps_and_critic_sees_no_policy_gradient():
    """Truncation at t=1 and the rollout's end bootstrap from V(s') (reward_scale 2):
    G2 = 6 + .5 V, G1 = 4 + .5 V, G0 = 2 + .5 G1. With vf_coef 0 the critic stays put."""
    agent = _agent("value")
    hp = ReinforceHParams(gamma=0.5, vf_coef=0.0, reward_scale=2.0)
    state = agent.init(jax.random.key(0), hp)
    _, aux = agent.act(state, jnp.zeros((1, 1)), jax.random.key(1), hp, False)
    v = float(aux["value"][0])
    new, metrics = agent.update(
        state, _batch([1.0, 2.0, 3.0], truncated=(False, True, False)), jax.random.key(2), hp
    )
    g1 = 4 + 0.5 * v
    expected = (2 + 0.5 * g1 + g1 + 6 + 0.5 * v) / 3
    np.testing.assert_allclose(metrics["return"], expected, rtol=1e-5)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new.params, state.params)["params"]
    assert not any(jax.tree.leaves((changed["critic_torso"], changed["critic_head"])))
    assert changed["actor_head"]["bias"]  # (at observation 0 only biases get gradients)


PROBE = (
    "progress=false",
    "agent=reinforce",
    "runs.seeds=2",
    "agent.num_envs=8",
    "agent.num_steps=16",
    "agent.lr=3e-3",
    "train.num_logs=1",
    "train.total_timesteps=40000",
)


@pytest.fixture(scope="module")
def probes():
    """Every probe under each baseline, one program per baseline (the baseline is static)."""
    return {
        baseline: train_probes(*PROBE, f"agent.baseline={baseline}", gammas=gammas)
        for baseline, gammas in (("value", (0.99, 0.5)), ("mean", (0.99,)), ("none", (0.99,)))
    }


@pytest.mark.slow
@pytest.mark.parametrize("case", PROBE_CASES, ids=[c[0] for c in PROBE_CASES])
def test_probe_value_baseline(probes, case):
    """The critic learns the known values; the policy the best action where one exists."""
    check_probe(*probes["value"], case)


@pytest.mark.slow
@pytest.mark.parametrize("baseline", ["mean", "none"])
@pytest.mark.parametrize("case", [c for c in PROBE_CASES if c[3] is not None], ids=lambda c: c[0])
def test_probe_policy_without_critic(probes, baseline, case):
    """The policy learns the best action (the untrained critic's values are not checked)."""
    check_probe(*probes[baseline], case, check_value=False)


@pytest.mark.slow
def test_solves_cartpole():
    """Mean return of the episodes in the last log >= 475 over 8 seeds."""
    _, result = train(
        "progress=false",
        "experiment=reinforce_cartpole",
        "runs.seeds=8",
        "train.total_timesteps=300000",
        "train.num_logs=10",
    )
    final = result.metrics["episode_return"][:, -1]
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_learns_pendulum():
    """Continuous actions: from random-policy level (about -1200) to well above -500.
    Most seeds reach -170 ... -300; 8 of them, so that one straggler near -700 cannot fail it."""
    _, result = train("progress=false", "experiment=reinforce_pendulum", "runs.seeds=8")
    returns = result.metrics["episode_return"]
    assert returns[:, 0].mean() < -900  # it started at random-policy level
    assert returns[:, -1].mean() > -500, returns[:, -1]
