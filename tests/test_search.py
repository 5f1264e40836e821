"""Random search: joint draws of the swept hyperparameters, traced in one program."""

import numpy as np
import pytest

from research.config import ConfigError, parse_experiment
from research.pipelines.train import prepare
from tests.conftest import compose_raw

RANDOM = ("search.kind=random", "search.num_samples=40",
          "sweep.lr={start: 1e-4, stop: 1e-2, log: true}", "sweep.gamma=[0.9,0.99]",
          "sweep.ent_coef={start: 0.0, stop: 0.1}")


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


def test_random_points_are_runs_of_one_program_not_a_grid():
    prepared = prepare(parse_experiment(compose_raw(*RANDOM, "runs.seeds=2")))
    table = prepared.runs.table
    assert len(table) == 80  # 40 joint points x 2 seeds, not 40 ** 3 x 2
    np.testing.assert_allclose(np.asarray(prepared.runs.hparams.lr), table["lr"], rtol=1e-6)


def test_random_search_config_errors():
    with pytest.raises(ConfigError, match="search.kind: got 'bayes'"):
        parse_experiment(compose_raw("search.kind=bayes"))
    with pytest.raises(ConfigError, match="sweep.lr: a log range needs start > 0"):
        parse_experiment(compose_raw("search.kind=random", "sweep.lr={start: 0, stop: 1, log: true}"))
    with pytest.raises(ConfigError, match=r"sweep.lr\[\d+\]: got .*; must be a float with 0 < x"):
        parse_experiment(compose_raw("search.kind=random", "sweep.lr={start: -1, stop: 1}"))
