"""Plasticity in the loop (research/extensions/plasticity.py, env_schedule.py): each
intervention changes exactly what it should at the right updates, off is bit for bit the
plain run, the diagnostics equal the library functions applied by hand to the saved state,
the env schedule switches at the right updates; all jitted and vmapped, as the loop is."""

from dataclasses import dataclass
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.config import ConfigError, parse_experiment
from research.extensions.env_schedule import phase_at
from research.pipelines.train import (
    last_measured,
    phase_spans,
    prepare,
    run_experiment,
    uses_weight_decay,
    write_phases,
)
from research.rl import diagnostics as dg
from research.rl.networks import ActorCritic
from research.rl.optim import Optimizer
from research.rl.plasticity import adam_moments
from research.runner import Extension, make_train, split_params
from tests.conftest import compose_raw

TINY = (
    "progress=false",
    "plot=false",
    "agent=ppo",
    "agent.num_envs=4",
    "agent.num_steps=16",
    "agent.num_minibatches=2",
    "agent.num_epochs=1",
    "agent.hidden_sizes=[16,16]",
    "agent.activation=relu",  # dead units exist (tanh units are never exactly 0)
    "runs.seeds=1",
)
HIDDEN = (16, 16)


def bits(x):
    x = np.asarray(x)
    return x.view(np.uint32) if x.dtype == np.float32 else x


def assert_bit_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(bits(x), bits(y))


