"""Diverged runs are caught (diverged_at) and never reported as results.

A NaN source with a hand-known update: `_PoisonAt` turns every float of the agent's state
into NaN after update `traced` of its run (-1: never), so each run of a batch diverges at
an update the test chooses; bad physics (CartPole without mass) diverges at update 0.
"""

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.agents import make_agent
from research.config import (
    ConfigError,
    PPOConfig,
    PPOHParams,
    QLearningConfig,
    QLearningHParams,
    parse_experiment,
)
from research.envs import Env
from research.pipelines.train import divergence_warning, execute, prepare, write_run_dir
from research.runner import Extension, RunParams, make_train, run_batch
from tests.conftest import compose_raw


@dataclass(frozen=True)
class _PoisonAt(Extension):
    """After update `step.traced` of a run (-1: never), every float of its agent state is NaN."""

    name: str = "poison"
    traced = True

    def after_update(self, agent_state, state, step, previous):
        hit = step.update == step.traced
        poison = lambda x: jnp.where(hit, jnp.nan, x) if jnp.issubdtype(x.dtype, jnp.inexact) else x
        return jax.tree.map(poison, agent_state), state


NUM_UPDATES, NUM_LOGS = 8, 4  # two updates per log
POISON = np.array([5, -1, 0], np.int32)  # run 0 diverges in log 2, run 1 never, run 2 at once


def _batch(on_diverge, agent_name="ppo"):
    if agent_name == "ppo":
        env = Env("CartPole-v1")
        config, hp = PPOConfig(num_envs=4, num_steps=8), PPOHParams()
    else:
        env = Env("GridWorld-tabular")
        config, hp = QLearningConfig(num_envs=4, num_steps=8), QLearningHParams()
    agent = make_agent(agent_name, config, env.spec, NUM_UPDATES)
    trainer = make_train(
        agent, env, 4, 8, NUM_UPDATES, NUM_LOGS, [_PoisonAt()], on_diverge=on_diverge
    )
    r = len(POISON)
    stack = lambda tree: jax.tree.map(lambda x: np.stack([np.asarray(x)] * r), tree)
    params = RunParams(env=stack(env.default_params), ext={"poison": POISON})
    return run_batch(trainer, np.arange(r), stack(hp), params)


@pytest.fixture(scope="module")
def batches():
    return {mode: _batch(mode) for mode in (None, "continue", "stop")}


def test_diverged_at_is_the_first_non_finite_update(batches):
    at = batches["continue"].metrics["diverged_at"]
    np.testing.assert_array_equal(at, [[-1, -1, 5, 5], [-1] * 4, [0] * 4])
    np.testing.assert_array_equal(batches["stop"].metrics["diverged_at"], at)


def test_a_diverged_run_reports_nothing_from_the_log_it_diverged_in(batches):
    m, plain = batches["continue"].metrics, batches[None].metrics
    # Without the check, the NaN network of run 0 went on finishing episodes: returns
    # that would have been reported as results.
    assert plain["episodes"][0, 3] > 0 and np.isfinite(plain["episode_return"][0, 3])
    for name, values in m.items():
        if name in ("env_steps", "diverged_at"):
            continue
        if name == "episodes":
            np.testing.assert_array_equal(values[0, 2:], 0)
            np.testing.assert_array_equal(values[2], 0)
        else:
            assert np.isnan(values[0, 2:]).all() and np.isnan(values[2]).all(), name
    np.testing.assert_array_equal(m["env_steps"], plain["env_steps"])


def test_the_check_changes_no_other_metric_of_a_healthy_run_or_log(batches):
    """Bit for bit: the healthy run 1 in every mode, and run 0 before it diverged, are the
    loop without the check (on_diverge=None)."""
    plain = batches[None].metrics
    for mode in ("continue", "stop"):
        m = batches[mode].metrics
        assert set(m) - set(plain) == {"diverged_at"}
        for name in plain:
            np.testing.assert_array_equal(m[name][1], plain[name][1], err_msg=f"{mode} {name}")
            np.testing.assert_array_equal(m[name][0, :2], plain[name][0, :2], err_msg=name)
    final = lambda b: jax.tree.leaves(jax.tree.map(lambda x: x[1], b.agent_states))
    for a, b in zip(final(batches["stop"]), final(batches[None])):
        np.testing.assert_array_equal(a, b)


def test_stop_keeps_the_last_finite_state(batches):
    finite = lambda b, run: all(
        np.isfinite(x[run]).all()
        for x in jax.tree.leaves(b.agent_states)
        if np.issubdtype(x.dtype, np.inexact)
    )
    assert not finite(batches["continue"], 0) and not finite(batches["continue"], 2)
    assert finite(batches["stop"], 0) and finite(batches["stop"], 2)


