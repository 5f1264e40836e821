"""Compiled programs are cached across processes: a rerun loads them (issue 24, item 4)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from research.config import ConfigError, parse_experiment
from research.platform import compile_cache_dir
from tests.conftest import compose_raw
from tests.test_reproduce import TINY

ROOT = Path(__file__).resolve().parents[1]


def _train(tmp_path: Path, *overrides: str) -> str:
    """Output of scripts/train.py with jax's compiler logging, under a fresh cache home."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_DEBUG_LOG_MODULES="jax._src.compiler")
    args = [f"output_root={tmp_path / 'runs'}", *TINY, *overrides]
    done = subprocess.run(
        [sys.executable, "scripts/train.py", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    return done.stdout + done.stderr  # Hydra sends log records to stdout


def test_a_rerun_loads_both_programs_from_the_users_cache(tmp_path):
    cold = _train(tmp_path)
    assert cold.count("CACHE MISS for 'jit_wrapped'") == 2, cold[-2000:]  # init and train
    warm = _train(tmp_path)
    assert warm.count("cache hit for 'jit_wrapped'") == 2, warm[-2000:]
    assert "CACHE MISS for 'jit_wrapped'" not in warm
    assert list((tmp_path / "cache" / "research" / "jax").glob("jit_wrapped-*"))


def test_compile_cache_off_turns_jax_persistent_cache_off_and_back_on(tmp_path):
    """compile_cache=off parses to None (test_compile_cache_settings), which
    research/pipelines/run.py hands use_compile_cache: jax then neither reads nor writes a
    cache; a directory turns it back on there. Checked in this process, whose own cache
    settings are restored afterwards."""
    import jax

    from research.platform import use_compile_cache

    own = jax.config.jax_compilation_cache_dir
    min_time = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        assert use_compile_cache(None) is None
        assert not jax.config.jax_enable_compilation_cache
        assert jax.config.jax_compilation_cache_dir is None
        assert use_compile_cache(str(tmp_path / "c")) == tmp_path / "c"
        assert jax.config.jax_enable_compilation_cache and (tmp_path / "c").is_dir()
    finally:
        use_compile_cache(own)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", min_time)
    assert jax.config.jax_compilation_cache_dir == own


def test_compile_cache_settings(tmp_path, monkeypatch):
    import jax

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    own = jax.config.jax_compilation_cache_dir  # the suite's (tests/conftest.py)
    assert own and compile_cache_dir("default") == Path(own)  # JAX's variable comes first
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        assert compile_cache_dir("default") == tmp_path / "research" / "jax"
    finally:
        jax.config.update("jax_compilation_cache_dir", own)
    assert compile_cache_dir(None) is None
    assert compile_cache_dir("~/x") == Path.home() / "x"
    assert parse_experiment(compose_raw("compile_cache=off")).compile_cache is None
    assert parse_experiment(compose_raw(f"compile_cache={tmp_path}")).compile_cache == str(tmp_path)
    with pytest.raises(ConfigError, match="compile_cache: got 5; must be default"):
        parse_experiment(compose_raw("compile_cache=5"))
