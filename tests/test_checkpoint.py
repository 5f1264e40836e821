"""Checkpoints: exact round trip, identical continued training, and one message per mismatch."""

import json

import jax
import numpy as np
import pytest

from research import checkpoint
from research.config import ConfigError, parse_experiment
from research.pipelines.train import prepare
from research.runner import run_batch
from tests.conftest import compose_raw, train

TINY = ("progress=false", "runs.seeds=3", "train.num_logs=2")
AGENTS = {
    "ppo": ("agent=ppo", "agent.num_envs=4", "agent.num_steps=16", "train.total_timesteps=256"),
    "ppo_continuous": (
        "agent=ppo",
        "env=pendulum",
        "agent.normalize_obs=true",
        "agent.num_envs=4",
        "agent.num_steps=16",
        "train.total_timesteps=256",
    ),
    "pqn": ("agent=dqn", "agent.num_envs=4", "agent.num_steps=8", "train.total_timesteps=128"),
    "dqn_replay": (
        "agent=dqn",
        "agent.mode=dqn",
        "agent.num_envs=4",
        "agent.num_steps=8",
        "agent.buffer_size=64",
        "agent.batch_size=8",
        "agent.learning_starts=16",
        "train.total_timesteps=128",
    ),
    "reinforce": (
        "agent=reinforce",
        "agent.baseline=mean",
        "agent.num_envs=4",
        "agent.num_steps=16",
        "train.total_timesteps=256",
    ),
    "q_learning": ("agent=q_learning", "env=gridworld", "train.total_timesteps=256"),
}


def template(prepared):
    """One run's abstract state of the prepared agent."""
    return jax.eval_shape(prepared.agent.init, jax.random.key(0), prepared.config.agent.hparams)


def save(prepared, result, path, raw=None):
    return checkpoint.save(
        path,
        result.agent_states,
        agent=prepared.config.agent.name,
        spec=prepared.env.spec,
        agent_config=prepared.config.agent.config,
        runs=prepared.runs.table,
        raw_config=raw or {},
    )


def load(prepared, path, indices=None):
    return checkpoint.load(
        path,
        template(prepared),
        agent=prepared.config.agent.name,
        spec=prepared.env.spec,
        agent_config=prepared.config.agent.config,
        indices=indices,
    )


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", list(AGENTS))
def test_round_trip_is_exact_and_selects_runs(name, tmp_path):
    prepared, result = train(*TINY, *AGENTS[name])
    path = save(prepared, result, tmp_path / "ckpt", raw={"agent": {"name": name}})
    assert not list(tmp_path.glob(".ckpt*")), "no temporary left behind"
    assert_trees_equal(load(prepared, path), result.agent_states)
    picked = load(prepared, path, indices=[2, 0])
    assert_trees_equal(picked, jax.tree.map(lambda x: x[np.array([2, 0])], result.agent_states))
    meta, runs = checkpoint.read_info(path)
    assert meta["agent"] == prepared.config.agent.name and len(runs) == 3
    assert meta["provenance"]["versions"]["jax"] == jax.__version__


@pytest.mark.parametrize("name", ["ppo", "dqn_replay"])
def test_continued_training_from_a_loaded_checkpoint_is_identical(name, tmp_path):
    prepared, result = train(*TINY, *AGENTS[name])
    loaded = load(prepared, save(prepared, result, tmp_path / "ckpt"))
    runs = prepared.runs
    go = lambda state: run_batch(
        prepared.trainer,
        runs.seeds + 7,
        runs.hparams,
        runs.env_params,
        state,
        devices=prepared.devices,
    )
    a, b = go(result.agent_states), go(loaded)
    assert_trees_equal(a.agent_states, b.agent_states)
    for k in a.metrics:
        np.testing.assert_array_equal(a.metrics[k], b.metrics[k], err_msg=k)
    # Continuing really trained: the update counter went on from the checkpoint's.
    assert (a.agent_states.num_updates == 2 * result.agent_states.num_updates).all()


def test_overwriting_a_checkpoint_replaces_it_whole(tmp_path):
    prepared, result = train(*TINY, *AGENTS["ppo"])
    path = save(prepared, result, tmp_path / "ckpt")
    doubled = jax.tree.map(lambda x: x * 2, result.agent_states)
    save(prepared, type(result)(doubled, result.metrics, result.info), path)
    assert_trees_equal(load(prepared, path), doubled)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.fixture(scope="module")
def ppo_checkpoint(tmp_path_factory):
    prepared, result = train(*TINY, *AGENTS["ppo"])
    return save(prepared, result, tmp_path_factory.mktemp("ckpt") / "ppo")


def _loader(*overrides):
    return prepare(parse_experiment(compose_raw(*TINY, *overrides)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("agent=dqn",), "the checkpoint holds a 'ppo' agent, the config asks for 'dqn'"),
        (
            ("agent=ppo", "env=acrobot"),
            "env obs_shape: checkpoint [4] (CartPole-v1), target [6] (Acrobot-v1)",
        ),
        (("agent=ppo", "env=acrobot"), "env num_actions: checkpoint 2 (CartPole-v1), target 3"),
        (
            ("agent=ppo", "env=pendulum"),
            "env discrete: checkpoint True (CartPole-v1), target False",
        ),
        (
            ("agent=ppo", "agent.hidden_sizes=[32,32]"),
            "agent.hidden_sizes: checkpoint [64, 64], config [32, 32]",
        ),
        (
            ("agent=ppo", "agent.hidden_sizes=[32,32]"),
            "parameter params/params/actor_head/kernel:"
            " checkpoint shape [64, 2] float32, agent [32, 2]",
        ),
        (
            ("agent=ppo", "agent.hidden_sizes=[64,64,64]"),
            "parameter params/params/actor_torso/Dense_2/bias: missing from the checkpoint",
        ),
        (
            ("agent=ppo", "agent.activation=relu"),
            "agent.activation: checkpoint 'tanh', config 'relu'",
        ),
    ],
)
def test_each_mismatch_names_what_differs(ppo_checkpoint, overrides, message):
    with pytest.raises(ConfigError, match="does not fit the configured agent") as error:
        load(_loader(*overrides), ppo_checkpoint)
    assert message in str(error.value)


def test_bad_paths_and_run_indices(ppo_checkpoint, tmp_path):
    prepared = _loader("agent=ppo")
    with pytest.raises(ConfigError, match="is not a checkpoint directory"):
        load(prepared, tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"checkpoint runs: got \[3\]; the checkpoint holds "
        r"runs 0..2",
    ):
        load(prepared, ppo_checkpoint, indices=[3])


def test_loading_never_unpickles(ppo_checkpoint, tmp_path):
    """An object array (which only pickle can hold) is refused, not executed."""
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ppo_checkpoint, bad)
    with np.load(bad / "arrays.npz") as data:
        arrays = dict(data)
    key = next(iter(arrays))
    arrays[key] = np.array([object()] * len(arrays[key]), dtype=object)
    np.savez(bad / "arrays.npz", **arrays)
    # Caught first by its checksum (checkpoint.json records the saved file's sha256) ...
    with pytest.raises(ValueError, match="arrays.npz' is damaged: its sha256 differs"):
        load(_loader("agent=ppo"), bad)
    # ... and, in a checkpoint saved before checksums, refused by the loader itself.
    meta = json.loads((bad / "checkpoint.json").read_text())
    del meta["sha256"]
    (bad / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="allow_pickle"):
        load(_loader("agent=ppo"), bad)
