"""One program over several processes (jax.distributed, localhost coordinator, gloo).

scripts/train.py started as 4 processes of 1 CPU device each, and as 2 processes of 2
devices each, writes one run directory (the first process's) whose metrics are bit for bit
those of 1 process with 2 devices at the same runs per device (docs/design.md, "Several
processes"). A 2 x 2 run killed after its first chunk resumes under scripts/resume.py, again
as 2 processes, and ends bit for bit the same.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from research.pipelines.run import chunk_progress
from tests.conftest import forced_devices_env

ROOT = Path(__file__).resolve().parents[1]
RUNS_PER_DEVICE = 2
TINY = (
    "progress=false",
    "plot=false",
    "agent.num_envs=4",
    "agent.num_steps=32",
    "train.total_timesteps=8192",
    "train.num_logs=4",
    "runs.seeds=16",
)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _start(script: list[str], processes: int, devices: int, log: Path) -> list:
    """`processes` processes of `script`, each with `devices` CPU devices."""
    port, started = _port(), []
    for i in range(processes):
        env = forced_devices_env(devices)
        if processes > 1:
            env.update(
                RESEARCH_COORDINATOR=f"localhost:{port}",
                RESEARCH_NUM_PROCESSES=str(processes),
                RESEARCH_PROCESS_ID=str(i),
            )
        out = open(log.with_suffix(f".{i}.log"), "w")  # noqa: SIM115 (closed with the process)
        started.append(
            (subprocess.Popen([sys.executable, *script], env=env, cwd=ROOT, stdout=out,
                              stderr=subprocess.STDOUT), out)
        )  # fmt: skip
    return started


def _wait(started: list, timeout: float = 600) -> None:
    try:
        for proc, _ in started:
            assert proc.wait(timeout=timeout) == 0, proc.args
    finally:
        _stop(started)


def _stop(started: list) -> None:
    for proc, out in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()


def _train(run_dir: Path, processes: int, devices: int) -> list:
    chunk = RUNS_PER_DEVICE * processes * devices
    args = [*TINY, f"runs.max_runs_per_chunk={chunk}", f"hydra.run.dir={run_dir}"]
    return _start(["scripts/train.py", *args], processes, devices, run_dir.with_suffix(".log"))


def _metrics(run_dir: Path) -> dict:
    with np.load(run_dir / "metrics.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("processes") / "one"
    _wait(_train(run_dir, 1, 2))
    return _metrics(run_dir)


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a["episode_return"].shape == (16, 4)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_four_processes_write_one_run_directory_equal_to_one_process(one_process, tmp_path):
    run_dir = tmp_path / "four"
    _wait(_train(run_dir, 4, 1))
    _assert_same(one_process, _metrics(run_dir))
    info = json.loads((run_dir / "run.json").read_text())
    assert info["execution"]["num_devices"] == 4, info["execution"]
    second = (tmp_path / "four.1.log").read_text()  # the first process alone reports
    assert f"trained its share of the runs in {run_dir}" in second, second
    assert "research-process-" not in second, second
    assert not (run_dir / "chunks").exists()
    leftovers = list(Path(os.environ.get("TMPDIR", "/tmp")).glob("research-process-*"))
    assert not [p for p in leftovers if p.stat().st_mtime > time.time() - 120], leftovers


def test_a_killed_four_device_two_process_run_resumes_bit_for_bit(one_process, tmp_path):
    run_dir = tmp_path / "killed"
    started = _train(run_dir, 2, 2)
    try:
        deadline = time.time() + 600
        # A chunk is finished once its file is written, not when the manifest records its
        # checksum (written first): kill only after the file is there.
        while time.time() < deadline and all(p.poll() is None for p, _ in started):
            if (chunk_progress(run_dir) or (0, 0))[0]:
                break
            time.sleep(0.05)
        for proc, _ in started:
            proc.send_signal(signal.SIGKILL)
    finally:
        _stop(started)
    assert not (run_dir / "metrics.npz").exists(), "finished before it was killed"
    assert chunk_progress(run_dir) == (1, 2)
    log = tmp_path / "resume.log"
    _wait(_start(["scripts/resume.py", str(run_dir)], 2, 2, log))
    assert "1 of 2 chunk(s) finished before" in log.with_suffix(".0.log").read_text()
    _assert_same(one_process, _metrics(run_dir))


META = (
    *TINY[:2],
    "agent.num_envs=4",
    "agent.num_steps=32",
    "agent.num_minibatches=2",
    "agent.num_epochs=1",
    "agent.hidden_sizes=[16]",
    "runs.seeds=2",
    "train.total_timesteps=1024",
    "train.num_logs=2",
    "+meta.seeds=2",
    "+meta.method=es",
    "+meta.pretrain_timesteps=1024",
    "+meta.es.generations=2",
    "+meta.es.population=2",
    "+meta.es.inner_timesteps=512",
    "+meta.es.search.lr={low: 1e-5, high: 1e-3, log: true}",
    "+meta.variants.length={low: 0.25, high: 1.0}",
    "+meta.held_out.length=[1.5]",
    "+meta.evaluation.num_envs=2",
    "+meta.evaluation.num_steps=100",
)


def test_meta_learning_over_two_processes_equals_one_process_of_two_devices(tmp_path):
    """ES over 2 meta seeds: the pretraining, the search and the fine-tuning of every arm
    split over the 2 devices of 2 processes give the files of 1 process with 2 devices."""
    dirs = {}
    for processes, devices in ((1, 2), (2, 1)):
        run_dir = dirs[processes] = tmp_path / f"meta{processes}"
        args = ["scripts/train.py", *META, f"hydra.run.dir={run_dir}"]
        _wait(_start(args, processes, devices, run_dir.with_suffix(".log")))
    for name in ("meta_runs.csv", "meta/values.csv", "meta/history.csv"):
        assert (dirs[1] / name).read_bytes() == (dirs[2] / name).read_bytes(), name
    with (
        np.load(dirs[1] / "pretrain/metrics.npz") as a,
        np.load(dirs[2] / "pretrain/metrics.npz") as b,
    ):
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
