"""Run any experiment config, resume one, or reproduce one from its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from research.config import ExperimentConfig, parse_experiment
from research.errors import InputError
from research.pipelines.meta import run_meta
from research.pipelines.train import run_experiment
from research.pipelines.transfer import run_transfer


def run(config: ExperimentConfig, raw: dict, run_dir: str | Path) -> Path:
    """The pipeline the config asks for: transfer if it has `transfer:`, meta-learning if
    it has `meta:`, else training."""
    if config.transfer is not None:
        return run_transfer(config, raw, run_dir)
    if config.meta is not None:
        return run_meta(config, raw, run_dir)
    return run_experiment(config, raw, run_dir)


def saved_config(run_dir: str | Path) -> tuple[ExperimentConfig, dict]:
    """(parsed, raw) config saved in a run directory; an InputError naming the directory
    when it is missing, is no run directory, or holds a config that is not YAML."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"run_dir: {str(run_dir)!r} is not a directory; give a run directory")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise InputError(
            f"run_dir: {str(run_dir)!r} has no config.yaml, so it is not a run directory "
            "(scripts/train.py writes one first)"
        )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"{path}: not valid YAML ({line})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: got {type(raw).__name__}; must be a mapping of key: value")
    return parse_experiment(raw), raw


def compare_runs(expected: str | Path, actual: str | Path) -> list[str]:
    """Differences between the metrics of two run directories ([] = bit for bit equal):
    every metrics.npz below `expected`, metric by metric. A sub-run reproduced by its
    parent pipeline (a transfer's finetune/) is compared with the same sub-run of `actual`."""
    expected, actual = Path(expected), Path(actual)
    problems = []
    for path in sorted(expected.rglob("metrics.npz")):
        rel = path.relative_to(expected)
        other = actual / rel
        if not other.exists() and (actual / expected.name / rel).exists():
            other = actual / expected.name / rel
        if not other.exists():
            problems.append(f"{rel}: missing from the reproduction")
            continue
        with np.load(path) as a, np.load(other) as b:
            for name in a.files:
                x, y = a[name], b[name] if name in b.files else None
                if y is None or x.shape != y.shape:
                    problems.append(
                        f"{rel}:{name}: shape {x.shape} vs {None if y is None else y.shape}"
                    )
                elif not np.array_equal(x, y, equal_nan=True):
                    diff = np.abs(x.astype(np.float64) - y)
                    problems.append(
                        f"{rel}:{name}: {np.mean(x != y):.1%} of values differ, "
                        f"max |diff| {np.nanmax(diff):.3g}"
                    )
    return problems


def provenance_differences(expected: str | Path, actual: str | Path) -> list[str]:
    """Versions, device and XLA flags that differ between two run directories' run.json."""
    a, b = (json.loads((Path(d) / "run.json").read_text()) for d in (expected, actual))
    out = []
    for key in ("versions", "devices", "xla_flags", "python"):
        if a.get(key) != b.get(key):
            out.append(f"{key}: {a.get(key)} vs {b.get(key)}")
    return out