def run_of(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def config(*overrides):
    return parse_experiment(compose_raw(*TINY, *overrides))


# --------------------------------------------------------------- interventions in the loop

# 4 runs in one program (search.kind zip): 0 every intervention off, 1 ReDo, 2 S&P,
# 3 a reset of the heads; each intervention every 2 updates; one update per segment, so
# each segment's state can be compared with the plain loop's update from the same state.
INTERVENTIONS = (
    "train.total_timesteps=256",
    "train.num_logs=4",
    "search.kind=zip",
    "+plasticity.diagnostics.every=2",
    "+plasticity.diagnostics.probe_size=32",
    "+plasticity.redo.every=2",
    "+plasticity.redo.tau=[-1,0.6,-1,-1]",
    "+plasticity.shrink_perturb.every=2",
    "+plasticity.shrink_perturb.alpha=[1,1,0.5,1]",
    "+plasticity.shrink_perturb.sigma=[0,0,0.3,0]",
    "+plasticity.reset.every=2",
    "+plasticity.reset.enabled=[false,false,false,true]",
)


@pytest.fixture(scope="module")
def trajectory():
    """Per segment: (runner before, runner after, metrics, the plain loop's runner after one
    update from `before`), every leaf [4, ...]."""
    prepared = prepare(config(*INTERVENTIONS))
    trainer, runs = prepared.trainer, prepared.runs
    assert [e.name for e in trainer.extensions] == [
        "diagnostics", "redo", "shrink_perturb", "reset",
    ]  # fmt: skip
    plain = make_train(prepared.agent, prepared.env, 4, 16, prepared.num_updates, 4)
    seg = lambda t: jax.jit(jax.vmap(t.segment, in_axes=(0, 0, 0, None)))
    segment, plain_segment = seg(trainer), seg(plain)
    hparams, env_params = runs.hparams, runs.env_params
    runner = jax.jit(jax.vmap(trainer.init))(
        jax.vmap(jax.random.key)(runs.seeds), hparams, env_params
    )
    steps = []
    for i in range(4):
        after, metrics = segment(runner, hparams, env_params, i)
        want, _ = plain_segment(runner.replace(ext=()), hparams, split_params(env_params)[0], i)
        steps.append((runner, after, metrics, want))
        runner = after
    return prepared, steps


def ext_state(prepared, runner, name):
    names = [e.name for e in prepared.trainer.extensions]
    return runner.ext[names.index(name)]


def test_off_runs_and_updates_without_an_intervention_are_bit_for_bit_the_plain_loop(
    trajectory,
):
    _, steps = trajectory
    for i, (_, after, _, want) in enumerate(steps):
        # Run 0 has every intervention off (and the diagnostics on), in every segment.
        assert_bit_equal(run_of(after.agent_state, 0), run_of(want.agent_state, 0))
        if i % 2 == 0:  # updates 1 and 3 (1-based) are no intervention's
            assert_bit_equal(after.agent_state, want.agent_state)


def layer_paths(torso):
    return [("params", torso, f"Dense_{k}") for k in range(len(HIDDEN))]


def get(tree, path):
    for key in path:
        tree = tree[key]
    return np.asarray(tree)


def np_tree(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def test_redo_recycles_exactly_the_dormant_units_at_every_second_update(trajectory):
    """Expected by hand from the plain update: for each tau-dormant unit (masks from the
    library on the saved probe), fresh incoming weights (bias 0), zero outgoing weights, zero
    Adam mu and nu at both; every other entry the plain update's bits."""
    prepared, steps = trajectory
    agent, recycled = prepared.agent, 0
    net = ActorCritic(prepared.env.spec, HIDDEN, "relu")
    for i, (_, after, metrics, want) in enumerate(steps):
        if i % 2 == 0:
            assert float(metrics["redo_units"][1]) == 0
            continue
        got, plain = run_of(after.agent_state, 1), run_of(want.agent_state, 1)
        probe = run_of(ext_state(prepared, after, "redo")[0], 1)
        seen = agent.observe(plain, probe)
        params = np_tree(plain.params)["params"]
        moments = adam_moments(plain.opt_state)
        mu, nu = np_tree(moments.mu)["params"], np_tree(moments.nu)["params"]
        fresh = np_tree(got.params)["params"]
        units = 0
        for torso in ("actor_torso", "critic_torso"):
            hs = dg.hidden_activations(net, plain.params, seen, torso)
            masks = [np.asarray(dg.dormant_mask(h, 0.6)) for h in hs]
            units += sum(int(m.sum()) for m in masks)
            names = [f"Dense_{k}" for k in range(len(HIDDEN))]
            outgoing = [params[torso][n] for n in names[1:]] + [
                params[torso.replace("torso", "head")]
            ]
            out_moments = [(mu[torso][n], nu[torso][n]) for n in names[1:]]
            head = torso.replace("torso", "head")
            out_moments.append((mu[head], nu[head]))
            rows = None  # inputs of the layer not zeroed as a dormant unit's outgoing weights
            for name, mask, out, out_m in zip(names, masks, outgoing, out_moments):
                layer = params[torso][name]
                rows = slice(None) if rows is None else ~rows
                new_in = fresh[torso][name]["kernel"][rows][:, mask]
                assert np.all(new_in != layer["kernel"][rows][:, mask])  # really fresh
                rows = mask
                layer["kernel"][:, mask] = fresh[torso][name]["kernel"][:, mask]
                layer["bias"][mask] = 0.0
                for m in (mu, nu):
                    m[torso][name]["kernel"][:, mask] = 0.0
                    m[torso][name]["bias"][mask] = 0.0
                out["kernel"][mask] = 0.0
                for m in out_m:
                    m["kernel"][mask] = 0.0
        assert 0 < units < 4 * 16, "the test needs some dormant units and some live ones"
        assert_bit_equal(got.params["params"], params)
        assert_bit_equal(adam_moments(got.opt_state).mu["params"], mu)
        assert_bit_equal(adam_moments(got.opt_state).nu["params"], nu)
        assert float(metrics["redo_units"][1]) == units
        recycled += units
    assert recycled > 0


def orthonormal_scale(kernel):
    """The scale c of a kernel c * Q with orthonormal columns (or rows); asserts it is one."""
    k = kernel if kernel.shape[0] >= kernel.shape[1] else kernel.T
    gram = k.T @ k
    c2 = np.mean(np.diag(gram))
    np.testing.assert_allclose(gram, c2 * np.eye(len(gram)), atol=1e-4 * max(c2, 1e-4))
    return float(np.sqrt(c2))


def test_shrink_perturb_is_the_formula_towards_a_fresh_init_every_second_update(trajectory):
    _, steps = trajectory
    for i, (_, after, _, want) in enumerate(steps):
        got, plain = run_of(after.agent_state, 2), run_of(want.agent_state, 2)
        if i % 2 == 0:
            assert_bit_equal(got, plain)
            continue
        assert_bit_equal(got.opt_state, plain.opt_state)  # Ash & Adams keep the optimiser
        dense = [
            ("params", t, f"Dense_{k}") for t in ("actor_torso", "critic_torso") for k in (0, 1)
        ]
        for path in dense + [("params", "actor_head"), ("params", "critic_head")]:
            # fresh biases are 0: alpha * b + sigma * 0, exactly
            np.testing.assert_array_equal(
                bits(get(got.params, (*path, "bias"))),
                bits(0.5 * get(plain.params, (*path, "bias"))),
            )
            noise = (
                get(got.params, (*path, "kernel")) - 0.5 * get(plain.params, (*path, "kernel"))
            ) / 0.3
            scale = {"actor_head": 0.01, "critic_head": 1.0}.get(path[1], np.sqrt(2.0))
            assert orthonormal_scale(noise) == pytest.approx(scale, rel=1e-3)


def test_a_reset_re_initialises_only_the_heads_and_their_moments(trajectory):
    _, steps = trajectory
    for i, (_, after, _, want) in enumerate(steps):
        got, plain = run_of(after.agent_state, 3), run_of(want.agent_state, 3)
        if i % 2 == 0:
            assert_bit_equal(got, plain)
            continue
        for torso in ("actor_torso", "critic_torso"):
            assert_bit_equal(got.params["params"][torso], plain.params["params"][torso])
            mu = adam_moments(got.opt_state).mu["params"]
            assert_bit_equal(mu[torso], adam_moments(plain.opt_state).mu["params"][torso])
        for head, scale in (("actor_head", 0.01), ("critic_head", 1.0)):
            kernel = get(got.params, ("params", head, "kernel"))
            assert orthonormal_scale(kernel) == pytest.approx(scale, rel=1e-3)
            np.testing.assert_array_equal(get(got.params, ("params", head, "bias")), 0.0)
            moments = adam_moments(got.opt_state)
            for tree in (moments.mu, moments.nu):
                for leaf in jax.tree.leaves(tree["params"][head]):
                    np.testing.assert_array_equal(np.asarray(leaf), 0.0)
        assert int(adam_moments(got.opt_state).count) == int(adam_moments(plain.opt_state).count)


def test_diagnostics_in_the_loop_equal_the_library_functions_on_the_saved_state(trajectory):
    prepared, steps = trajectory
    agent = prepared.agent
    net = ActorCritic(prepared.env.spec, HIDDEN, "relu")

    @jax.jit  # one program for every run and segment (eagerly, each call compiled anew)
    def library_row(state, probe, old, new):
        seen = agent.observe(state, probe)
        row = {}
        for torso, prefix in (("actor_torso", ""), ("critic_torso", "critic_")):
            hs = dg.hidden_activations(net, state.params, seen, torso)
            for tau in (0.0, 0.025):
                for layer, h in enumerate(hs):
                    row[f"{prefix}dormant_{tau:g}[{layer}]"] = dg.dormant_fraction(h, tau)
            row[f"{prefix}feature_erank"] = dg.effective_rank(hs[-1])
            row[f"{prefix}feature_srank"] = dg.srank(hs[-1], 0.01)
        row["param_norm"] = dg.param_norm(state.params)
        row["param_distance"] = dg.param_distance(state.params, state.opt_state.anchor)
        # churn: the segment's update alone (before any intervention), on its states
        old_seen = agent.observe(old, probe)
        row["churn"] = dg.policy_kl(
            agent.heads(old.params, old_seen)[0], agent.heads(new.params, old_seen)[0]
        )
        return row

    for i, (before, after, metrics, want) in enumerate(steps):
        measured = i in (1, 3)  # every 2 segments; the last is the 4th
        assert np.isnan(np.asarray(metrics["feature_erank"])).all() != measured
        if not measured:
            for name in ("dormant_0[0]", "critic_dormant_0.025[1]", "churn", "param_norm"):
                assert np.isnan(np.asarray(metrics[name])).all()
            continue
        for r in range(4):
            want_row = library_row(
                run_of(after.agent_state, r),
                run_of(ext_state(prepared, after, "diagnostics").probe, r),
                run_of(before.agent_state, r),
                run_of(want.agent_state, r),
            )
            for name, value in want_row.items():
                # The effective rank counts singular values near float32's resolution of the
                # largest (dg.singular_values), so another program's rounding moves it more.
                rtol = 1e-3 if name.endswith("erank") else 1e-5
                np.testing.assert_allclose(
                    float(metrics[name][r]), float(value), rtol=rtol, atol=1e-7, err_msg=name
                )
        assert float(metrics["param_distance"][0]) > 0
        assert np.isfinite(np.asarray(metrics["churn"])).all()


def test_diagnostics_probe_is_spread_over_the_latest_rollout(trajectory):
    prepared, steps = trajectory
    _, after, _, _ = steps[-1]
    probe = np.asarray(ext_state(prepared, after, "diagnostics").probe)
    assert probe.shape == (4, 32, 4)
    assert len(np.unique(probe[0], axis=0)) > 16  # not one env's first steps repeated


# ----------------------------------------------------------------- plugging and off values


@pytest.mark.parametrize(
    "overrides, plugged",
    [
        (("+plasticity.redo.tau=-1",), []),
        (("+plasticity.redo.tau=[-1,0.1]",), ["redo"]),
        (("+plasticity.shrink_perturb.alpha=1", "+plasticity.shrink_perturb.sigma=0"), []),
        (
            ("+plasticity.shrink_perturb.alpha=1", "+plasticity.shrink_perturb.sigma=[0,0.1]"),
            ["shrink_perturb"],
        ),  # fmt: skip
        (("+plasticity.reset.enabled=false",), []),
        (("+plasticity.reset.enabled=[false,true]",), ["reset"]),
        (("+plasticity.diagnostics=false",), []),
        (("+plasticity.diagnostics=true",), ["diagnostics"]),
    ],
)
def test_an_intervention_is_plugged_only_when_some_run_can_use_it(overrides, plugged):
    # 200 updates (prepare compiles nothing): each intervention's default `every` fits.
    prepared = prepare(config("train.total_timesteps=12800", "train.num_logs=4", *overrides))
    assert [e.name for e in prepared.trainer.extensions] == plugged


def test_weight_decay_off_is_the_plain_optimiser_and_on_is_decoupled():
    params = {"w": jnp.array([1.0, -2.0, -0.0, 3.0])}
    grads = {"w": jnp.array([0.5, 0.1, -0.2, 0.0])}
    plain, decayed = Optimizer(), Optimizer(decay=True)
    p0, _, _ = plain.step(plain.init(params), params, grads, 1e-2, 1.0)
    step = jax.jit(jax.vmap(decayed.step, in_axes=(None, None, None, None, None, 0)))
    p1, _, _ = step(decayed.init(params), params, grads, 1e-2, 1.0, jnp.array([0.0, 0.5]))
    assert_bit_equal(run_of(p1, 0), p0)  # wd = 0 beside a decaying run: the same bits
    np.testing.assert_allclose(run_of(p1, 1)["w"], p0["w"] - 1e-2 * 0.5 * params["w"], rtol=1e-6)
    short = ("train.total_timesteps=256", "train.num_logs=4")
    assert not uses_weight_decay(config(*short))
    assert uses_weight_decay(config(*short, "sweep.weight_decay=[0,0.1]"))
    assert uses_weight_decay(config(*short, "agent.weight_decay=0.1"))


def test_layer_norm_puts_a_layer_norm_in_both_torsos_of_ppo_and_reinforce():
    for agent in ("ppo", "reinforce"):
        raw = compose_raw(f"agent={agent}", "agent.layer_norm=true", "agent.num_envs=4",
                          "agent.num_steps=16", "train.num_logs=2")  # fmt: skip
        prepared = prepare(parse_experiment(raw))
        state = prepared.agent.init(jax.random.key(0), prepared.config.agent.hparams)
        for torso in ("actor_torso", "critic_torso"):
            assert sorted(state.params["params"][torso]) == [
                "Dense_0", "Dense_1", "LayerNorm_0", "LayerNorm_1",
            ]  # fmt: skip


# ------------------------------------------------------------------------- env schedule


def test_phase_at_holds_the_last_phase_or_cycles():
    updates = jnp.arange(10)
    np.testing.assert_array_equal(phase_at(updates, 3, 3, False), [0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(phase_at(updates, 2, 3, True), [0, 0, 1, 1, 2, 2, 0, 0, 1, 1])


@dataclass(frozen=True)
class RecordEnv(Extension):
    """Logs the named EnvParams fields of each update's rollout (one update per segment)."""

    fields: tuple = ("length", "total_mass")
    name: str = "record"

    def on_batch(self, batch, state, step):
        return batch, state, {f: getattr(step.env_params, f) for f in self.fields}


def test_the_schedule_switches_at_the_right_updates_per_run_variant():
    prepared = prepare(
        config(
            "train.total_timesteps=512",  # 8 updates, one per segment
            "train.num_logs=8",
            "env.variants.masscart=[1.0,2.0]",
            "+env.schedule.params=[{},{length:2.0},{length:0.25,masscart:3.0}]",
            "+env.schedule.every=3",
        )
    )
    assert prepared.schedule == 3
    runs = prepared.runs
    trainer = make_train(
        prepared.agent, prepared.env, 4, 16, prepared.num_updates, 8,
        prepared.trainer.extensions + (RecordEnv(),),
    )  # fmt: skip
    train = jax.jit(jax.vmap(trainer.train))
    _, metrics = train(jax.vmap(jax.random.key)(runs.seeds), runs.hparams, runs.env_params)
    want_length = [0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 0.25, 0.25]
    for r, masscart in enumerate([1.0, 2.0]):
        np.testing.assert_allclose(metrics["length"][r], want_length)
        masses = [masscart] * 6 + [3.0] * 2
        np.testing.assert_allclose(metrics["total_mass"][r], np.add(masses, 0.1), rtol=1e-6)
        np.testing.assert_array_equal(metrics["env_phase"][r], [0, 0, 0, 1, 1, 1, 2, 2])


# Acrobot and the arm (issue 22 item 3): per env, a field varied across runs and three
# phases over it. No diagnostics and one minibatch: compiling is this test's time.
SCHEDULES = [
    (
        "acrobot",
        ("link_mass_1", [1.0, 2.0]),
        [{}, {"link_mass_2": 3.0}, {"link_length_1": 0.5, "link_mass_1": 0.5}],
    ),
    (
        "arm_reach",
        ("friction", [0.1, 0.3]),
        [{}, {"link_length_1": 0.3, "link_length_2": 0.7}, {"tolerance": 0.03, "friction": 0.5}],
    ),
]


@pytest.mark.parametrize("env, variant, schedule", SCHEDULES, ids=[s[0] for s in SCHEDULES])
def test_the_schedule_switches_acrobot_and_arm_params_with_per_phase_metrics(
    env, variant, schedule, tmp_path
):
    field, values = variant
    phases = ",".join("{" + ",".join(f"{k}:{v}" for k, v in p.items()) + "}" for p in schedule)
    prepared = prepare(
        config(
            f"env={env}",
            "env.params.max_steps_in_episode=16",  # an episode ends in every rollout
            "train.total_timesteps=512",  # 8 updates, one per segment
            "train.num_logs=8",
            "agent.num_minibatches=1",
            f"env.variants.{field}=[{','.join(map(str, values))}]",
            f"+env.schedule.params=[{phases}]",
            "+env.schedule.every=3",
        )
    )
    fields = tuple(sorted({field}.union(*schedule)))
    runs = prepared.runs
    trainer = make_train(
        prepared.agent, prepared.env, 4, 16, prepared.num_updates, 8,
        prepared.trainer.extensions + (RecordEnv(fields),),
    )  # fmt: skip
    train = jax.jit(jax.vmap(trainer.train))
    _, metrics = train(jax.vmap(jax.random.key)(runs.seeds), runs.hparams, runs.env_params)
    metrics = jax.tree.map(np.asarray, metrics)
    phase = np.asarray(phase_at(jnp.arange(8), 3, len(schedule), False))
    default = prepared.env.default_params
    for r, value in enumerate(values):
        own = {f: value if f == field else getattr(default, f) for f in fields}
        for f in fields:
            want = [schedule[p].get(f, own[f]) for p in phase]
            np.testing.assert_allclose(metrics[f][r], want, rtol=1e-6, err_msg=f)
        np.testing.assert_array_equal(metrics["env_phase"][r], phase)
    by = list(runs.swept) + [f"env.{k}" for k in runs.varied]
    write_phases(tmp_path, prepared, SimpleNamespace(metrics=metrics), by)
    table = pd.read_csv(tmp_path / "phases.csv")
    assert list(table["stretch"]) == [0, 0, 1, 1, 2, 2]  # 3 phases x 2 variants
    assert list(table["phase"]) == [0, 0, 1, 1, 2, 2]
    assert table["return_end"].notna().all()
    assert "recovery_steps" in table
    assert table["drop"].isna().sum() == 2 and table.loc[2:, "drop"].notna().all()  # 1 change


def test_phase_spans_and_last_measured():
    assert phase_spans(10, 3, 3, False) == [(0, 0, 3), (1, 3, 6), (2, 6, 10)]
    assert phase_spans(10, 3, 2, True) == [(0, 0, 3), (1, 3, 6), (0, 6, 9), (1, 9, 10)]
    x = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan] * 4])
    np.testing.assert_array_equal(last_measured(x), [3.0, np.nan])


def test_a_continual_run_directory_has_per_phase_tables_and_plasticity_plots(tmp_path):
    raw = compose_raw(
        *TINY,
        "plot=true",
        "agent.layer_norm=true",
        "agent.weight_decay=0.01",
        "train.total_timesteps=768",
        "train.num_logs=6",
        "+plasticity.diagnostics.every=2",
        "+plasticity.diagnostics.probe_size=32",
        "+plasticity.redo.every=4",
        "+plasticity.redo.tau=[-1,0.1]",
        "+env.schedule.params=[{},{length:2.0},{length:0.25}]",
        "+env.schedule.every=0.3",  # 2 logs per phase
    )
    out = run_experiment(parse_experiment(raw), raw, tmp_path / "run")
    phases = pd.read_csv(out / "phases.csv")
    assert list(phases["stretch"]) == [0, 0, 1, 1, 2, 2]
    assert list(phases["group"].unique()) == ["redo.tau=-1", "redo.tau=0.1"]
    assert phases["return_end"].notna().all() and phases["drop"].isna().sum() == 2
    assert "feature_erank_end" in phases and phases["feature_erank_end"].notna().all()
    for name in ("feature_erank", "dormant_0p025_0", "churn", "redo_units"):
        assert (out / f"plasticity_{name}.png").is_file()


# ------------------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("+plasticity=3",), "plasticity: got 3; must be a mapping"),
        (("+plasticity.redoo.tau=1",), "plasticity.redoo: unknown field"),
        (("+plasticity.diagnostics=3",), "plasticity.diagnostics: got 3; must be true, false"),
        (
            ("+plasticity.diagnostics.every=0",),
            "plasticity.diagnostics.every: got 0; must be an int",
        ),
        (
            ("+plasticity.diagnostics.probe_size=65",),
            "plasticity.diagnostics.probe_size: got 65; the probe is drawn from the latest "
            "rollout, so at most num_envs * num_steps = 64",
        ),  # fmt: skip
        (
            ("+plasticity.diagnostics.taus=[]",),
            "plasticity.diagnostics.taus: got []; must be a non-empty",
        ),
        (("+plasticity.diagnostics.taus=[-0.1]",), "plasticity.diagnostics.taus[0]: got -0.1"),
        (("+plasticity.diagnostics.srank_delta=1",), "plasticity.diagnostics.srank_delta: got 1"),
        (("+plasticity.diagnostics.colour=1",), "plasticity.diagnostics.colour: unknown field"),
        (("+plasticity.redo.every=0",), "plasticity.redo.every: got 0; must be an int with 1 <= x"),
        (
            ("+plasticity.redo.tau=2",),
            "plasticity.redo.tau: got 2; must be a float with -1 <= x <= 1",
        ),
        (("+plasticity.redo.tau=[0.1,x]",), "plasticity.redo.tau[1]: got 'x'"),
        (("+plasticity.redo.layers=1",), "plasticity.redo.layers: unknown field"),
        (("+plasticity.shrink_perturb.alpha=1.5",), "plasticity.shrink_perturb.alpha: got 1.5"),
        (("+plasticity.shrink_perturb.sigma=-1",), "plasticity.shrink_perturb.sigma: got -1"),
        (("+plasticity.reset.layers=0",), "plasticity.reset.layers: got 0"),
        (
            ("+plasticity.reset.layers=4",),
            "plasticity.reset.layers: got 4; the network has 3 Dense layers per torso",
        ),  # fmt: skip
        (
            ("+plasticity.reset.enabled=yes",),
            "plasticity.reset.enabled: got 'yes'; must be true or false",
        ),
        (
            ("search.kind=zip", "sweep.lr=[1e-3,1e-4]", "+plasticity.redo.tau=[0.1,0.2,0.3]"),
            "plasticity.redo.tau: got 3 values; search.kind zip pairs",
        ),  # fmt: skip
        (("+env.schedule=3",), "env.schedule: got 3; must be a mapping"),
        (("+env.schedule.every=2",), "env.schedule.params: got None; must be a list"),
        (
            ("+env.schedule.params=[{length:2.0}]", "+env.schedule.every=2"),
            "env.schedule.params: got 1 phase(s); a schedule needs at least 2",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},3]", "+env.schedule.every=2"),
            "env.schedule.params[1]: got 3; must be a mapping",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{length:x}]", "+env.schedule.every=2"),
            "env.schedule.params[1].length: got 'x'",
        ),  # fmt: skip
        (("+env.schedule.params=[{},{}]",), "env.schedule.every: got None; must be a float"),
        (
            ("+env.schedule.params=[{},{}]", "+env.schedule.every=1.5"),
            "env.schedule.every: got 1.5; must be a float with 0 < x < 1",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{}]", "+env.schedule.every=0"),
            "env.schedule.every: got 0; must be an int with 1 <= x",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{}]", "+env.schedule.every=2", "+env.schedule.loop=true"),
            "env.schedule.loop: unknown field",
        ),  # fmt: skip
        (
            (
                "+env.schedule.params=[{},{}]",
                "+env.schedule.every=2",
                "env.shift={params: {length: 2.0}, at: 0.5}",
            ),
            "env.shift: set with env.schedule; allowed: one of env.shift and env.schedule",
        ),  # fmt: skip
    ],
)
def test_every_bad_plasticity_or_schedule_value_is_one_clear_line(overrides, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment(compose_raw(*TINY, "train.total_timesteps=256", *overrides))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_plasticity_for_a_tabular_agent_is_one_clear_line():
    raw = compose_raw("agent=q_learning", "env=gridworld", "+plasticity.redo.tau=0.1")
    with pytest.raises(ConfigError, match="^plasticity.redo: set for agent 'q_learning', which"):
        parse_experiment(raw)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("+plasticity.redo.every=5",), "plasticity.redo.every: got 5; training has 4 updates"),
        (
            ("+env.schedule.params=[{},{length:-1}]", "+env.schedule.every=2"),
            "env.schedule.params[1].length: got -1",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{total_mass:2}]", "+env.schedule.every=2"),
            "env.schedule.params[1].total_mass: 'total_mass' of CartPole-v1 is derived",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{}]", "+env.schedule.every=3"),
            "env.schedule.every: got 3 updates; phases switch on log boundaries, so it must be "
            "a multiple of the 2 updates per log",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{},{}]", "+env.schedule.every=2"),
            "env.schedule.every: got 2 (2 updates); the last of the 3 phases would start after",
        ),  # fmt: skip
        (
            ("+env.schedule.params=[{},{}]", "+env.schedule.every=0.1"),
            "env.schedule.every: got 0.1; phases switch on log boundaries",
        ),  # fmt: skip
    ],
)
def test_values_that_need_the_env_or_the_update_count_are_one_clear_line(overrides, message):
    raw = compose_raw(*TINY, "train.total_timesteps=256", "train.num_logs=2", *overrides)
    with pytest.raises(ConfigError) as error:
        prepare(parse_experiment(raw))
    assert message in str(error.value)
    assert "\n" not in str(error.value)
