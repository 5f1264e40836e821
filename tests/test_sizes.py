"""Sizes are checked before anything is built: the run count from the config's list
lengths, and a floor on the host memory of the runs table and metrics against the machine."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from research.config import ConfigError, PPOHParams, ShapingHParams, parse_experiment
from research.envs import Env
from research.pipelines import train as pipeline
from research.runner.runs import ExtAxis, build_runs, count_runs
from tests.conftest import compose_raw

ROOT = Path(__file__).resolve().parents[1]
HUGE = ("progress=false", "runs.seeds=100000000", "runs.memory_budget_gb=0.5")
SMALL_MACHINE = (8 * 10**9, 16 * 10**9)  # (available, total) bytes


@pytest.mark.parametrize(
    "axes",
    [
        dict(num_seeds=3),
        dict(num_seeds=2, sweep={"lr": [1e-3, 3e-4], "gamma": [0.9, 0.99, 0.999]}),
        dict(num_seeds=2, sweep={"lr": [1e-3, 3e-4, 1e-4]}, sweep_aligned=True),
        dict(
            num_seeds=2,
            sweep={"lr": [1e-3, 3e-4]},
            zipped=True,
            extensions={"shaping": ExtAxis(ShapingHParams(), {"weight": [0.0, 1.0]})},
        ),
        dict(
            num_seeds=1,
            sweep={"lr": [1e-3, 3e-4]},
            env_variants={"length": [0.5, 1.0, 2.0], "gravity": [9.8, 5.0]},
            checkpoints=2,
            extensions={"shaping": ExtAxis(ShapingHParams(), {"weight": [0.0, 1.0]})},
        ),
    ],
    ids=["seeds", "grid", "random", "zip", "everything"],
)
def test_count_runs_is_the_number_build_runs_makes(axes):
    env = Env("CartPole-v1")
    runs = build_runs("CartPole-v1", env.default_params, PPOHParams(), **axes)
    assert count_runs(**axes).total == len(runs)


def test_a_huge_batch_is_refused_in_seconds_with_its_figures(monkeypatch):
    """10^8 runs: before, the runs table was built for minutes past 12 GB."""
    monkeypatch.setattr(pipeline, "host_memory", lambda: SMALL_MACHINE)
    config = parse_experiment(compose_raw(*HUGE))
    started = time.perf_counter()
    with pytest.raises(ConfigError) as error:
        pipeline.prepare(config)
    assert time.perf_counter() - started < 20
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("runs: 100,000,000 runs (100000000 seeds x 1 settings x 1 env")
    assert "GB of host memory (runs table " in message
    assert "plus runs.memory_budget_gb=0.5 for a chunk's programs" in message
    assert "this machine has 8 GB available of 16 GB" in message


def _tiny():
    return pipeline.prepare(parse_experiment(compose_raw("progress=false", "runs.seeds=4")))


def test_the_floor_grows_with_runs_logs_and_kept_states():
    base = pipeline.host_bytes(1000, 3, 25, 0)
    assert pipeline.host_bytes(2000, 3, 25, 0)["metrics"] == 2 * base["metrics"]
    assert pipeline.host_bytes(1000, 3, 50, 0)["metrics"] == 2 * base["metrics"]
    assert pipeline.host_bytes(1000, 3, 25, 10)["agent states"] == 10_000


def test_a_batch_that_fits_passes_and_the_cpu_budget_is_set_aside():
    prepared = _tiny()
    config, agent = prepared.config, prepared.agent
    axes = dict(num_seeds=4, sweep={}, env_variants={}, checkpoints=0, extensions={})
    needed = sum(pipeline.host_bytes(4, 3, config.train.num_logs, 0).values())
    roomy = (needed + 1, needed + 1)
    assert pipeline.check_sizes(config, axes, agent, "cpu", roomy).total == 4
    with pytest.raises(ConfigError, match=r"^runs: 4 runs .* need at least"):
        pipeline.check_sizes(config, axes, agent, "cpu", (needed - 1, needed))
    budgeted = parse_experiment(
        compose_raw("progress=false", "runs.seeds=4", "runs.memory_budget_gb=1")
    )
    with pytest.raises(ConfigError, match="runs.memory_budget_gb=1.0 for a chunk's programs"):
        pipeline.check_sizes(budgeted, axes, agent, "cpu", roomy)
    # On an accelerator the chunk's programs live in device memory, not the host's.
    assert pipeline.check_sizes(budgeted, axes, agent, "gpu", roomy).total == 4


def test_the_command_line_refuses_it_in_one_line(tmp_path):
    available, _ = pipeline.host_memory()
    if available > 300 * 10**9:
        pytest.skip("this machine could hold the tables of 10^8 runs")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *HUGE, f"output_root={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ),
    )  # fmt: skip
    assert time.perf_counter() - started < 60  # jax and Hydra start included
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: runs: 100,000,000 runs")
    assert np.isfinite(float(lines[0].split("need at least ")[1].split(" GB")[0]))
