"""PPO learns the known answers of the probe environments, solves CartPole, learns Pendulum."""

import jax
import numpy as np
import pytest

from research.config import parse_experiment
from research.pipelines.train import execute, prepare
from tests.conftest import compose_raw

PROBE = ("progress=false", "env=gymnax", "runs.seeds=2", "agent.num_envs=8",
         "agent.num_steps=16", "agent.lr=3e-3", "agent.anneal_lr=false", "agent.ent_coef=0.0",
         "train.num_logs=1")


def _train(*overrides):
    prepared = prepare(parse_experiment(compose_raw(*overrides)))
    return prepared, execute(prepared)


def _evaluate(prepared, result, obs_values):
    """Greedy action, its probability and V(obs) of every run at each 1-d observation."""
    agent = prepared.agent
    obs = np.asarray(obs_values, np.float32)[:, None]
    act = jax.vmap(lambda s, h: agent.act(s, obs, jax.random.key(0), h, False))
    action, aux = act(result.agent_states, prepared.runs.hparams)
    return np.asarray(action), np.exp(np.asarray(aux["log_prob"])), np.asarray(aux["value"])


@pytest.mark.slow
@pytest.mark.parametrize("env_id,gamma,obs,best_action,value", [
    ("ConstantReward-probe", 0.99, [0.0], None, [1.0]),
    ("ObsDependentReward-probe", 0.99, [-1.0, 1.0], None, [-1.0, 1.0]),
    ("TwoStepDiscount-probe", 0.5, [0.0, 1.0], None, [0.5, 1.0]),
    ("ActionDependentReward-probe", 0.99, [0.0], [1], [1.0]),
    ("ObsActionReward-probe", 0.99, [-1.0, 1.0], [0, 1], [1.0, 1.0]),
])
def test_probe(env_id, gamma, obs, best_action, value):
    prepared, result = _train(*PROBE, f"env.id={env_id}", f"agent.gamma={gamma}",
                              "train.total_timesteps=40000")
    action, prob, v = _evaluate(prepared, result, obs)
    np.testing.assert_allclose(v, np.broadcast_to(value, v.shape), atol=0.1)
    if best_action is not None:
        assert (action == np.asarray(best_action)).all(), action
        assert (prob > 0.9).all(), prob


@pytest.mark.slow
def test_solves_cartpole():
    """Mean return of the episodes in the last log >= 475 over 8 seeds."""
    _, result = _train("progress=false", "runs.seeds=8", "train.total_timesteps=500000",
                       "train.num_logs=20")
    final = result.metrics["episode_return"][:, -1]
    assert final.mean() >= 475, final


@pytest.mark.slow
def test_learns_pendulum():
    """Random policy scores about -1200; the learned one must reach well above -400."""
    _, result = _train("progress=false", "experiment=ppo_pendulum", "runs.seeds=4",
                       "train.total_timesteps=400000")
    returns = result.metrics["episode_return"]
    assert returns[:, 0].mean() < -900  # it started at random-policy level
    assert returns[:, -1].mean() > -400, returns[:, -1]
