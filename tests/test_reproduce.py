"""Reproduction from a run directory, and resuming a chunked run killed with SIGKILL."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from research.pipelines.run import compare_runs
from research.results import load_metrics

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "progress=false",
    "plot=false",
    "agent.num_steps=32",
    "train.total_timesteps=2048",
    "train.num_logs=4",
    "runs.seeds=2",
    "sweep.lr=[1e-3,3e-4]",
)


def _script(*args, timeout=600):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _train(run_dir, *overrides):
    proc = _script("scripts/train.py", f"hydra.run.dir={run_dir}", *overrides)
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_reproduce_reports_each_differing_metric_and_nothing_else(tmp_path):
    """One metric of the run tampered with: reproduce exits 1 naming it (share of values,
    largest difference). With the value put back, its re-run equals the run bit for bit:
    the tampered value was the only difference (the exit-0 path: the killed-run test)."""
    original = _train(tmp_path / "run", *TINY)
    runs, metrics = load_metrics(original)
    metrics["episode_return"][0, 0] += 1.0
    np.savez(original / "metrics.npz", **metrics)
    proc = _script("scripts/reproduce.py", str(original), "--out", str(tmp_path / "again"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 difference(s) between" in proc.stdout, proc.stdout
    assert "metrics.npz:episode_return: 6.2% of values differ, max |diff| 1" in proc.stdout
    metrics["episode_return"][0, 0] -= 1.0
    np.savez(original / "metrics.npz", **metrics)
    assert compare_runs(original, tmp_path / "again") == []


def test_a_killed_chunked_run_resumes_without_redoing_finished_chunks(tmp_path):
    overrides = (
        "progress=false",
        "plot=false",
        "runs.seeds=16",
        "runs.max_runs_per_chunk=2",
        "train.total_timesteps=16384",
        "train.num_logs=2",
    )
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = run_dir / "chunks" / "chunk_00000.npz"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((run_dir / "chunks").glob("chunk_*.npz"))
    assert 1 <= len(done) < 8, done  # killed mid-way
    stamps = {p.name: p.stat().st_mtime_ns for p in done}
    assert not (run_dir / "metrics.npz").exists()
    resumed = subprocess.Popen(
        [sys.executable, "scripts/resume.py", str(run_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The finished chunks are loaded, not run again: their files stay untouched.
    while resumed.poll() is None and (run_dir / "chunks").exists():
        for p in done:
            if p.exists():
                assert p.stat().st_mtime_ns == stamps[p.name]
        time.sleep(0.05)
    _, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert not (run_dir / "chunks").exists()  # cleaned up once everything is in metrics.npz
    assert not list(run_dir.rglob("*.tmp"))
    # Unbroken, the same program gives the same metrics bit for bit.
    proc = _script("scripts/reproduce.py", str(run_dir), "--out", str(tmp_path / "whole"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"reproduced bit for bit: {run_dir} == {tmp_path / 'whole'}" in proc.stdout


def test_chunk_store_reloads_states_and_refuses_another_program(tmp_path):
    import jax
    import pytest

    from research.config import parse_experiment
    from research.pipelines.train import execute, prepare
    from tests.conftest import compose_raw

    prepared = prepare(parse_experiment(compose_raw(*TINY, "runs.max_runs_per_chunk=2")))
    first = execute(prepared, chunk_dir=tmp_path, fingerprint="a")
    assert len(list(tmp_path.glob("chunk_*.npz"))) == 2
    again = execute(prepared, chunk_dir=tmp_path, fingerprint="a")  # every chunk loaded
    for x, y in zip(jax.tree.leaves(first.agent_states), jax.tree.leaves(again.agent_states)):
        np.testing.assert_array_equal(x, y)
    assert jax.tree.structure(first.agent_states) == jax.tree.structure(again.agent_states)
    for k in first.metrics:
        np.testing.assert_array_equal(first.metrics[k], again.metrics[k])
    with pytest.raises(ValueError, match="holds chunks of another program"):
        execute(prepared, chunk_dir=tmp_path, fingerprint="b")
