"""One registry entry per environment: a user's own env and potential (tests/own_env.py),
registered from outside research/ and trained from the command line; registry lookups and
errors; `import_modules` errors."""

import os
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from research.config import ConfigError, parse_experiment
from research.envs import EnvEntry, available, entry, make_gymnax, register, variant_grid
from research.envs.shaping import goal_distance, progress_potential
from research.pipelines.run import saved_config
from research.results import load_metrics
from tests import own_env
from tests.conftest import compose_raw

ROOT = Path(__file__).resolve().parents[1]


def test_own_env_trains_from_the_command_line_with_its_own_potential(tmp_path):
    """scripts/train.py imports tests.own_env (import_modules) before env.id is checked;
    scripts/ is first on its sys.path, so the repo root comes from PYTHONPATH=."""
    cmd = [
        sys.executable,
        "scripts/train.py",
        "import_modules=[tests.own_env]",
        "env=gymnax",
        f"env.id={own_env.ENV_ID}",
        "agent=ppo",
        "agent.num_steps=32",
        "train.total_timesteps=2048",
        "train.num_logs=4",
        "runs.seeds=2",
        "+shaping.kind=potential",
        "+shaping.potential=progress",
        "+shaping.name=closeness",
        "progress=false",
        "plot=false",
        f"output_root={tmp_path}",
    ]
    env = {**os.environ, "PYTHONPATH": "."}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = [p for p in tmp_path.glob("*/*") if p.is_dir()]
    _, metrics = load_metrics(run_dir)
    assert metrics["shaped_return"].shape == (2, 4)
    assert np.isfinite(metrics["shaped_return"]).all()
    assert not np.allclose(metrics["shaped_return"], metrics["episode_return"])
    # The saved config keeps import_modules, so resume and reproduce import the module too.
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["import_modules"] == ["tests.own_env"]
    assert saved_config(run_dir)[0].env.id == own_env.ENV_ID


def test_own_env_is_looked_up_like_the_built_ins():
    assert own_env.ENV_ID in available()
    env, params = make_gymnax(own_env.ENV_ID)
    assert isinstance(env, own_env.LineWalk) and params.size == 6
    assert progress_potential(own_env.ENV_ID, None) is own_env.closeness
    assert goal_distance(own_env.ENV_ID) is own_env.cells_to_goal
    obs = jnp.array([[0.0], [1.0]])
    np.testing.assert_allclose(own_env.closeness(obs, params), [-1.0, 0.0])
    with pytest.raises(ConfigError, match=r"env.params.size: got 1; must be an int with 2 <= x"):
        variant_grid(own_env.ENV_ID, params, {"size": 1}, {})


def test_entry_of_a_plain_gymnax_id_is_empty_and_built_ins_have_theirs():
    plain = entry("Catch-bsuite")  # a gymnax id no module registers
    assert plain.factory is None and not plain.potentials and plain.goal_distance is None
    assert not plain.derived and plain.check is None and not plain.discrete_states
    assert not plain.ranges and entry("Pendulum-v1").ranges  # Pendulum is registered now
    assert set(entry("CartPole-v1").derived) == {"total_mass", "polemass_length"}
    assert set(entry("MountainCar-v0").potentials) == {"height", "position"}
    assert "max_drawdown" in entry("Trading-v0").episode_metrics
    assert entry("GridWorld-tabular").discrete_states
    with pytest.raises(TypeError):
        entry("CartPole-v1").potentials["new"] = lambda obs, p: obs  # read-only after register


def test_register_refuses_a_second_entry_unless_replace():
    original = entry(own_env.ENV_ID)
    with pytest.raises(ValueError, match=r"environment 'LineWalk-own' is already registered"):
        register(EnvEntry(own_env.ENV_ID, own_env.LineWalk))
    try:
        register(EnvEntry(own_env.ENV_ID, own_env.LineWalk), replace=True)
        assert not entry(own_env.ENV_ID).potentials
    finally:
        register(original, replace=True)
    assert entry(own_env.ENV_ID) is original


def test_register_refuses_to_shadow_gymnax_and_a_missing_factory():
    with pytest.raises(ValueError, match=r"'CartPole-v1' is already registered \(by gymnax\)"):
        register(EnvEntry("CartPole-v1", own_env.LineWalk), replace=True)
    with pytest.raises(ValueError, match=r"'NoSuchEnv-v0' has no factory and is not a gymnax"):
        register(EnvEntry("NoSuchEnv-v0"))
    assert "NoSuchEnv-v0" not in available()


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "import_modules=[no_such_module_for_tests]",
            "import_modules: cannot import 'no_such_module_for_tests': "
            "No module named 'no_such_module_for_tests'",
        ),
        ("import_modules=tests.own_env", "import_modules: got 'tests.own_env'; must be a list"),
        ("import_modules=[1]", "import_modules[0]: got 1; must be a module name"),
    ],
)
def test_import_modules_errors(override, message):
    with pytest.raises(ConfigError) as error:
        parse_experiment(compose_raw(override))
    assert message in str(error.value)


def test_import_modules_registers_before_env_id_is_used():
    config = parse_experiment(
        compose_raw("import_modules=[tests.own_env]", "env=gymnax", f"env.id={own_env.ENV_ID}")
    )
    assert config.env.id == own_env.ENV_ID
