"""Population-based training inside the program (research/extensions/pbt.py, issue 23).

Hand-made populations for ranking, copy and perturbation; the batched hook against the
plain batch (bit for bit when no generation happens); a bandit-like probe whose best
learning rate is measured here, towards which PBT moves its population; resume after a
kill; a population on 2 devices as on one; a config error for every bad value.
"""

import functools
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from research.config import ConfigError, PPOHParams, parse_experiment
from research.config.schema import PBTConfig
from research.extensions import pbt as pbt_module
from research.pipelines.train import execute, prepare, write_run_dir
from research.pipelines.transfer import run_transfer, scratch_raw_config, source_raw_config
from research.runner import RunnerState, run_batch
from research.runner import execute as execute_module
from tests.conftest import TINY_PPO, compose_raw, forced_devices_env

# A bandit: reward 1 for action 1, else -1, one-step episodes. 8 segments of 1 update
# (128 episodes each), so the windowed return is precise and learning speed is the lr's.
PROBE = (
    "progress=false",
    "plot=false",
    "env=gymnax",
    "env.id=ActionDependentReward-probe",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "agent.num_minibatches=2",
    "agent.num_epochs=1",
    "agent.hidden_sizes=[16]",
    "agent.anneal_lr=false",
    "train.total_timesteps=1024",
    "train.num_logs=8",
)
BOUNDS = (1e-5, 1e-1)


def pbt_block(**kw) -> dict:
    return {
        "population_size": 8,
        "interval": 1,
        "fraction": 0.25,
        "perturb": {"lr": [0.8, 1.25]},
        "bounds": {"lr": list(BOUNDS)},
        **kw,
    }


def config(*overrides: str, pbt: dict | None = None):
    raw = compose_raw(*PROBE, *overrides)
    if pbt is not None:
        raw["pbt"] = pbt
    return parse_experiment(raw), raw


def make_pbt_config(**kw) -> PBTConfig:
    base = dict(
        population_size=8,
        interval=1,
        fraction=0.25,
        window=1,
        fitness="episode_return",
        perturb=(("lr", (0.5, 2.0)),),
        bounds=(("lr", (1e-4, 1e-2)),),
    )
    return PBTConfig(**{**base, **kw})


# ------------------------------------------------------------------ hand-made populations


def stacked(shape: tuple, **values) -> PPOHParams:
    """PPO's default hyperparameters (with `values`), every leaf float32 of `shape`."""
    base = PPOHParams().replace(**values)
    return jax.tree.map(lambda x: jnp.full(shape, x, jnp.float32), base)


def test_window_fitness_and_rank_are_nan_safe():
    window = jnp.array([[1.0, 3.0], [jnp.nan, 4.0], [jnp.nan, jnp.nan], [2.0, 2.0]])
    fitness = jax.jit(pbt_module.window_fitness)(window)
    np.testing.assert_array_equal(fitness, [2.0, 4.0, np.nan, 2.0])
    # NaN last; the tie 2.0 / 2.0 goes to the lower index
    np.testing.assert_array_equal(jax.jit(pbt_module.rank)(fitness), [1, 0, 3, 2])
    pushed = pbt_module.push(window, jnp.array([5.0, 6.0, 7.0, 8.0]))
    np.testing.assert_array_equal(pushed[:, 1], [5.0, 6.0, 7.0, 8.0])
    np.testing.assert_array_equal(pushed[:, 0], window[:, 1])


