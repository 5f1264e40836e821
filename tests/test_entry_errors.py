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


@pytest.mark.parametrize("script", ["resume", "reproduce"])
def test_scripts_answer_a_bad_run_directory_with_one_line(tmp_path, script):
    for path, message in _bad_dirs(tmp_path)[:2]:  # a process each: the two cheapest
        out = _script(script, path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert lines[-1].startswith("error: run_dir: ") and message in lines[-1], out.stderr
        assert "Traceback" not in out.stderr
    out = _script("resume", tmp_path / "missing", env={"RESEARCH_DEBUG": "1"})
    assert out.returncode == 1 and "Traceback" in out.stderr  # asked for
