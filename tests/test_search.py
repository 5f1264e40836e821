"""Random search: joint draws of the swept hyperparameters, traced in one program."""

import math

import numpy as np
import pytest

from research.config import ConfigError, parse_experiment
from research.pipelines.train import prepare
from tests.conftest import compose_raw

RANDOM = (
    "search.kind=random",
    "search.num_samples=40",
    "sweep.lr={start: 1e-4, stop: 1e-2, log: true}",
    "sweep.gamma=[0.9,0.99]",
    "sweep.ent_coef={start: 0.0, stop: 0.1}",
)


def test_random_search_draws_joint_points_in_their_ranges():
    config = parse_experiment(compose_raw(*RANDOM))
    lr, gamma, ent = (np.asarray(config.sweep[k].values) for k in ("lr", "gamma", "ent_coef"))
    assert len(lr) == len(gamma) == len(ent) == 40
    assert (lr >= 1e-4).all() and (lr <= 1e-2).all()
    # log-uniform: about half of the draws below the geometric midpoint 1e-3
    assert 10 <= (lr < 1e-3).sum() <= 30
    assert set(gamma) == {0.9, 0.99} and (ent >= 0).all() and (ent <= 0.1).all()
    again = parse_experiment(compose_raw(*RANDOM))
    other = parse_experiment(compose_raw(*RANDOM, "search.seed=1"))
    assert again.sweep == config.sweep and other.sweep != config.sweep


def test_the_old_start_stop_spelling_is_the_same_range_as_low_high():
    # Run directories written before the one range syntax spell grids and random ranges
    # with start/stop; they must parse to exactly the values low/high gives.
    for kind, extra in (("grid", ", num: 4"), ("random", "")):
        old, new = (
            parse_experiment(
                compose_raw(
                    f"search.kind={kind}", f"sweep.lr={{{lo}: 1e-4, {hi}: 1e-2{extra}, log: true}}"
                )
            ).sweep["lr"]
            for lo, hi in (("start", "stop"), ("low", "high"))
        )
        assert old == new and len(set(new.values)) == (4 if kind == "grid" else 16)
    grid = parse_experiment(compose_raw("sweep.lr={low: 1e-4, high: 1e-2, num: 3, log: true}"))
    np.testing.assert_allclose(grid.sweep["lr"].values, [1e-4, 1e-3, 1e-2], rtol=1e-12)
    # the old spelling keeps what it allowed: a descending grid, its values bit for bit
    down = parse_experiment(compose_raw("sweep.lr={start: 3e-3, stop: 3e-4, num: 7, log: true}"))
    old = [math.exp(math.log(3e-3) + i * (math.log(3e-4 / 3e-3)) / 6) for i in range(7)]
    assert down.sweep["lr"].values == tuple(old)
    # ... where it was; meta's ranges never had it
    with pytest.raises(ConfigError, match="meta.variants.length.start: unknown field"):
        parse_experiment(
            compose_raw(
                "+meta.method=reptile",
                "+meta.variants.length={start: 0.5, stop: 1.0}",
                "+meta.held_out.length=[1.5]",
            )
        )


def test_random_points_are_runs_of_one_program_not_a_grid():
    prepared = prepare(parse_experiment(compose_raw(*RANDOM, "runs.seeds=2")))
    table = prepared.runs.table
    assert len(table) == 80  # 40 joint points x 2 seeds, not 40 ** 3 x 2
    np.testing.assert_allclose(np.asarray(prepared.runs.hparams.lr), table["lr"], rtol=1e-6)


def test_random_search_config_errors():
    with pytest.raises(ConfigError, match="search.kind: got 'bayes'"):
        parse_experiment(compose_raw("search.kind=bayes"))
    with pytest.raises(ConfigError, match="sweep.lr.start: got 0.0; a log range needs start > 0"):
        parse_experiment(
            compose_raw("search.kind=random", "sweep.lr={start: 0, stop: 1, log: true}")
        )
    with pytest.raises(ConfigError, match=r"sweep.lr\[\d+\]: got .*; must be a float with 0 < x"):
        parse_experiment(compose_raw("search.kind=random", "sweep.lr={start: -1, stop: 1}"))


# ------------------------------------------------------------------ shape-changing sweeps


import yaml  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from research.pipelines.search import check_study, run_study  # noqa: E402
from tests.conftest import CONFIGS  # noqa: E402


def test_slurm_launcher_config_composes_and_validates():
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=["hydra/launcher=slurm", "agent.num_envs=16"],
            return_hydra_config=True,
        )
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 240
    parse_experiment(compose_raw("hydra/launcher=slurm", "agent.num_envs=16"))


def test_shipped_optuna_study_validates_and_bad_ones_do_not():
    spec = yaml.safe_load((CONFIGS / "optuna" / "ppo_cartpole_shapes.yaml").read_text())
    check_study(spec)
    with pytest.raises(ConfigError, match="agent.num_minibatches: got 3; must divide"):
        check_study({**spec, "space": {"agent.num_minibatches": [2, 3]}})
    with pytest.raises(ConfigError, match="study.trials: unknown field"):
        check_study({**spec, "trials": 3})


def test_optuna_study_runs_and_resumes_from_its_storage(tmp_path):
    spec = {
        "study_name": "tiny",
        "storage": f"sqlite:///{tmp_path / 'tiny.db'}",
        "direction": "maximize",
        "seed": 0,
        "overrides": [
            "runs.seeds=2",
            "agent.num_steps=16",
            "train.total_timesteps=512",
            "train.num_logs=2",
            "progress=false",
            "plot=false",
        ],
        "space": {"agent.num_envs": [2, 4], "agent.hidden_sizes": [[16, 16], [32, 32]]},
    }
    study = run_study(spec, num_trials=2, root=tmp_path / "runs")
    assert len(study.trials) == 2 and all(t.value is not None for t in study.trials)
    again = run_study(spec, num_trials=1, root=tmp_path / "runs")  # same storage: resumes
    assert len(again.trials) == 3
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "trial_0000",
        "trial_0001",
        "trial_0002",
    ]
