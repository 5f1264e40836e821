"""Hyperparameter search over shape-changing settings with Optuna (one program per trial).

Traced hyperparameters are swept inside a program (`sweep`, `search.kind=random`); settings
that change shapes need a program each, which is what a study's trials are. The study is
stored (e.g. sqlite), so running it again adds trials to it instead of starting over.
A trial whose config is a transfer experiment (`transfer:`) runs the transfer pipeline and
is scored by its fine-tuning runs (give `transfer.checkpoint` in the overrides to tune the
fine-tuning of one fixed checkpoint, and `transfer.scratch=false`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from research.config import ConfigError, parse_experiment
from research.errors import InputError, readable_file
from research.pipelines.train import execute, prepare, write_run_dir
from research.pipelines.transfer import run_transfer
from research.results import load_metrics

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
STUDY_KEYS = ("study_name", "storage", "direction", "num_trials", "seed", "overrides", "space")
REQUIRED = {
    "study_name": "a name for the study, e.g. ppo_cartpole_shapes",
    "storage": "an Optuna storage URL, e.g. sqlite:///results/optuna/<study_name>.db",
}


def compose_config(overrides: list[str]) -> dict:
    """The resolved config mapping scripts/train.py would get for these overrides; an
    InputError naming the override when Hydra cannot compose it."""
    try:
        with initialize_config_dir(str(CONFIGS), version_base="1.3"):
            cfg = compose("config", overrides=list(overrides))
        raw = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as error:
        line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(f"overrides {list(overrides)}: {line}") from None
    raw.pop("hydra", None)
    return raw


def trial_overrides(spec: Mapping[str, Any], choices: Mapping[str, Any]) -> list[str]:
    """The study's overrides plus one `key=value` per chosen space entry."""
    as_text = lambda v: (
        "[" + ",".join(map(str, v)) + "]" if isinstance(v, (list, tuple)) else str(v)
    )
    return list(spec.get("overrides") or []) + [f"{k}={as_text(v)}" for k, v in choices.items()]


def load_study(path: str | Path) -> dict:
    """The study file's mapping; an InputError naming the file when it is missing, not YAML
    or not a mapping (its fields are checked by `check_study`)."""
    example = "a study file such as configs/optuna/ppo_cartpole_shapes.yaml"
    path = readable_file(Path(path), "study", example)
    try:
        spec = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not valid YAML ({line})") from None
    if not isinstance(spec, dict):
        raise InputError(f"{path}: got {type(spec).__name__}; must be a mapping of study fields")
    return spec


def check_study(spec: Mapping[str, Any]) -> None:
    """Every key known, every choice composing into a valid config: before any trial runs."""
    for key in spec:
        if key not in STUDY_KEYS:
            raise ConfigError(f"study.{key}: unknown field; allowed: {', '.join(STUDY_KEYS)}")
    for key, what in REQUIRED.items():
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise ConfigError(f"study.{key}: got {spec.get(key)!r}; give {what}")
    if spec.get("direction", "maximize") not in ("maximize", "minimize"):
        raise ConfigError(
            f"study.direction: got {spec['direction']!r}; must be 'maximize' or 'minimize'"
        )
    trials = spec.get("num_trials", 10)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"study.num_trials: got {trials!r}; must be an int with 1 <= x")
    overrides = spec.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"study.overrides: got {overrides!r}; must be a list of key=value")
    space = spec.get("space") or {}
    if not isinstance(space, dict) or not space:
        raise ConfigError(
            f"study.space: got {space or None!r}; give a mapping of config keys to their choices"
        )
    for key, options in space.items():
        if not isinstance(options, list) or not options:
            raise ConfigError(f"study.space.{key}: got {options!r}; must be a non-empty list")
        for option in options:
            try:
                parse_experiment(compose_config(trial_overrides(spec, {key: option})))
            except InputError as error:
                raise type(error)(f"study.space.{key} = {option!r}: {error}") from None


def _storage_errors() -> type[Exception]:
    """The errors of a storage URL that cannot be opened (SQLAlchemy's, where installed)."""
    try:
        from sqlalchemy.exc import SQLAlchemyError
    except ImportError:  # pragma: no cover - optuna's RDB storage needs it
        return OSError
    return SQLAlchemyError


def run_study(spec: Mapping[str, Any], num_trials: int | None = None, root: Path | None = None):
    import optuna

    check_study(spec)
    root = Path(root or Path("results/optuna") / spec["study_name"])
    storage = spec["storage"]
    try:
        if storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            study_name=spec["study_name"],
            storage=storage,
            load_if_exists=True,
            direction=spec.get("direction", "maximize"),
            sampler=optuna.samplers.TPESampler(seed=spec.get("seed", 0)),
        )
    except (OSError, ValueError, ImportError, _storage_errors()) as error:
        line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"study.storage: cannot open {storage!r} ({line})") from None
    space = spec["space"]

    def objective(trial) -> float:
        # Categorical choices by index: Optuna stores scalars, some choices are lists.
        choices = {
            k: v[trial.suggest_categorical(k, list(range(len(v))))] for k, v in space.items()
        }
        raw = compose_config(trial_overrides(spec, choices))
        config, run_dir = parse_experiment(raw), root / f"trial_{trial.number:04d}"
        if config.transfer is not None:  # scored by the fine-tuning runs
            run_transfer(config, raw, run_dir)
            final = load_metrics(run_dir / "finetune")[1]["episode_return"][:, -1]
        else:
            prepared = prepare(config)
            result = execute(prepared, keep_states=False)
            write_run_dir(run_dir, prepared, result, raw)
            final = result.metrics["episode_return"][:, -1]
        trial.set_user_attr("choices", {k: str(v) for k, v in choices.items()})
        return float(np.nanmean(final))

    study.optimize(objective, n_trials=num_trials or spec.get("num_trials", 10))
    return study
