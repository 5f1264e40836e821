"""Fine-tuning options, env shifts, transfer metrics and the transfer pipeline."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.analysis import transfer as tm
from research.config import ConfigError, FinetuneConfig, parse_experiment
from research.envs import interpolate, make_gymnax, variant_params
from research.extensions import l2_penalty
from research.pipelines.run import compare_runs, run, saved_config
from research.pipelines.train import prepare
from research.pipelines.transfer import run_transfer
from research.rl.optim import Optimizer, param_group
from research.runner import initial_agent_states, run_batch
from research.runner.evaluate import first_episode_returns
from tests.conftest import compose_raw, train
from tests.test_checkpoint import AGENTS, TINY, assert_trees_equal

# ------------------------------------------------------------------ fine-tuning options


def _groups(params):
    """group -> list of leaves, in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    out = {}
    for path, leaf in flat:
        out.setdefault(param_group(path), []).append(np.asarray(leaf))
    return out


def _equal(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module", params=["ppo", "dqn_replay"])
def pretrained(request):
    """(overrides, prepared, result) of 3 tiny pretrained runs."""
    overrides = (*TINY, *AGENTS[request.param])
    return (overrides, *train(*overrides))


def _finetuner(overrides, **options):
    config = parse_experiment(compose_raw(*overrides))
    return prepare(config, finetune=FinetuneConfig(**options), checkpoints=3)


def _start(prepared, loaded):
    init = jax.tree.map(lambda x: x[prepared.runs.checkpoint], loaded)
    return init, initial_agent_states(prepared.trainer, prepared.runs, init)


def test_load_all_adopts_params_and_restarts_counters(pretrained):
    overrides, _, result = pretrained
    for reset in (True, False):
        prepared = _finetuner(overrides, reset_optimizer=reset)
        init, start = _start(prepared, result.agent_states)
        assert_trees_equal(start.params, init.params)
        assert_trees_equal(start.opt_state.anchor, init.params)
        assert (np.asarray(start.num_updates) == 0).all()
        adam = start.opt_state.adam.inner_state[0]
        if reset:
            assert all((np.asarray(m) == 0).all() for m in jax.tree.leaves(adam.mu))
        else:
            assert_trees_equal(adam, init.opt_state.adam.inner_state[0])
        if getattr(start, "target_params", None) is not None:
            assert_trees_equal(start.target_params, init.params)
            assert (np.asarray(start.buffer.size) == 0).all()


def test_load_torso_reinitialises_exactly_the_heads(pretrained):
    overrides, _, result = pretrained
    prepared = _finetuner(overrides, load="torso")
    init, start = _start(prepared, result.agent_states)
    fresh = initial_agent_states(prepared.trainer, prepared.runs)
    got, loaded, new = _groups(start.params), _groups(init.params), _groups(fresh.params)
    assert _equal(got["torso"], loaded["torso"])
    assert _equal(got["head"], new["head"]) and not _equal(got["head"], loaded["head"])
    assert_trees_equal(start.opt_state.anchor, start.params)


def test_frozen_torso_stays_bit_equal_while_heads_learn(pretrained):
    overrides, _, result = pretrained
    prepared = _finetuner(overrides, freeze="torso", reset_optimizer=False)
    init = jax.tree.map(lambda x: x[prepared.runs.checkpoint], result.agent_states)
    runs = prepared.runs
    out = run_batch(prepared.trainer, runs.seeds, runs.hparams, runs.env_params, init)
    final, loaded = _groups(out.agent_states.params), _groups(init.params)
    assert _equal(final["torso"], loaded["torso"])
    assert not any(np.array_equal(a, b) for a, b in zip(final["head"], loaded["head"]))


def test_tabular_finetuning_loads_the_table_and_rewarms_epsilon():
    overrides = (
        *TINY,
        *AGENTS["q_learning"],
        "agent.epsilon_start=0.5",
        "agent.epsilon_end=0.0",
        "agent.epsilon_fraction=1.0",
    )
    resumed, result = train(*overrides)
    prepared = _finetuner(overrides)
    init, start = _start(prepared, result.agent_states)
    np.testing.assert_array_equal(start.q, init.q)
    assert (np.asarray(start.num_updates) == 0).all()
    runs = prepared.runs
    out = run_batch(prepared.trainer, runs.seeds, runs.hparams, runs.env_params, init)
    # Fine-tuning restarts the schedule (epsilon decays from 0.5 again, over the first half
    # of training it averages about 0.37); merely continuing training stays at epsilon_end.
    assert (out.metrics["epsilon"][:, 0] > 0.3).all(), out.metrics["epsilon"]
    runs = resumed.runs
    cont = run_batch(
        resumed.trainer, runs.seeds, runs.hparams, runs.env_params, result.agent_states
    )
    np.testing.assert_array_equal(cont.metrics["epsilon"], 0.0)


def test_optimizer_l2_pull_and_frozen_groups():
    params = {"torso": {"w": jnp.array([1.0, -2.0])}, "head": {"w": jnp.array([3.0])}}
    anchor = jax.tree.map(jnp.zeros_like, params)
    # The L2-to-init extension's loss term alone (the agent's own loss has zero gradient).
    l2_grads = lambda weight: jax.grad(l2_penalty)(params, anchor, weight)
    opt = Optimizer()
    state = opt.init(params).replace(anchor=anchor)
    same, _, norm = opt.step(state, params, l2_grads(0.0), 0.1, 1e9)
    assert_trees_equal(same, params) and float(norm) == 0.0
    pulled, _, norm = opt.step(state, params, l2_grads(2.0), 0.1, 1e9)
    # Adam's first step moves each coordinate by lr against the sign of its gradient.
    np.testing.assert_allclose(pulled["torso"]["w"], [0.9, -1.9], rtol=1e-5)
    np.testing.assert_allclose(pulled["head"]["w"], [2.9], rtol=1e-5)
    np.testing.assert_allclose(float(norm), 2.0 * np.sqrt(1 + 4 + 9), rtol=1e-6)
    frozen = Optimizer(frozen=("torso",))
    moved, _, norm = frozen.step(
        frozen.init(params).replace(anchor=anchor), params, l2_grads(2.0), 0.1, 1e9
    )
    assert_trees_equal(moved["torso"], params["torso"])
    np.testing.assert_allclose(moved["head"]["w"], [2.9], rtol=1e-5)
    np.testing.assert_allclose(float(norm), 6.0, rtol=1e-6)  # frozen grads do not count


def test_l2_init_keeps_finetuned_params_closer_to_the_checkpoint(pretrained):
    overrides, _, result = pretrained
    prepared = _finetuner((*overrides, "sweep.l2_init=[0.0,100.0]"))
    init = jax.tree.map(lambda x: x[prepared.runs.checkpoint], result.agent_states)
    runs = prepared.runs
    out = run_batch(prepared.trainer, runs.seeds, runs.hparams, runs.env_params, init)
    sq = jax.tree.map(
        lambda a, b: ((np.asarray(a) - np.asarray(b)) ** 2).reshape(len(a), -1).sum(1),
        out.agent_states.params,
        init.params,
    )
    distance = np.sqrt(sum(jax.tree.leaves(sq)))
    l2 = runs.table["l2_init"].to_numpy()
    assert distance[l2 > 0].max() < distance[l2 == 0].min(), distance


# ------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            (
                "agent=q_learning",
                "env=gridworld",
                "+transfer.source.total_timesteps=100",
                "+transfer.finetune.load=torso",
            ),
            "transfer.finetune.load: got 'torso'; agent 'q_learning' has a table",
        ),
        (
            ("+transfer.source.total_timesteps=10", "+transfer.finetune.freeze=head"),
            "transfer.finetune.freeze: got 'head'; must be one of 'none', 'torso'",
        ),
        (("+transfer.scratch=true",), "transfer.source: missing; give a source task"),
        (
            ("+transfer.source.total_timesteps=10", "+transfer.source.seeds=0"),
            "transfer.source.seeds: got 0",
        ),
        (
            ("+transfer.source.total_timesteps=10", "+transfer.evaluation.obs_noise=[-0.1]"),
            "transfer.evaluation.obs_noise[0]: got -0.1",
        ),
        (
            ("+transfer.source.total_timesteps=10", "+transfer.evaluation.episodes=3"),
            "transfer.evaluation.episodes: unknown field",
        ),
        (("+env.shift.at=0.5",), "env.shift.params: missing"),
        (("+env.shift.params.length=2", "+env.shift.at=1.5"), "env.shift.at: got 1.5"),
        (
            ("+env.shift.params.length=2", "+env.shift.at=0.5", "+env.shift.drift=0.6"),
            "env.shift.drift: got 0.6; must be a float with 0 <= x <= 0.5",
        ),
    ],
)
def test_transfer_and_shift_config_errors(overrides, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment(compose_raw(*overrides))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("+env.shift.params.lenght=2", "+env.shift.at=0.5"),
            "env.shift.params.lenght: not a field of CartPole-v1's EnvParams",
        ),
        (
            ("+env.shift.params.length=2", "+env.shift.at=0.01", "train.num_logs=10"),
            "env.shift.at: got 0.01; the change falls on a log boundary",
        ),
    ],
)
def test_shift_errors_that_need_the_env(overrides, message):
    with pytest.raises(ConfigError) as error:
        prepare(parse_experiment(compose_raw(*overrides)))
    assert message in str(error.value)


