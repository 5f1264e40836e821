"""Methods against forgetting (research/extensions/keep.py): their maths on tiny inputs,
jitted and vmapped; the roll-in switch per env across auto-resets; weight 0 against plain
fine-tuning; config errors; the transfer pipeline with all of them on."""

from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.agents.base import Agent
from research.analysis.curves import diverged_at
from research.config import (
    WEIGHT_SCHEDULES,
    ConfigError,
    GuideHParams,
    WeightHParams,
    parse_experiment,
)
from research.envs import Env
from research.extensions.keep import (
    Gate,
    GuideRollIn,
    GuideState,
    clone_loss,
    divergence,
    ewc_penalty,
    fisher_diagonal,
    guide_horizon,
    roll_in,
    running_return,
    weight_at,
)
from research.pipelines.train import execute
from research.pipelines.transfer import plan, run_transfer
from research.rl.distributions import Categorical
from research.rl.rollout import reset_envs, rollout
from research.runner import take
from research.runner.extension import Step
from tests.conftest import compose_raw

# ------------------------------------------------------------------------ the maths


def test_divergence_is_the_kl_of_two_categoricals_and_a_q_regression():
    p0, p = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    got = jax.jit(divergence)(Categorical(jnp.log(p0)), Categorical(jnp.log(p)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    q0, q = jnp.array([[1.0, 2.0], [0.0, 0.0]]), jnp.array([[2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(divergence(q0, q), [0.5 * (1 + 4), 0.5 * 9])
    # vmapped over runs: each run its own pair
    batched = jax.vmap(divergence)(Categorical(jnp.log(jnp.stack([p0, p]))), Categorical(
        jnp.log(jnp.stack([p, p]))))  # fmt: skip
    np.testing.assert_allclose(batched, [expected, 0.0], atol=1e-7)


def test_clone_loss_is_the_negative_log_likelihood_of_the_stored_action():
    logits = jnp.log(jnp.array([[0.2, 0.8], [0.6, 0.4]]))
    got = clone_loss(Categorical(logits), jnp.array([1, 1]))
    np.testing.assert_allclose(got, [-np.log(0.8), -np.log(0.4)], rtol=1e-6)
    # Q-values: the cross-entropy of their softmax
    q = jnp.array([[0.0, np.log(3.0)]])
    np.testing.assert_allclose(clone_loss(q, jnp.array([0])), [-np.log(0.25)], rtol=1e-6)


def test_fisher_of_a_softmax_policy_is_p_times_one_minus_p_plus_the_critics():
    # pi(a | s) = softmax(theta) for every s; V(s) = 2 theta_0: F = p (1 - p) + [4, 0, 0]
    theta = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    heads = lambda params, obs: (
        Categorical(jnp.broadcast_to(params["t"], (obs.shape[0], 3))),
        jnp.broadcast_to(2.0 * params["t"][0], (obs.shape[0],)),
    )
    obs = jnp.zeros((24, 1))  # in chunks of 8: the largest size up to 16 dividing 24
    fisher = jax.jit(lambda p, k: fisher_diagonal(heads, p, obs, k))(
        {"t": theta}, jax.random.key(0)
    )
    p = np.array([0.2, 0.3, 0.5])
    np.testing.assert_allclose(fisher["t"], p * (1 - p) + np.array([4.0, 0, 0]), rtol=1e-5)
    # Q agents: the Fisher of softmax(Q), no critic term
    q_heads = lambda params, obs: (jnp.broadcast_to(params["t"], (obs.shape[0], 3)), None)
    fisher_q = fisher_diagonal(q_heads, {"t": theta}, obs, jax.random.key(0))
    np.testing.assert_allclose(fisher_q["t"], p * (1 - p), rtol=1e-5)


def test_ewc_penalty_and_the_weight_schedules_against_hand_computed_values():
    params, anchor = {"a": jnp.array([1.0, 2.0])}, {"a": jnp.array([0.0, 0.0])}
    fisher = {"a": jnp.array([3.0, 0.5])}
    np.testing.assert_allclose(ewc_penalty(params, anchor, fisher, 2.0), 0.5 * 2 * (3 + 2))
    h = WeightHParams(weight=2.0, schedule=1.0, anneal_fraction=0.5)  # linear to 0 at 0.5
    at = jax.jit(weight_at)
    np.testing.assert_allclose([at(h, 0.0), at(h, 0.25), at(h, 0.75)], [2.0, 1.0, 0.0])
    h = WeightHParams(weight=1.0, schedule=2.0, decay=2.0)  # exponential
    np.testing.assert_allclose(at(h, 0.5), np.exp(-1.0), rtol=1e-6)
    np.testing.assert_allclose(at(WeightHParams(weight=3.0), 0.9), 3.0)  # constant


def test_the_gated_weight_holds_only_below_the_checkpoints_return():
    """(R0 - R) / (margin |R0|) clipped to [0, 1]: R0 = 100, margin 0.1: full weight from
    R = 90 down, half at 95, none at or above 100; a negative R0 (-100) scales by |R0|:
    R = -105 is half; an unmeasured R (NaN: no episode ended) holds fully. Jitted and
    vmapped over runs."""
    gate = Gate(jnp.array([100.0, 100.0, 100.0, 100.0, 100.0, -100.0, 100.0]),
                jnp.array([80.0, 90.0, 95.0, 100.0, 120.0, -105.0, jnp.nan]))  # fmt: skip
    h = WeightHParams(weight=2.0, schedule=float(WEIGHT_SCHEDULES.index("gated")), margin=0.1)
    weights = jax.jit(jax.vmap(lambda g: weight_at(h, 0.5, g)))(gate)
    np.testing.assert_allclose(weights, [2.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0], rtol=1e-6)
    # Another schedule ignores the gate: constant stays 2.
    constant = weight_at(WeightHParams(weight=2.0), 0.5, Gate(1.0, 0.0))
    np.testing.assert_allclose(constant, 2.0)


def test_gated_methods_start_released_and_log_the_weight_in_force(keep_run):
    """From keep_run's checkpoint (the learner loads all of it): R equals R0 at the start
    (one evaluation key), so every gated weight of the first segment is exactly 0; later
    ones lie in [0, weight]; a constant run beside them logs its weight, 1."""
    raw = compose_raw(
        *SMALL,
        "plot=false",
        f"+transfer.checkpoint={keep_run['all'] / 'checkpoint'}",
        "search.kind=zip",
        "+transfer.distill.weight=[1.0,1.0]",
        "+transfer.distill.schedule=[constant,gated]",
        "+transfer.bc.weight=[0.0,2.0]",
        "+transfer.bc.schedule=gated",
        "+transfer.bc.batch_size=16",
        "+transfer.ewc.weight=[0.0,10.0]",
        "+transfer.ewc.schedule=gated",
        "+transfer.ewc.batch_size=16",
    )
    metrics, runs = _finetune_metrics(raw)
    gated = (runs["distill.schedule"] == "gated").to_numpy()
    distill, bc, ewc = (metrics[f"{m}_weight"] for m in ("distill", "bc", "ewc"))
    np.testing.assert_array_equal(distill[~gated], 1.0)
    for weight, top in ((distill, 1.0), (bc, 2.0), (ewc, 10.0)):
        np.testing.assert_array_equal(weight[gated, 0], 0.0)
        assert ((weight[gated] >= 0) & (weight[gated] <= top)).all(), weight
    assert not (diverged_at(metrics) >= 0).any()


Finished = namedtuple("Finished", "terminated truncated episode_return")


def test_running_return_takes_the_first_batch_then_steps_towards_each_batch():
    """Episodes ending at [t, n]: (0, 0) return 10 and (1, 1) return 20: the batch mean is
    15. From NaN: 15; from 5 at rate 0.1: 5 + 0.1 * (15 - 5) = 6; no episode: unchanged."""
    done = jnp.array([[True, False], [False, True]])
    batch = Finished(terminated=done, truncated=jnp.zeros_like(done),
                            episode_return=jnp.array([[10.0, 0.0], [0.0, 20.0]]))  # fmt: skip
    step = jax.jit(running_return)
    np.testing.assert_allclose(step(batch, jnp.nan, 0.1), 15.0)
    np.testing.assert_allclose(step(batch, 5.0, 0.1), 6.0)
    none = Finished(terminated=jnp.zeros_like(done), truncated=jnp.zeros_like(done),
                           episode_return=batch.episode_return)  # fmt: skip
    np.testing.assert_allclose(step(none, 5.0, 0.1), 5.0)
    assert jnp.isnan(step(none, jnp.nan, 0.1))


def test_guide_horizon_by_schedule_and_by_threshold_stages():
    h = GuideHParams(horizon=100.0, schedule=1.0, anneal_fraction=0.5)
    np.testing.assert_allclose(guide_horizon(h, 0.25, 0.0), 50.0)
    staged = GuideHParams(horizon=100.0, schedule=3.0, stages=4.0)
    np.testing.assert_allclose(
        jax.vmap(lambda s: guide_horizon(staged, 0.9, s))(jnp.arange(6.0)),
        [100, 75, 50, 25, 0, 0],
    )


def test_roll_in_picks_the_guide_below_the_horizon_per_env():
    guide, own = jnp.array([1, 1, 1]), jnp.array([0, 0, 0])
    np.testing.assert_array_equal(roll_in(guide, own, jnp.array([0, 4, 5]), 5.0), [1, 1, 0])
    continuous = roll_in(jnp.ones((2, 2)), jnp.zeros((2, 2)), jnp.array([0, 9]), 3.0)
    np.testing.assert_array_equal(continuous, [[1, 1], [0, 0]])


def _constant_agent():
    """An agent whose greedy action is its params' `a` (0 or 1) everywhere."""
    act = lambda state, obs, key, hparams, explore=True: (
        jnp.full(obs.shape[:1], state.params["a"], jnp.int32),
        {},
    )
    return Agent(None, act, None, None)


def test_guide_acts_the_first_h_steps_of_every_episode_across_auto_resets():
    from flax import struct

    @struct.dataclass
    class State:
        params: dict

    env = Env("CartPole-v1")
    agent, horizon = _constant_agent(), 7
    learner, guide = State({"a": jnp.int32(0)}), GuideState({"a": jnp.int32(1)}, 0.0, jnp.nan)
    step = Step(jnp.int32(0), 10, None, None, GuideHParams(horizon=float(horizon)),
                jax.random.key(0), learner)  # fmt: skip
    base = lambda obs, key, env_state: agent.act(learner, obs, key, None, True)

    @jax.jit
    def run(key):
        act = GuideRollIn(agent).act(base, guide, step)
        obs, env_state = reset_envs(env, key, env.default_params, 4)
        return rollout(env, act, env.default_params, env_state, obs, key, 200)[1]

    batch = run(jax.random.key(1))
    done = np.asarray(batch.terminated | batch.truncated)
    assert done.sum(0).min() >= 2  # every env went through auto-resets
    # episode_length counts the step itself: the guide acted where fewer than h came before
    expected = (np.asarray(batch.episode_length) - 1 < horizon).astype(int)
    np.testing.assert_array_equal(np.asarray(batch.action), expected)


# ----------------------------------------------------------------- in the pipeline

SMALL = (
    "progress=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=1024",
    "train.num_logs=4",
    "runs.seeds=2",
    "checkpoint_states=64",
    "env.variants.length=[1.0]",
    "+transfer.source.total_timesteps=1024",
    "+transfer.source.seeds=2",
    "+transfer.evaluation.num_envs=2",
    "+transfer.evaluation.num_steps=500",  # every greedy episode ends: no NaN returns
    "+transfer.scratch=false",
)


@pytest.fixture(scope="module")
def keep_run(tmp_path_factory):
    """Tiny transfers: "all", the run directory of every method on (the distillation weight
    swept with 0) with the forgetting measures; from its checkpoint, the fine-tuning
    metrics of no method ("plain") and of every method at strength 0 ("zero")."""
    tmp = tmp_path_factory.mktemp("keep")
    raw = compose_raw(
        *SMALL,
        "plot=true",
        "+transfer.distill.weight=[0.0,1.0]",
        "+transfer.bc.weight=1.0",
        "+transfer.bc.batch_size=16",
        "+transfer.ewc.weight=10.0",
        "+transfer.ewc.batch_size=32",
        "+transfer.guide.horizon=20",
        "+transfer.guide.schedule=linear",
        "+transfer.forgetting.every=2",
        "+transfer.forgetting.num_envs=2",
        "+transfer.evaluation.held_out.length=[0.75,1.5]",
    )
    out = run_transfer(parse_experiment(raw), raw, tmp / "all")
    ckpt = f"+transfer.checkpoint={out / 'checkpoint'}"
    plain = compose_raw(*SMALL, "plot=false", ckpt)
    zero = compose_raw(
        *SMALL,
        "plot=false",
        ckpt,
        "+transfer.distill.weight=0.0",
        "+transfer.bc.weight=0.0",
        "+transfer.ewc.weight=0.0",
        "+transfer.guide.horizon=0",
        "+transfer.forgetting.every=1",
    )
    return {"all": out, "plain": _finetune_metrics(plain)[0], "zero": _finetune_metrics(zero)[0]}


def _finetune_metrics(raw: dict) -> tuple[dict, pd.DataFrame]:
    """(metrics, runs table) of the fine-tuning phase of a transfer from a saved checkpoint,
    as run_transfer runs it (its evaluations left out: they compile programs these tests
    do not read)."""
    p = plan(parse_experiment(raw), raw)
    result = execute(p.finetune, take(p.loaded, p.finetune.runs.checkpoint))
    return result.metrics, p.finetune.runs.table


def test_every_method_trains_in_one_program_and_logs_the_forgetting_curve(keep_run):
    out = keep_run["all"]
    with np.load(out / "checkpoint" / "states.npz", allow_pickle=False) as data:
        assert data["obs"].shape == (2, 64, 4) and data["action"].shape == (2, 64)
    metrics = np.load(out / "finetune" / "metrics.npz")
    names = (
        "source_return",
        "source_kl",
        "source_return_start",
        "guide_horizon",
        "held_out_return",
    )
    for name in names:
        assert name in metrics.files, name
    ret, kl = metrics["source_return"], metrics["source_kl"]  # [R, num_logs]
    assert ret.shape == (2 * 2 * 2, 4)  # checkpoints x distill weights x seeds
    # measured every 2 segments: after segments 2 and 4, NaN after 1 and 3
    assert np.isnan(ret[:, [0, 2]]).all() and np.isfinite(ret[:, [1, 3]]).all()
    # the held-out variants (the mean over both) are measured on the same segments
    held = metrics["held_out_return"]
    assert np.isnan(held[:, [0, 2]]).all() and np.isfinite(held[:, [1, 3]]).all()
    assert ((held[:, [1, 3]] >= 1) & (held[:, [1, 3]] <= 500)).all()
    assert (kl[:, 3] >= 0).all() and (kl[:, 3] > 0).any()
    # the linear curriculum shortens the roll-in over training
    horizon = metrics["guide_horizon"]
    assert (np.diff(horizon, axis=1) < 0).all() and horizon[:, 0].max() <= 20
    runs = pd.read_csv(out / "finetune" / "runs.csv")
    assert set(runs["distill.weight"]) == {0.0, 1.0}
    # the transfer table: retained = source return at the end / at the start
    table = pd.read_csv(out / "transfer_runs.csv")
    ft = table[table.kind == "finetune"]
    start = metrics["source_return_start"][:, 0]
    np.testing.assert_allclose(ft.retained, ret[:, -1] / start, rtol=1e-6)  # returns > 0
    np.testing.assert_allclose(ft.source_auc, np.nanmean(ret, axis=1))
    assert "retained" in pd.read_csv(out / "transfer_summary.csv").columns
    assert (out / "forgetting_curves.png").stat().st_size > 0
    # methods.md: one row per target and method label, the strengths that are not 0
    methods = pd.read_csv(out / "methods.csv")
    labels = {group.split("method=")[1] for group in methods.group}
    assert labels == {"distill=1+bc=1+ewc=10+guide=20", "bc=1+ewc=10+guide=20"}


def test_every_method_at_strength_zero_is_plain_finetuning_bit_for_bit(keep_run):
    plain, zero = keep_run["plain"], keep_run["zero"]
    assert set(plain) < set(zero)
    for name in plain:
        np.testing.assert_array_equal(zero[name], plain[name], err_msg=name)
    # strength 0 still measures: the first source return is the checkpoint's
    np.testing.assert_array_equal(
        zero["source_return_start"][:, 0], zero["source_return_start"][:, -1]
    )


def test_config_errors_of_the_methods():
    cases = [
        (("+transfer.distill.weight=-1",), "transfer.distill.weight: got -1"),
        (("+transfer.distill.schedule=cosine",), "transfer.distill.schedule[0]: got 'cosine'"),
        (("+transfer.bc.batch_size=0",), "transfer.bc.batch_size: got 0"),
        (("+transfer.distill.batch_size=4",), "transfer.distill.batch_size: unknown field"),
        (("+transfer.guide.stages=0.5",), "transfer.guide.stages: got 0.5"),
        (("+transfer.distill.margin=0",), "transfer.distill.margin: got 0"),
        (("+transfer.ewc.margin=-0.5",), "transfer.ewc.margin: got -0.5"),
        (("+transfer.forgetting.every=0",), "transfer.forgetting.every: got 0"),
        (("checkpoint_states=-1",), "checkpoint_states: got -1"),
    ]
    for overrides, message in cases:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse_experiment(compose_raw(*SMALL, *overrides))
    tabular = ("agent=q_learning", "env=gridworld", "+transfer.distill.weight=1.0")
    with pytest.raises(ConfigError, match="transfer.distill: set for agent 'q_learning'"):
        parse_experiment(compose_raw(*SMALL[:1], "+transfer.source.total_timesteps=1024",
                                     *tabular))  # fmt: skip


def test_zip_pairs_the_ith_values_of_every_list_one_method_per_point():
    zip_raw = compose_raw(
        *SMALL,
        "search.kind=zip",
        "sweep.l2_init=[0.0,1.0,0.0,0.0]",
        "+transfer.distill.weight=[0.0,0.0,0.5,0.0]",
        "+transfer.guide.horizon=[0,0,0,30]",
    )
    config = parse_experiment(zip_raw)
    runs = plan(config, zip_raw).finetune.runs.table
    assert len(runs) == 2 * 4 * 2  # checkpoints x points x seeds, not crossed
    points = runs[["l2_init", "distill.weight", "guide.horizon"]].drop_duplicates()
    np.testing.assert_array_equal(
        points.to_numpy(), [[0, 0, 0], [1, 0, 0], [0, 0.5, 0], [0, 0, 30]]
    )
    bad = compose_raw(*SMALL, "search.kind=zip", "sweep.l2_init=[0.0,1.0]",
                      "+transfer.distill.weight=[0.0,0.0,0.5]")  # fmt: skip
    with pytest.raises(ConfigError, match=r"transfer.distill.weight: got 3 values; search.kind"):
        parse_experiment(bad)


def test_a_checkpoint_without_or_with_damaged_source_states_is_one_clear_error(keep_run, tmp_path):
    import shutil

    from research.errors import InputError

    ckpt = tmp_path / "checkpoint"
    shutil.copytree(keep_run["all"] / "checkpoint", ckpt)
    raw = compose_raw(*SMALL, f"+transfer.checkpoint={ckpt}", "+transfer.bc.weight=1.0")
    states = ckpt / "states.npz"
    states.write_bytes(states.read_bytes()[:100])
    with pytest.raises(InputError, match=r"states.npz: damaged or not source states"):
        plan(parse_experiment(raw), raw)
    states.unlink()
    with pytest.raises(ConfigError, match=r"transfer.checkpoint: .* has no states.npz"):
        plan(parse_experiment(raw), raw)
    many = compose_raw(*SMALL[:6], "checkpoint_states=128", *SMALL[7:],
                       f"+transfer.checkpoint={keep_run['all'] / 'checkpoint'}",
                       "+transfer.ewc.weight=1.0")  # fmt: skip
    with pytest.raises(ConfigError, match=r"checkpoint_states: got 128; .* holds 64 states"):
        plan(parse_experiment(many), many)


# --------------------------------------------------------------- what the methods do


def _final_by_method(out):
    table = pd.read_csv(out / "transfer_runs.csv")
    ft = table[table.kind == "finetune"]
    return ft.groupby("method").final_return, ft.initial_return.mean()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gated_distillation_keeps_a_checkpoint_vanilla_forgets_and_learns_where_l2_cannot(
    tmp_path,
):
    """2 checkpoints x 2 seeds (results/forgetting measured 3). On the long pole the
    checkpoint's greedy return survives fine-tuning with distillation (constant weight 1,
    and gated weight 3) and falls without it. On reversed actions the same gated
    distillation learns far above the checkpoint, as does EWC (10), while L2-to-init (10)
    stays at it: the gate lets go where the learner beats the checkpoint. (Measured, 3 seeds: long
    pole, checkpoint 252 -> distill 1 425, gated 296, vanilla 127; reversed, checkpoint 9.2
    -> gated 60 (46-84), EWC 320, L2 9.2.)"""
    from research.analysis.stats import bootstrap_mean_ci

    common = (
        "progress=false",
        "plot=false",
        "runs.seeds=2",
        "train.total_timesteps=100000",
        "train.num_logs=10",
        "search.kind=zip",
        "+transfer.scratch=false",
        "+transfer.evaluation.num_envs=8",
    )
    long_pole = compose_raw(
        *common,
        "env.params.length=3.0",
        "+transfer.source.total_timesteps=300000",
        "+transfer.source.seeds=2",
        "+transfer.distill.weight=[0.0,1.0,3.0]",
        "+transfer.distill.schedule=[constant,constant,gated]",
    )
    out = run_transfer(parse_experiment(long_pole), long_pole, tmp_path / "long")
    finals, initial = _final_by_method(out)
    vanilla = finals.get_group("vanilla")
    for kept in ("distill=1", "distill=3 gated"):
        assert finals.get_group(kept).mean() >= 0.95 * initial, (kept, finals.mean(), initial)
    assert bootstrap_mean_ci(vanilla.to_numpy())[2] < initial, (vanilla.tolist(), initial)
    reversed_force = compose_raw(
        *common,
        "env.params.force_mag=-10.0",
        f"+transfer.checkpoint={out / 'checkpoint'}",
        "sweep.l2_init=[0.0,10.0,0.0]",
        "+transfer.ewc.weight=[10.0,0.0,0.0]",
        "+transfer.distill.weight=[0.0,0.0,3.0]",
        "+transfer.distill.schedule=[constant,constant,gated]",
    )
    out = run_transfer(parse_experiment(reversed_force), reversed_force, tmp_path / "reversed")
    finals, initial = _final_by_method(out)
    assert finals.get_group("distill=3 gated").min() > initial + 30, (finals.min(), initial)
    assert finals.get_group("ewc=10").mean() > initial + 100, (finals.mean(), initial)
    assert finals.get_group("l2_init=10").mean() < initial + 10, (finals.mean(), initial)
