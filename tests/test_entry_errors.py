"""Entry points answer bad input with one line naming the culprit, exit code 2, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from research.errors import InputError
from research.pipelines.run import saved_config

ROOT = Path(__file__).resolve().parents[1]


def _script(name, *args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / f"{name}.py"), *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _bad_dirs(tmp_path):
    """(directory, what the message must name) for each kind of bad run directory."""
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.yaml").write_text("agent: {name: ppo\n")
    listed = tmp_path / "listed"
    listed.mkdir()
    (listed / "config.yaml").write_text("- 1\n- 2\n")
    return [
        (tmp_path / "missing", "is not a directory"),
        (empty, "has no config.yaml, so it is not a run directory"),
        (broken, "config.yaml: not valid YAML"),
        (listed, "config.yaml: got list; must be a mapping"),
    ]


def test_saved_config_names_each_bad_run_directory(tmp_path):
    for path, message in _bad_dirs(tmp_path):
        with pytest.raises(InputError, match=message):
            saved_config(path)


def test_a_traceback_only_when_asked_for(tmp_path):
    """The bad run directories through the scripts, one line each: tests/test_bad_input.py
    (in one process). Asked for, the traceback is there."""
    out = _script("resume", tmp_path / "missing", env={"RESEARCH_DEBUG": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr  # asked for


# ------------------------------------- Ctrl-C, resume and reproduce say what they do (issue 27)

# 8 chunks of one run each, long enough per chunk for a SIGINT to land mid-way.
CHUNKED = ("progress=false", "plot=false", "agent.num_steps=32", "train.total_timesteps=8192",
           "train.num_logs=4", "runs.seeds=8", "runs.max_runs_per_chunk=1")  # fmt: skip


def _mtimes(run_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


def test_ctrl_c_then_resume_then_resume_of_the_finished_run_then_reproduce(tmp_path):
    """Ctrl-C: one line with what was saved and the resume command. Resume: says how many
    chunks it skips and trains, and its env-steps/s counts only the trained ones. Resume of
    the finished run: trains nothing and says so. Reproduce: says before training that the
    config was edited."""
    import json
    import signal
    import time

    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run_dir}", *CHUNKED],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    first = run_dir / "chunks" / "chunk_00000.npz"
    deadline = time.time() + 300
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    saved = len(list((run_dir / "chunks").glob("chunk_*.npz")))
    assert 1 <= saved <= 8  # 8: a fast machine finished them all before the signal landed
    assert stderr.strip().splitlines()[-1] == (
        f"interrupted: {saved} of 8 chunk(s) finished and saved in {run_dir / 'chunks'}; "
        f"resume with: python scripts/resume.py {run_dir}"
    ), stderr

    out = _script("resume", run_dir)
    assert out.returncode == 0, out.stderr
    assert f"resume: {run_dir}: {saved} of 8 chunk(s) finished before, {8 - saved} to run" in (
        out.stdout
    )
    assert f"resume: loaded {saved} chunk(s), trained {8 - saved} (" in out.stdout, out.stdout
    info = json.loads((run_dir / "run.json").read_text())
    execution = info["execution"]
    assert execution["loaded_chunks"] == execution["loaded_runs"] == saved
    steps = info["env_steps_per_run"]
    assert info["env_steps_per_second"] == (8 - saved) * steps / execution["run_s"]

    before = _mtimes(run_dir)
    started = time.perf_counter()
    out = _script("resume", run_dir)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert f"resume: {run_dir} is finished already" in out.stdout and "nothing to do" in out.stdout
    assert "runs in" not in out.stdout  # trained nothing
    assert time.perf_counter() - started < 60
    assert _mtimes(run_dir) == before  # outputs untouched

    config = (run_dir / "config.yaml").read_text()
    assert "  lr: 0.00025\n" in config
    (run_dir / "config.yaml").write_text(config.replace("  lr: 0.00025\n", "  lr: 0.001\n", 1))
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "reproduce.py"), str(run_dir), "--out",
         str(tmp_path / "again")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        head = [proc.stdout.readline() for _ in range(2)]  # said before any training
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert "difference(s) between the run and this checkout" in head[0], head
    assert (
        head[1].strip()
        == "config.yaml edited since the run (ran with vs now): agent.lr: 0.00025 vs 0.001"
    )


def test_reproduce_tells_an_edited_config_without_hydra_s_copy(tmp_path):
    """A run directory made through the API (no .hydra/): run.json's config_sha256 tells."""
    import json

    from research.pipelines.run import saved_vs_current
    from research.pipelines.train import write_config
    from research.results import provenance
    from tests.conftest import compose_raw

    raw = compose_raw("runs.seeds=2")
    fingerprint = write_config(tmp_path, raw)
    (tmp_path / "run.json").write_text(json.dumps({**provenance(), "config_sha256": fingerprint}))
    assert saved_vs_current(tmp_path, raw) == []
    (tmp_path / "config.yaml").write_text((tmp_path / "config.yaml").read_text() + "# edited\n")
    assert saved_vs_current(tmp_path, raw) == [
        "config.yaml edited since the run: its sha256 differs from run.json's"
    ]