# ------------------------------------------------------------------ env shifts


def test_interpolate_recomputes_derived_fields():
    _, default = make_gymnax("CartPole-v1")
    before = variant_params("CartPole-v1", default, {"length": 0.5, "masspole": 0.1})
    after = variant_params(
        "CartPole-v1", default, {"length": 2.0, "masspole": 0.4, "max_steps_in_episode": 200}
    )
    half = interpolate("CartPole-v1", before, after, jnp.float32(0.5))
    np.testing.assert_allclose(
        [half.length, half.masspole, half.polemass_length, half.total_mass],
        [1.25, 0.25, 0.3125, 1.25],
        rtol=1e-6,
    )
    assert int(half.max_steps_in_episode) == 500  # integers switch at the end
    done = interpolate("CartPole-v1", before, after, jnp.float32(1.0))
    assert int(done.max_steps_in_episode) == 200
    np.testing.assert_allclose(float(done.polemass_length), 0.8, rtol=1e-6)


def test_a_step_change_takes_effect_at_its_log():
    """Gridworld episodes earn >= 0 before step_reward turns to -1, and < 0 after."""
    _, result = train(
        "progress=false",
        "agent=q_learning",
        "env=gridworld",
        "runs.seeds=2",
        "train.total_timesteps=20000",
        "train.num_logs=10",
        "+env.shift.params.step_reward=-1",
        "+env.shift.at=0.5",
    )
    returns = result.metrics["episode_return"]
    assert (returns[:, :5] >= 0).all() and (returns[:, 6:] < 0).all(), returns


