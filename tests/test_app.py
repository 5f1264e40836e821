"""The Hydra app end to end: a run directory with everything in it, and clean config errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from research.results import load_metrics

ROOT = Path(__file__).resolve().parents[1]


def _app(tmp_path, *overrides, timeout=600):
    cmd = [
        sys.executable,
        "scripts/train.py",
        f"output_root={tmp_path}",
        "progress=false",
        *overrides,
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_train_app_writes_a_complete_run_directory(tmp_path):
    proc = _app(
        tmp_path,
        "runs.seeds=2",
        "sweep.lr=[1e-3,3e-4]",
        "env.variants.length=[0.5,1.0]",
        "agent.num_steps=32",
        "train.total_timesteps=2048",
        "train.num_logs=4",
    )
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.yaml",
        "run.json",
        "runs.csv",
        "metrics.npz",
        "metrics.csv",
        "summary.csv",
        "summary.md",
        "learning_curve.png",
        "sensitivity.png",
        "heatmap.png",
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["num_runs"] == 8 and meta["versions"]["jax"] and meta["devices"]["platform"]
    assert "commit" in meta["git"] and "xla_flags" in meta
    assert meta["memory"]["peak_rss_mib"] > 100  # jax alone takes more; a wrong unit would not
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        # the app makes one CPU device per core and shards the 8 runs over them
        assert meta["execution"]["num_devices"] == min(len(os.sched_getaffinity(0)), 8)
    runs, metrics = load_metrics(run_dir)
    assert runs.columns.tolist() == ["run", "seed", "lr", "env.length", "diverged_at"]
    assert (runs.diverged_at == -1).all()  # healthy runs (tests/test_divergence.py: others)
    assert metrics["episode_return"].shape == (8, 4)
    long = pd.read_csv(run_dir / "metrics.csv")
    assert len(long) == 8 * 4
    row = long[(long.run == 5) & (long.log == 2)].iloc[0]
    assert row.seed == runs.seed[5] and row.lr == runs.lr[5]
    np.testing.assert_allclose(row.episode_return, metrics["episode_return"][5, 2], rtol=1e-6)
    summary = pd.read_csv(run_dir / "summary.csv")
    assert len(summary) == 4 and (summary.runs == 2).all()


def test_bad_config_exits_with_one_clear_message(tmp_path):
    proc = _app(tmp_path, "agent.lr=-0.1")
    assert proc.returncode == 2
    assert "config error: agent.lr: got -0.1; must be a float with 0 < x" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*/*/metrics.npz"))
