"""Shared test helpers: compose the project's real Hydra configs, train in memory, evaluate."""

import os
import tempfile
from pathlib import Path

# One persistent XLA compilation cache per test session, shared by the xdist workers (same
# PYTEST_XDIST_TESTRUNUID) and the scripts the tests start (they inherit the environment):
# many tests compile the same programs, and compiling is most of a short test's time on CPU.
# Fresh per session, so a run never reads executables of an earlier checkout. Must be set
# before jax is imported.
_session = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid{os.getpid()}"
_OWN_CACHE = str(Path(tempfile.gettempdir()) / f"research-tests-xla-{_session}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _OWN_CACHE)
# LLVM at -O2 instead of XLA's -O3: the suite is mostly compiling, and -O2 compiled the
# batched programs 29-48% faster (results/benchmarks/xla_opt_level_cpu_analysis.md). Runs keep
# the default, since PQN trained 13% slower at -O2. Tests check behaviour, not codegen.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=2"]
    ).strip()

import jax
import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from research.config import parse_experiment
from research.pipelines.train import execute, prepare
from research.runner import take

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# A PPO small enough that a test's programs compile and train in seconds.
TINY_PPO = (
    "progress=false",
    "plot=false",
    "agent.num_envs=4",
    "agent.num_steps=16",
    "agent.num_epochs=1",
    "agent.num_minibatches=1",
    "agent.hidden_sizes=[8]",
)


def compose_raw(*overrides: str) -> dict:
    """The config mapping `scripts/train.py` would receive with these overrides."""
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


# Probe environments with known answers (research/envs/probes.py), for actor-critic agents:
# (env_id, gamma, observations, best action at each or None, V at each).
PROBE_CASES = [
    ("ConstantReward-probe", 0.99, [0.0], None, [1.0]),
    ("ObsDependentReward-probe", 0.99, [-1.0, 1.0], None, [-1.0, 1.0]),
    ("TwoStepDiscount-probe", 0.5, [0.0, 1.0], None, [0.5, 1.0]),
    ("ActionDependentReward-probe", 0.99, [0.0], [1], [1.0]),
    ("ObsActionReward-probe", 0.99, [-1.0, 1.0], [0, 1], [1.0, 1.0]),
]


def train(*overrides: str):
    """(prepared, result) of the experiment these overrides compose, run in memory."""
    prepared = prepare(parse_experiment(compose_raw(*overrides)))
    return prepared, execute(prepared)


def train_alone(prepared, train, i: int) -> dict:
    """Metrics of run `i` of `prepared`'s runs axis, trained alone by `train` (a jitted
    `prepared.trainer.train`, made once by the caller so that runs share its compile)."""
    r = prepared.runs
    _, metrics = train(jax.random.key(int(r.seeds[i])), take(r.hparams, i), take(r.env_params, i))
    return {k: np.asarray(v) for k, v in metrics.items()}


def forced_devices_env(num_devices: int) -> dict:
    """The environment of a subprocess with `num_devices` forced CPU devices; the parent's
    XLA flags too (the suite's LLVM level), so only the device count differs."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count="
    return {**os.environ, "XLA_FLAGS": (flags + str(num_devices)).strip(), "JAX_PLATFORMS": "cpu"}


def train_probes(*overrides: str, gammas: tuple[float, ...]):
    """(prepared, result) of the five probes trained in one program: `AnyProbe-probe` with
    one probe per run (env.variants.probe), crossed with sweep.gamma=`gammas` and the seeds.
    One compile instead of one per probe env id."""
    from research.envs.probes import PROBES

    probes = ",".join(str(i) for i in range(len(PROBES)))
    return train(*overrides, "env=gymnax", "env.id=AnyProbe-probe",
                 f"+env.variants.probe=[{probes}]", f"sweep.gamma={list(gammas)}")  # fmt: skip


def probe_runs(prepared, result, env_id: str, gamma: float) -> tuple:
    """(hparams, agent_states) of `train_probes`' runs on probe `env_id` at `gamma`, each
    leaf [runs of it, ...]; at least one run."""
    from research.envs.probes import PROBES

    table = prepared.runs.table
    chosen = (table["env.probe"] == list(PROBES).index(env_id)) & np.isclose(table.gamma, gamma)
    index = np.flatnonzero(chosen.to_numpy())
    assert index.size, (env_id, gamma)
    pick = lambda tree: jax.tree.map(lambda x: x[index], tree)
    return pick(prepared.runs.hparams), pick(result.agent_states)


def evaluate_policy(agent, hparams, agent_states, obs_values):
    """Greedy action, its probability and V(obs) of every run at each 1-d observation,
    for agents whose `act` returns log_prob and value (PPO, REINFORCE). Arrays [R, len(obs)]."""
    obs = np.asarray(obs_values, np.float32)[:, None]
    act = jax.vmap(lambda s, h: agent.act(s, obs, jax.random.key(0), h, False))
    action, aux = act(agent_states, hparams)
    return np.asarray(action), np.exp(np.asarray(aux["log_prob"])), np.asarray(aux["value"])


def check_probe(prepared, result, case: tuple, check_value: bool = True) -> None:
    """For `train_probes`' runs on the PROBE_CASES entry `case`: every run's V(obs) is within
    0.1 of the known V (if `check_value`), and its greedy action is the best one (where the
    probe has one) with probability > 0.9."""
    env_id, gamma, obs, best_action, value = case
    hparams, states = probe_runs(prepared, result, env_id, gamma)
    action, prob, v = evaluate_policy(prepared.agent, hparams, states, obs)
    if check_value:
        np.testing.assert_allclose(v, np.broadcast_to(value, v.shape), atol=0.1)
    if best_action is not None:
        assert (action == np.asarray(best_action)).all(), action
        assert (prob > 0.9).all(), prob


def pytest_sessionfinish(session, exitstatus):
    """The controller (not an xdist worker) removes the session's own compilation cache
    (never one the user configured)."""
    if not hasattr(session.config, "workerinput"):
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