# ------------------------------------------------------------------ metrics


def test_curve_metrics_against_hand_computed_values():
    curves = np.array([[np.nan, 10.0, 50.0, 100.0], [0.0, 20.0, 30.0, 40.0]])
    steps = np.array([100, 200, 300, 400])
    np.testing.assert_allclose(tm.area_under_curve(curves), [160 / 3, 22.5])
    np.testing.assert_array_equal(tm.time_to_threshold(curves, steps, 50.0), [300, np.inf])
    np.testing.assert_allclose(tm.transfer_ratio(np.array([30.0, -30.0]), -20.0), [2.5, -0.5])
    drop, recovery = tm.drop_and_recovery(
        np.array([[100.0, 100.0, 40.0, 80.0, 95.0], [10.0, 10.0, 0.0, 2.0, 5.0]]),
        np.array([1, 2, 3, 4, 5]),
        change_log=2,
    )
    np.testing.assert_allclose(drop, [60.0, 10.0])
    np.testing.assert_array_equal(recovery, [3.0, np.inf])  # 95 >= 100 - 10 at step 5


def test_first_episode_returns():
    done = jnp.array([[0, 0], [1, 0], [1, 0]], bool)
    ret = jnp.array([[0.0, 0.0], [3.0, 0.0], [7.0, 0.0]])
    out = np.asarray(first_episode_returns(done, ret))
    assert out[0] == 3.0 and np.isnan(out[1])


# ------------------------------------------------------------------ the pipeline

