"""Hyperparameter search over shape-changing settings with Optuna (one program per trial).

Traced hyperparameters are swept inside a program (`sweep`, `search.kind=random`); settings
that change shapes need a program each, which is what a study's trials are. The study is
stored (e.g. sqlite), so running it again adds trials to it instead of starting over.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from research.config import ConfigError, parse_experiment
from research.pipelines.train import execute, prepare, write_run_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STUDY_KEYS = ("study_name", "storage", "direction", "num_trials", "seed", "overrides", "space")


def compose_config(overrides: list[str]) -> dict:
    """The resolved config mapping scripts/train.py would get for these overrides."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def trial_overrides(spec: Mapping[str, Any], choices: Mapping[str, Any]) -> list[str]:
    """The study's overrides plus one `key=value` per chosen space entry."""
    as_text = lambda v: (
        "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)
    )
    return list(spec.get("overrides") or []) + [f"{k}={as_text(v)}" for k, v in choices.items()]


def check_study(spec: Mapping[str, Any]) -> None:
    """Every key known, every choice composing into a valid config: before any trial runs."""
    for key in spec:
        if key not in STUDY_KEYS:
            raise ConfigError(f"study.{key}: unknown field; allowed: {', '.join(STUDY_KEYS)}")
    space = spec.get("space") or {}
    if not space:
        raise ConfigError("study.space: missing; give config keys and their choices")
    for key, options in space.items():
        if not isinstance(options, list) or not options:
            raise ConfigError(f"study.space.{key}: got {options!r}; must be a non-empty list")
        for option in options:
            parse_experiment(compose_config(trial_overrides(spec, {key: option})))


def run_study(spec: Mapping[str, Any], num_trials: int | None = None, root: Path | None = None):
    import optuna

    check_study(spec)
    root = Path(root or Path("results/optuna") / spec["study_name"])
    if str(spec["storage"]).startswith("sqlite:///"):
        Path(str(spec["storage"])[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=spec["study_name"],
        storage=spec["storage"],
        load_if_exists=True,
        direction=spec.get("direction", "maximize"),
        sampler=optuna.samplers.TPESampler(seed=spec.get("seed", 0)),
    )
    space = spec["space"]

    def objective(trial) -> float:
        # Categorical choices by index: Optuna stores scalars, some choices are lists.
        choices = {
            k: v[trial.suggest_categorical(k, list(range(len(v))))] for k, v in space.items()
        }
        raw = compose_config(trial_overrides(spec, choices))
        prepared = prepare(parse_experiment(raw))
        result = execute(prepared, keep_states=False)
        write_run_dir(root / f"trial_{trial.number:04d}", prepared, result, raw)
        final = result.metrics["episode_return"][:, -1]
        trial.set_user_attr("choices", {k: str(v) for k, v in choices.items()})
        return float(np.nanmean(final))

    study.optimize(objective, n_trials=num_trials or spec.get("num_trials", 10))
    return study