def test_tabular_q_learning_is_checked_too():
    at = _batch("continue", "q_learning").metrics["diverged_at"][:, -1]
    np.testing.assert_array_equal(at, POISON)


TINY = (
    "progress=false",
    "plot=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=2048",
    "train.num_logs=2",
    "runs.seeds=2",
)


def test_no_table_reports_a_return_for_a_diverged_run(tmp_path):
    """CartPole without mass (masspole -1 makes total_mass 0: NaN physics, which the config
    now refuses, so set here) in run 0: it diverges at update 0 and summary.md, runs.csv,
    the aggregates and the end-of-run warning say so; run 1's return stands alone."""
    raw = compose_raw(*TINY)
    prepared = prepare(parse_experiment(raw))
    bad = prepared.runs.env_params
    bad = bad.replace(
        masspole=np.array([-1.0, bad.masspole[1]], np.float32),
        total_mass=np.array([0.0, bad.total_mass[1]], np.float32),
    )
    prepared = dataclasses.replace(
        prepared, runs=dataclasses.replace(prepared.runs, env_params=bad)
    )
    result = execute(prepared)
    out = write_run_dir(tmp_path, prepared, result, raw)
    runs = pd.read_csv(out / "runs.csv")
    assert runs["diverged_at"].tolist() == [0, -1]
    summary = pd.read_csv(out / "summary.csv")
    assert summary["runs"].tolist() == [2] and summary["diverged"].tolist() == [1]
    healthy = result.metrics["episode_return"][1, -1]
    assert np.isfinite(healthy)
    np.testing.assert_allclose(summary["final_episode_return"], [healthy], rtol=1e-6)
    header = (out / "summary.md").read_text().splitlines()[0]
    assert [c.strip() for c in header.strip("|").split("|")][:3] == ["group", "runs", "diverged"]
    aggregates = pd.read_csv(out / "aggregates.csv")
    assert aggregates["runs"].tolist() == [1]  # the diverged run has no score
    assert divergence_warning(result.metrics) == (
        "warning: 1 of 2 runs diverged (a loss or parameter became NaN or inf: run 0 at "
        "update 0); they report no return from the log they diverged in on and count as "
        "'diverged' in summary.md (runs.csv: diverged_at)"
    )


def test_on_diverge_is_checked():
    with pytest.raises(ConfigError, match=r"runs\.on_diverge.*'halt'"):
        parse_experiment(compose_raw(*TINY, "runs.on_diverge=halt"))
    config = parse_experiment(compose_raw(*TINY, "runs.on_diverge=stop"))
    assert config.runs.on_diverge == "stop"


def _without_mass(prepared, runs):
    """The prepared batch with CartPole's pole massless in `runs` (total_mass 0: NaN physics)."""
    e = prepared.runs.env_params
    bad = np.isin(np.arange(len(prepared.runs)), runs)
    e = e.replace(
        masspole=np.where(bad, -1.0, e.masspole).astype(np.float32),
        total_mass=np.where(bad, 0.0, e.total_mass).astype(np.float32),
    )
    return dataclasses.replace(prepared, runs=dataclasses.replace(prepared.runs, env_params=e))


def test_transfer_reports_no_evaluation_of_a_diverged_fine_tuning_run(tmp_path, monkeypatch):
    """Fine-tuning run 0 diverges: its greedy evaluations (of a NaN network) and curve
    measures are NaN in transfer_runs.csv, and the per-target summary counts only run 1."""
    from research.pipelines import transfer

    real = transfer.prepare

    def prepare(config, *args, **kwargs):
        prepared = real(config, *args, **kwargs)
        return _without_mass(prepared, [0]) if kwargs.get("finetune") else prepared

    monkeypatch.setattr(transfer, "prepare", prepare)
    raw = compose_raw(
        *TINY,
        "train.total_timesteps=1024",
        "runs.seeds=1",
        "+transfer.source.total_timesteps=1024",
        "+transfer.source.seeds=2",
        "+transfer.evaluation.num_envs=2",
        "+transfer.evaluation.num_steps=64",
        "+transfer.scratch=false",
    )
    out = transfer.run_transfer(parse_experiment(raw), raw, tmp_path)
    runs = pd.read_csv(out / "transfer_runs.csv")
    assert runs["diverged_at"].tolist() == [0, -1]
    assert np.isnan(runs["initial_return"][0])
    for name in ("final_return", "auc", "source_return_after", "forgetting"):
        assert np.isnan(runs[name][0]) and np.isfinite(runs[name][1]), name
    assert np.isfinite(runs["source_return_before"]).all()  # the checkpoints are healthy
    summary = pd.read_csv(out / "transfer_summary.csv")
    np.testing.assert_allclose(summary["final_return"], runs["final_return"][1:], rtol=1e-6)