def _hand_made(resample_probability: float):
    """Two populations of 8, run jitted and vmapped over populations: member m of
    population g holds state 10 g + m and lr 1e-3; the fitness ranks them by a permutation."""
    c = make_pbt_config(resample_probability=resample_probability)
    fitness = jnp.array(
        [[5.0, 1.0, 7.0, jnp.nan, 3.0, 8.0, 2.0, 6.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]
    )
    state = {"w": jnp.arange(16.0).reshape(2, 8, 1) * jnp.ones((1, 1, 3))}
    window = fitness[..., None]
    hparams = stacked((2, 8), lr=1e-3)
    keys = jax.random.split(jax.random.key(0), 16).reshape(2, 8)
    out = jax.jit(jax.vmap(lambda a, w, h, f, k: pbt_module.generation(a, w, h, f, k, c)))(
        state, window, hparams, fitness, keys
    )
    return c, fitness, state, out


@pytest.mark.parametrize("resample_probability", [0.0, 1.0])
def test_exactly_the_bottom_fraction_copies_a_top_member_and_is_perturbed(resample_probability):
    c, fitness, state, (new_state, window, hparams, parent) = _hand_made(resample_probability)
    bottom = [{3, 1}, {0, 1}]  # NaN and 1.0; 0.0 and 1.0
    top = [{5, 2}, {7, 6}]  # 8.0 and 7.0; 7.0 and 6.0
    for g in range(2):
        replaced = {m for m in range(8) if int(parent[g, m]) != m}
        assert replaced == bottom[g]
        for m in range(8):
            p = int(parent[g, m])
            assert p in top[g] if m in replaced else p == m
            np.testing.assert_array_equal(new_state["w"][g, m], state["w"][g, p])
            np.testing.assert_array_equal(window[g, m], fitness[g, p, None])
            lr = float(hparams.lr[g, m])
            if m not in replaced:
                assert lr == np.float32(1e-3)  # kept bit for bit
            elif resample_probability == 0.0:
                assert lr in (np.float32(5e-4), np.float32(2e-3))  # the parent's x a factor
            else:
                assert 1e-4 <= lr <= 1e-2 and lr not in (np.float32(5e-4), np.float32(2e-3))
        # only the perturbed field moves; the others are the parent's (equal here)
        np.testing.assert_array_equal(hparams.gamma[g], np.full(8, 0.99, np.float32))


def test_perturbations_are_clipped_to_the_bounds():
    c = make_pbt_config(perturb=(("lr", (100.0,)),))
    keys = jax.random.split(jax.random.key(1), 8)
    moved = pbt_module.explore(jnp.full(8, 1e-3), keys, (100.0,), (1e-4, 1e-2), 0.0)
    np.testing.assert_array_equal(moved, np.full(8, 1e-2, np.float32))
    low = pbt_module.explore(jnp.full(8, 1e-3), keys, (1e-3,), c.bound("lr"), 0.0)
    np.testing.assert_array_equal(low, np.full(8, 1e-4, np.float32))
    drawn = pbt_module.sample_space(jax.random.key(2), 1e-4, 1e-2, (1000,))
    assert 1e-4 <= float(drawn.min()) and float(drawn.max()) <= 1e-2
    # log-uniform: about half the draws below the geometric middle 1e-3
    assert 0.45 < float((drawn < 1e-3).mean()) < 0.55


@functools.cache
def _hook(ext):
    """The population hook at segment 0, jitted once per extension."""
    return jax.jit(lambda r, h, m: ext.population(r, h, m, jnp.int32(0), 0))


def _block(order):
    """The population hook on a block of two populations of 4 in the given order, at a
    generation; returns per-run outputs in the original run order."""
    c = make_pbt_config(population_size=4, fraction=0.5, interval=1)
    ext = pbt_module.PBT(c, num_logs=4)
    runs = np.asarray(order)
    keys = jax.vmap(jax.random.key)(jnp.asarray(runs, jnp.uint32))
    runner = RunnerState(
        agent_state={"w": jnp.asarray(runs, jnp.float32)},
        env_state=None,
        obs=jnp.zeros(8),
        key=keys,
        num_updates=jnp.zeros(8, jnp.int32),
        ext=(jnp.full((8, 1), jnp.nan),),
    )
    fitness = jnp.asarray([3.0, 1.0, 2.0, 0.0, 0.5, 2.5, 1.5, 9.0], jnp.float32)[runs]
    hparams = stacked((8,), lr=1e-3)
    runner, hparams, row = _hook(ext)(runner, hparams, {"episode_return": fitness})
    back = np.argsort(runs)
    return (
        np.asarray(runner.agent_state["w"])[back],
        np.asarray(hparams.lr)[back],
        {k: np.asarray(v)[back] for k, v in row.items()},
    )


def test_the_hook_copies_inside_each_population_whatever_its_position_in_the_block():
    w, lr, row = _block(range(8))
    # population 0 (runs 0-3): fitness 3, 1, 2, 0 -> runs 1 and 3 take runs 0 or 2
    # population 1 (runs 4-7): 0.5, 2.5, 1.5, 9 -> runs 4 and 6 take runs 5 or 7
    assert set(w[[1, 3]]) <= {0.0, 2.0} and set(w[[4, 6]]) <= {5.0, 7.0}
    np.testing.assert_array_equal(w[[0, 2, 5, 7]], [0.0, 2.0, 5.0, 7.0])
    np.testing.assert_array_equal(row["pbt.parent"][[1, 3, 4, 6]] % 4 != [1, 3, 0, 2], True)
    np.testing.assert_array_equal(row["pbt.lr"], np.full(8, 1e-3, np.float32))  # in force
    # the same populations the other way round in the block: the same draws
    w2, lr2, row2 = _block([4, 5, 6, 7, 0, 1, 2, 3])
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(lr, lr2)
    for k in row:
        np.testing.assert_array_equal(row[k], row2[k], err_msg=k)


# ------------------------------------------------------------------ in the program


@pytest.fixture(scope="module")
def plain():
    """The plain batch of 8 runs (lr 1e-3), and its compiled program for a sweep."""
    prepared = prepare(config("agent.lr=1e-3", "runs.seeds=8")[0])
    return prepared, execute(prepared)


@pytest.fixture(scope="module")
def pbt_run():
    """Two populations of 8 (initial lr log-uniform in the bounds), a generation after every
    segment, one population a chunk."""
    experiment, raw = config(
        "runs.seeds=16", "runs.max_runs_per_chunk=8", pbt=pbt_block(initial="sample")
    )
    prepared = prepare(experiment)
    return prepared, raw, execute(prepared)


def test_a_population_whose_interval_outlasts_training_is_bit_for_bit_the_plain_batch(plain):
    prepared, result = plain
    experiment, _ = config("agent.lr=1e-3", "runs.seeds=8", pbt=pbt_block(interval=8))
    with_pbt = prepare(experiment)
    out = execute(with_pbt)
    assert out.metrics.keys() - result.metrics.keys() == {"pbt.fitness", "pbt.parent", "pbt.lr"}
    for k, v in result.metrics.items():
        np.testing.assert_array_equal(out.metrics[k], v, err_msg=k)
    for a, b in zip(jax.tree.leaves(out.agent_states), jax.tree.leaves(result.agent_states)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out.metrics["pbt.parent"], np.tile(np.arange(8), (8, 1)).T)


def test_pbt_moves_the_learning_rate_towards_the_best_one(plain, pbt_run):
    prepared, _ = plain
    # The best lr of this probe, measured: a plain sweep over the bounds (same program).
    grid = np.geomspace(*BOUNDS, 8).astype(np.float32)
    runs = prepared.runs
    sweep = run_batch(prepared.trainer, runs.seeds, runs.hparams.replace(lr=grid), runs.env_params)
    area = np.nanmean(sweep.metrics["episode_return"], axis=1)
    # Measured: below 1e-3 nothing is learnt in 8 updates (noise about 0); above, the
    # larger the faster, the best at the top bound.
    assert area[-1] > area[-2] > area[-3] > area[:-3].max() + 0.05, area
    prepared, _, result = pbt_run
    lr = np.log10(result.metrics["pbt.lr"])  # [16, 8], in force during each segment
    for population in (slice(0, 8), slice(8, 16)):
        start, end = lr[population, 0].mean(), lr[population, -1].mean()
        assert end > start + 0.5, (start, end)  # towards 1e-2..1e-1, by half a decade
        assert lr[population, -1].min() > lr[population, 0].min()


def test_lineage_is_written_as_data_with_its_figures(pbt_run, tmp_path):
    prepared, raw, result = pbt_run
    prepared = prepared.__class__(
        **{**prepared.__dict__, "config": prepared.config.__class__(
            **{**prepared.config.__dict__, "plot": True})}
    )  # fmt: skip
    write_run_dir(tmp_path, prepared, result, raw)
    lineage = pd.read_csv(tmp_path / "pbt_lineage.csv")
    assert len(lineage) == 16 * 8  # 16 runs x (the start + 7 generations)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert list(runs["pbt.population"]) == [0] * 8 + [1] * 8
    np.testing.assert_allclose(runs["pbt.start.lr"], result.metrics["pbt.lr"][:, 0], rtol=1e-6)
    g3 = lineage[lineage["generation"] == 3].sort_values("run")
    np.testing.assert_array_equal(g3["parent"], result.metrics["pbt.parent"][:, 2])
    np.testing.assert_allclose(g3["lr"], result.metrics["pbt.lr"][:, 3], rtol=1e-6)
    # per generation exactly 2 of each population's 8 members took another's state
    later = lineage[lineage["generation"] > 0]
    moved = (later["parent"] != later["member"]).groupby([later["generation"], later["population"]])
    assert set(moved.sum()) == {2}
    assert (tmp_path / "pbt_hparams.png").stat().st_size > 0
    assert (tmp_path / "pbt_lineage.png").stat().st_size > 0


def test_a_killed_pbt_run_resumes_from_its_last_chunk_bit_for_bit(pbt_run, tmp_path, monkeypatch):
    prepared, _, result = pbt_run
    save = execute_module.ChunkStore.save

    def killed_after_the_first(store, c, *args):
        if c == 1:
            raise KeyboardInterrupt
        save(store, c, *args)

    monkeypatch.setattr(execute_module.ChunkStore, "save", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        execute(prepared, chunk_dir=tmp_path, fingerprint="pbt")
    monkeypatch.setattr(execute_module.ChunkStore, "save", save)
    resumed = execute(prepared, chunk_dir=tmp_path, fingerprint="pbt")
    assert (resumed.info.loaded_chunks, resumed.info.num_chunks) == (1, 2)
    for k, v in result.metrics.items():
        np.testing.assert_array_equal(resumed.metrics[k], v, err_msg=k)


TRANSFER = (
    *TINY_PPO,
    "train.total_timesteps=512",
    "train.num_logs=4",
    "runs.seeds=4",
    "+transfer.source.total_timesteps=256",
    "+transfer.source.seeds=2",
    "+transfer.scratch=false",
    "+transfer.evaluation.num_envs=2",
    "+transfer.evaluation.num_steps=32",
)


def test_pbt_tunes_the_fine_tuning_runs_of_a_transfer_experiment(tmp_path):
    raw = {**compose_raw(*TRANSFER), "pbt": pbt_block(population_size=4, fraction=0.5)}
    for part in (source_raw_config(raw), scratch_raw_config(raw)):
        assert parse_experiment(part).pbt is None
    out = run_transfer(parse_experiment(raw), raw, tmp_path / "transfer")
    with np.load(out / "source" / "metrics.npz") as source:
        assert not [k for k in source.files if k.startswith("pbt.")]
    runs = pd.read_csv(out / "finetune" / "runs.csv")
    # 2 checkpoints x 4 seeds: one population per checkpoint, never across two
    assert runs.groupby("pbt.population")["checkpoint"].nunique().tolist() == [1, 1]
    lineage = pd.read_csv(out / "finetune" / "pbt_lineage.csv")
    assert len(lineage) == 8 * 4  # the start + a generation after segments 0, 1, 2
    later = lineage[lineage["generation"] > 0]
    moved = (later["parent"] != later["member"]).groupby([later["generation"], later["population"]])
    assert set(moved.sum()) == {2}


# ------------------------------------------------------------------ devices

SCRIPT = """
import jax, numpy as np
from research.config import parse_experiment
from research.pipelines.train import prepare
from research.runner import run_batch, take
from tests.conftest import compose_raw
assert len(jax.devices()) == 2, jax.devices()
raw = compose_raw(*{probe!r}, "runs.seeds=8")
raw["pbt"] = {pbt!r}
p = prepare(parse_experiment(raw))
r = p.runs
def batch(order, devices, chunk):
    res = run_batch(p.trainer, r.seeds[order], take(r.hparams, order), take(r.env_params, order),
                    devices=devices, chunk_size=chunk, keep_states=False)
    return {{k: v[np.argsort(order)] for k, v in res.metrics.items()}}, res.info
runs = np.arange(8)
two, info = batch(runs, jax.devices(), 8)
swapped, _ = batch(np.r_[4:8, 0:4], jax.devices(), 8)
one, info1 = batch(runs, jax.devices()[:1], 4)
assert (info.num_devices, info.chunk_size, info1.num_devices, info1.num_chunks) == (2, 8, 1, 2)
np.savez({out!r} + "/two.npz", **two)
np.savez({out!r} + "/swapped.npz", **swapped)
np.savez({out!r} + "/one.npz", **one)
"""


@pytest.fixture(scope="module")
def two_devices(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pbt_devices")
    block = pbt_block(population_size=4, fraction=0.5, initial="sample")
    script = SCRIPT.format(probe=PROBE, pbt=block, out=str(out))
    root = Path(__file__).resolve().parents[1]
    env = forced_devices_env(2)
    subprocess.run([sys.executable, "-c", script], env=env, cwd=root, check=True, timeout=600)
    return out


def _load(path: Path) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_a_population_on_either_of_two_devices_is_bit_for_bit_the_same(two_devices):
    two, swapped = _load(two_devices / "two.npz"), _load(two_devices / "swapped.npz")
    for k in two:  # population 0 on device 0, then on device 1
        np.testing.assert_array_equal(two[k], swapped[k], err_msg=k)


def test_a_population_on_two_devices_behaves_as_on_one(two_devices):
    two, one = _load(two_devices / "two.npz"), _load(two_devices / "one.npz")
    # One device compiles without the SPMD passes (docs/design.md): its first log is
    # the same, so the first generation's ranking, parents and perturbations are too.
    for k in ("env_steps", "episode_return", "episodes", "pbt.fitness", "pbt.parent"):
        np.testing.assert_array_equal(two[k][:, 0], one[k][:, 0], err_msg=k)
    np.testing.assert_array_equal(two["pbt.lr"][:, :2], one["pbt.lr"][:, :2])
    assert (two["pbt.parent"][:, 0] != np.tile(np.arange(4), 2)).sum() == 4  # 2 per population


# ------------------------------------------------------------------ config errors

BAD = [
    ({"population_size": 1}, "pbt.population_size: got 1; must be an int with 2 <= x"),
    ({"population_size": None}, "pbt.population_size: got None; must be an int"),
    ({"interval": 0}, "pbt.interval: got 0; must be an int with 1 <= x"),
    ({"fraction": 0.6}, "pbt.fraction: got 0.6; must be a float with 0 < x <= 0.5"),
    ({"fraction": 0.1}, "pbt.fraction: got 0.1; with population_size 8 it replaces int(0.1 * 8)"),
    ({"window": 0}, "pbt.window: got 0; must be an int with 1 <= x"),
    ({"fitness": "loss"}, "pbt.fitness: got 'loss'; must be one of 'episode_return'"),
    ({"fitness": "source_return"}, "pbt.fitness: got 'source_return'; the source task is"),
    ({"perturb": {}}, "pbt.perturb: got {}; must map at least one hyperparameter"),
    ({"perturb": {"num_envs": [2.0]}}, "pbt.perturb.num_envs: not a traced hyperparameter"),
    ({"perturb": {"l2_init": [2.0]}}, "pbt.perturb.l2_init: 'l2_init' is its loss term"),
    ({"perturb": {"init_log_std": [2.0]}}, "pbt.perturb.init_log_std: 'init_log_std' is read"),
    ({"perturb": {"lr": []}}, "pbt.perturb.lr: got []; must be a non-empty list of factors"),
    ({"perturb": {"lr": [0.8, -1.0]}}, "pbt.perturb.lr[1]: got -1.0; must be a float with 0 <"),
    ({"bounds": {}}, "pbt.bounds.lr: got None; every perturbed field needs bounds [low, high]"),
    ({"bounds": {"lr": [1e-3]}}, "pbt.bounds.lr: got [0.001]; every perturbed field needs"),
    ({"bounds": {"lr": [1e-2, 1e-3]}}, "pbt.bounds.lr[1]: got 0.001; must be > low = 0.01"),
    ({"bounds": {"lr": [0.0, 1e-3]}}, "pbt.bounds.lr[0]: got 0.0; must be a float with 0 < x"),
    (
        {"bounds": {"lr": [1e-5, 1e-1], "gamma": [0.9, 1.0]}},
        "pbt.bounds.gamma: 'gamma' is not perturbed",
    ),
    ({"resample_probability": 1.5}, "pbt.resample_probability: got 1.5; must be a float with 0"),
    ({"initial": "grid"}, "pbt.initial: got 'grid'; must be one of 'keep', 'sample'"),
    ({"elitism": 1}, "pbt.elitism: unknown field; allowed: bounds, fitness, fraction"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_every_bad_pbt_value_is_one_config_error(change, message):
    with pytest.raises(ConfigError) as error:
        config(pbt={k: v for k, v in {**pbt_block(), **change}.items() if v is not None})
    assert str(error.value).startswith(message), str(error.value)
    assert "\n" not in str(error.value)


def test_pbt_against_the_rest_of_the_config_is_checked_before_compiling():
    with pytest.raises(ConfigError, match=r"^pbt.initial: got 'sample', which draws lr from"):
        config("sweep.lr=[1e-3,1e-2]", pbt=pbt_block(initial="sample"))
    with pytest.raises(ConfigError, match="^pbt.population_size: got 8; a population is"):
        prepare(config("runs.seeds=6", "sweep.lr=[1e-3,1e-2]", pbt=pbt_block())[0])
    with pytest.raises(ConfigError, match="^pbt: got 'x'; must be a mapping"):
        config(pbt="x")
    raw = compose_raw("experiment=forgetting_cartpole_ppo")
    every = parse_experiment(raw).transfer.forgetting.every
    for name in ("interval", "window"):
        block = pbt_block(fitness="source_return", interval=every, window=every)
        with pytest.raises(ConfigError, match=f"^pbt.{name}: got 1; source_return is measured"):
            parse_experiment({**raw, "pbt": {**block, name: 1}})