PIPELINE = (
    "progress=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=1024",
    "train.num_logs=2",
    "runs.seeds=2",
    "env.variants.length=[0.5,1.0]",
    "+transfer.source.total_timesteps=1024",
    "+transfer.source.variants.length=[0.5,0.75]",
    "+transfer.source.seeds=2",
    "+transfer.evaluation.num_envs=2",
    "+transfer.evaluation.num_steps=64",
    "+transfer.evaluation.obs_noise=[0.1]",
    "+transfer.evaluation.held_out.length=[2.0]",
    "+transfer.threshold=30",
    "sweep.l2_init=[0.0,1.0]",
)


def test_transfer_pipeline_writes_every_metric_and_reloads_its_checkpoint(tmp_path):
    raw = compose_raw(*PIPELINE)
    out = run_transfer(parse_experiment(raw), raw, tmp_path / "a")
    runs = pd.read_csv(out / "transfer_runs.csv")
    ft, sc = runs[runs.kind == "finetune"], runs[runs.kind == "scratch"]
    assert len(ft) == 4 * 2 * 2 * 2 and len(sc) == 2 * 2  # ckpts x targets x l2 x seeds
    assert set(ft["source.length"]) == {0.5, 0.75}  # 2 source variants x 2 seeds = 4 ckpts
    for col in (
        "initial_return",
        "final_return",
        "auc",
        "steps_to_threshold",
        "jumpstart",
        "transfer_ratio",
        "final_gain",
        "forgetting",
        "heldout[length=2]",
        "noise[0.1]",
    ):
        assert col in runs.columns, col
    np.testing.assert_allclose(ft.forgetting, ft.source_return_before - ft.source_return_after)
    scratch_initial = sc.groupby("env.length").initial_return.mean()
    np.testing.assert_allclose(
        ft.jumpstart, ft.initial_return - scratch_initial[ft["env.length"]].to_numpy()
    )
    summary = pd.read_csv(out / "transfer_summary.csv")
    assert set(summary.kind) == {"finetune", "scratch"} and len(summary) == 2 * 2 * 2 + 2
    for name in ("source", "checkpoint", "finetune", "scratch"):
        assert (out / name).is_dir()
    # Every sub-run reproduces alone from the config.yaml it keeps (finetune/ from the
    # saved checkpoint, into <out>/finetune).
    for name in ("source", "scratch", "finetune"):
        again = run(*saved_config(out / name), tmp_path / f"{name}_again")
        assert compare_runs(out / name, again) == [], name
    assert (out / "transfer_curves.png").stat().st_size > 0
    assert (out / "transfer_matrix.png").stat().st_size > 0
    # Fine-tuning again from the saved checkpoint: no pretraining, same checkpoint states.
    raw2 = compose_raw(
        *PIPELINE, f"+transfer.checkpoint={out / 'checkpoint'}", "+transfer.scratch=false"
    )
    out2 = run_transfer(parse_experiment(raw2), raw2, tmp_path / "b")
    assert not (out2 / "source").exists()
    again = pd.read_csv(out2 / "transfer_runs.csv")
    np.testing.assert_array_equal(again.initial_return, ft.initial_return)
    np.testing.assert_array_equal(again.source_return_before, ft.source_return_before)


@pytest.mark.slow
def test_finetuning_on_the_source_task_starts_at_the_checkpoints_return(tmp_path):
    raw = compose_raw(
        "progress=false",
        "plot=false",
        "train.total_timesteps=4096",
        "train.num_logs=2",
        "runs.seeds=4",
        "agent.lr=1e-5",
        "+transfer.source.total_timesteps=150000",
        "+transfer.source.seeds=2",
        "+transfer.evaluation.num_envs=64",
    )
    out = run_transfer(parse_experiment(raw), raw, tmp_path)
    runs = pd.read_csv(out / "transfer_runs.csv")
    ft, sc = runs[runs.kind == "finetune"], runs[runs.kind == "scratch"]
    before = ft.source_return_before.mean()
    assert before > 100, before  # the checkpoints learned something to transfer
    # Same task, same parameters: the fine-tuning start is the checkpoint's policy. Its
    # greedy return differs only by the evaluation episodes' start states (64 per run).
    np.testing.assert_allclose(ft.initial_return.mean(), before, rtol=0.1)
    assert ft.jumpstart.min() > 0 and ft.initial_return.mean() > 2 * sc.initial_return.mean()
