"""The benchmarks' tables (research.bench): rows merged by key, the ours/peer ratios, the
scaling plot. Pure table code on hand-made rows (the measurements themselves are the worker
processes' job), plus small end-to-end runs of the compile-level benchmark and of the GPU
check script."""

import sys
from pathlib import Path

import pandas as pd
import pytest

from research import bench
from research.bench import peers
from research.errors import InputError


def row(agent: str, runs: int, rate: float, compile_s: float, rss: float, load=0.0) -> dict:
    return {
        "agent": agent,
        "env": "cartpole",
        "setting": "default",
        "device": "cpu: test",
        "platform": "cpu",
        "runs": runs,
        "env_steps_per_s": rate,
        "compile_s": compile_s,
        "peak_rss_mib": rss,
        "device_peak_mib": None,
        "other_load": load,
        "status": "ok",
        "env_id": "CartPole-v1",
    }


def test_ratios_are_ours_over_the_peer_at_the_same_r(tmp_path):
    rows = [
        row("ppo", 1, 90_000, 9.0, 800),
        row("rejax_ppo", 1, 60_000, 12.0, 700),
        row("ppo", 64, 150_000, 10.0, 900),
        row("rejax_ppo", 64, 100_000, 10.0, 850, 0.5),
    ]
    bench.write_tables(
        rows,
        tmp_path,
        "peers",
        False,
        "cpu: test",
        order=peers.ORDER,
        intro=peers.INTRO,
        extra=peers.comparison,
    )
    text = (tmp_path / "peers.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| ppo | rejax_ppo |")]
    assert len(lines) == 2
    r1, r64 = lines
    assert "| 1 |" in r1 and "| 1.50x |" in r1 and "| 0.75x |" in r1  # 90k/60k; 9 s/12 s
    assert "| 64 |" in r64 and "| 1.50x |" in r64 and "| 1.00x |" in r64
    assert "*busy*" in r64 and "*busy*" not in r1  # the peer's row ran under 0.5 cores of load


def test_append_replaces_same_key_rows_and_keeps_others(tmp_path):
    bench.write_tables(
        [row("ppo", 1, 1.0, 1.0, 1.0), row("ppo", 64, 2.0, 1.0, 1.0)],
        tmp_path,
        "t",
        False,
        "cpu: test",
    )
    bench.write_tables([row("ppo", 64, 3.0, 1.0, 1.0)], tmp_path, "t", True, "cpu: test")
    frame = pd.read_csv(tmp_path / "t.csv")
    assert frame.sort_values("runs")["env_steps_per_s"].tolist() == [1.0, 3.0]


def test_scaling_plot_only_when_some_agent_has_two_r(tmp_path):
    bench.write_tables([row("ppo", 1, 1.0, 1.0, 1.0)], tmp_path, "one", False, "cpu: test")
    assert not (tmp_path / "one.png").exists()
    bench.write_tables(
        [row("ppo", r, 10.0 * r, 1.0, 100.0 + r) for r in (1, 64, 1024)],
        tmp_path,
        "many",
        False,
        "cpu: test",
    )
    assert (tmp_path / "many.png").stat().st_size > 0


@pytest.mark.parametrize("runs,expected", [(1, 51_200), (1024, 24_414)])
def test_batch_step_cap(runs, expected):
    class Args:
        total_timesteps, max_batch_steps = 51_200, 25_000_000

    assert bench.steps_for(Args, runs) == expected


def test_compile_levels_benchmark_times_each_level_on_one_program(tmp_path):
    from research.bench import compile_levels as levels

    assert (
        levels.main(
            [
                "--agent",
                "ppo",
                "--runs",
                "2",
                "--levels",
                "1",
                "0",
                "--reps",
                "2",
                "--max-batch-steps",
                "1024",
                "--out",
                str(tmp_path),
                "--name",
                "t",
            ]
        )
        == 0
    )
    frame = pd.read_csv(tmp_path / "t.csv")
    assert frame.llvm_level.tolist() == [1, 0] and (frame.runs == 2).all()
    assert (frame.compile_s > 0).all() and (frame.env_steps_per_s_best > 0).all()
    assert (frame.env_steps_per_s_best >= frame.env_steps_per_s_median).all()
    assert [len(c.split()) for c in frame.call_s] == [2, 2]
    assert "| ppo | 2 | -O0 |" in (tmp_path / "t.md").read_text()
    with pytest.raises(InputError, match=r"--levels \[4\]: each must be 0, 1, 2 or 3"):
        levels.main(["--levels", "4"])  # one line through research.errors.cli


def test_gpu_check_script_runs_every_step_in_its_dry_mode(tmp_path):
    """scripts/gpu_check.sh, which a lent GPU machine runs in one call, checked here small:
    every step runs and exits 0, and the tables come back in $OUT."""
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DRY": "1", "PYTHON": sys.executable, "OUT": str(tmp_path)}
    proc = subprocess.run(
        ["bash", "scripts/gpu_check.sh"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = (tmp_path / "gpu_check.log").read_text()
    assert proc.returncode == 0, log[-3000:]
    for step in ("versions", "gpu_tests", "ppo_scaling", "pqn_scaling"):
        assert f"=== {step}: exit 0" in log
    assert "=== done, exit 0" in log
    ppo = pd.read_csv(tmp_path / "ppo_scaling_gpu.csv")
    pqn = pd.read_csv(tmp_path / "pqn_scaling_gpu.csv")
    assert ppo.runs.tolist() == [1] and pqn.runs.tolist() == [1]
    assert (ppo.status == "ok").all() and (pqn.status == "ok").all()
    assert (ppo.env_steps_per_s > 0).all() and ppo.device.notna().all()
