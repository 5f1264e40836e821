"""Tuning the fine-tuning of one fixed checkpoint (scripts/hpo_compare.py's transfer settings,
results/hpo/README.md): an Optuna trial of a transfer config loads the given checkpoint
instead of pretraining, and is scored by its fine-tuning runs."""

import json

import numpy as np
import pytest

from research.config import parse_experiment
from research.pipelines.run import run
from research.pipelines.search import run_study
from research.pipelines.transfer import source_raw_config
from research.results import load_metrics
from tests.conftest import TINY_PPO, compose_raw

TINY = (
    *TINY_PPO,
    "train.total_timesteps=256",
    "train.num_logs=2",
    "checkpoint_states=16",
    "transfer.source.total_timesteps=256",
    "transfer.evaluation.num_envs=2",
    "+transfer.evaluation.num_steps=32",
)


def test_a_study_tunes_the_fine_tuning_of_a_fixed_checkpoint(tmp_path):
    # the driver's pretraining: the transfer config's source runs, saved as a checkpoint
    raw = source_raw_config(compose_raw("experiment=hpo_cartpole_ppo_finetune", *TINY))
    raw = {**raw, "save_checkpoint": True}
    checkpoint = run(parse_experiment(raw), raw, tmp_path / "source") / "checkpoint"
    spec = {
        "study_name": "tiny_finetune",
        "storage": f"sqlite:///{tmp_path / 'tiny.db'}",
        "seed": 0,
        "overrides": [
            "experiment=hpo_cartpole_ppo_finetune",
            *TINY,
            "runs.seeds=2",
            f"transfer.checkpoint={checkpoint}",
        ],
        "space": {"agent.lr": [1e-4, 1e-3]},
    }
    study = run_study(spec, num_trials=1, root=tmp_path / "tpe")
    trial = tmp_path / "tpe" / "trial_0000"
    assert not (trial / "source").exists()  # loaded, not pretrained again
    info = json.loads((trial / "run.json").read_text())
    assert info["checkpoint"] == str(checkpoint)
    runs, metrics = load_metrics(trial / "finetune")
    assert len(runs) == 2 and runs["checkpoint"].tolist() == [0, 0]
    value = study.trials[0].value
    assert value == pytest.approx(float(np.nanmean(metrics["episode_return"][:, -1])))
