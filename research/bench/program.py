"""The program a benchmark measures: this project's batched training program, built from the
Hydra config exactly as `scripts/train.py` builds it, so that the numbers are the project's own
and not those of a benchmark-only code path. Also what the measuring process's JAX sees."""

from __future__ import annotations

import os
import platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"

# --agent name -> (Hydra overrides, default env config group). Not built from the agent
# registry (research.agents.AGENTS): importing the agents imports JAX and starts a backend,
# which the measuring parent must not. tests/test_agent_registry.py checks that every
# registered agent is here, under its own name, with a default env it can act in.
AGENTS = {
    "ppo": (("agent=ppo",), "cartpole"),
    "pqn": (("agent=dqn", "agent.mode=pqn"), "cartpole"),
    "dqn": (("experiment=dqn_cartpole",), "cartpole"),
    "q_learning": (("agent=q_learning",), "cartpole_discrete"),
    "reinforce": (("agent=reinforce",), "cartpole"),
}


def device_name(jax) -> str:
    """A human name for the device JAX uses: the CPU model for CPUs, the device kind otherwise.
    Tables name their device, since numbers from different machines do not compare."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return f"{device.platform}: {device.device_kind}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model} ({len(os.sched_getaffinity(0))} of {os.cpu_count()} cores usable)"


def probe() -> dict:
    """What this process's JAX sees (run in a subprocess with the benchmark's environment, so
    the parent never starts a JAX backend with the wrong XLA_FLAGS)."""
    import jax

    return {
        "platform": jax.devices()[0].platform,
        "device": device_name(jax),
        "device_count": jax.device_count(),
        "jax": jax.__version__,
    }


def compose_raw(*overrides: str) -> dict:
    """The config mapping `scripts/train.py` would receive with these overrides
    (as tests/conftest.py composes it)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    return raw


def agent_overrides(agent: str, env: str | None, extra: list[str]) -> list[str]:
    """Hydra overrides of one --agent / --env / --override combination."""
    overrides, default_env = AGENTS[agent]
    return [*overrides, f"env={env or default_env}", *extra]


def tree_bytes(tree) -> int:
    """Bytes of a pytree's arrays: the per-run state size the tables report."""
    import jax

    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def config_for(
    runs: int, total_timesteps: int, num_logs: int, num_devices: int | None, overrides: list[str]
):
    """The parsed config of `runs` runs of `total_timesteps` env steps each (at least one
    update per log), configured by the Hydra `overrides` (a ConfigError if it is invalid)."""
    from research.config import parse_experiment

    raw = compose_raw(
        "progress=false",
        "plot=false",
        *overrides,
        f"runs.seeds={runs}",
        f"train.num_logs={num_logs}",
        *([f"runs.num_devices={num_devices}"] if num_devices else []),
    )
    batch = raw["agent"]["num_envs"] * raw["agent"]["num_steps"]
    raw["train"]["total_timesteps"] = max(total_timesteps, batch * num_logs)
    return parse_experiment(raw)


def prepared(
    runs: int, total_timesteps: int, num_logs: int, num_devices: int | None, overrides: list[str]
):
    """`research.pipelines.train.prepare` of `config_for`'s config: the program this project
    would run, not yet compiled."""
    from research.pipelines.train import prepare

    return prepare(config_for(runs, total_timesteps, num_logs, num_devices, overrides))


def segment_args(p):
    """`research.runner.execute.lower`'s arguments for the program `p` (`prepared`): its
    runs' seeds [R], hyperparameters and env parameters (leaves [R, ...]) as device arrays,
    no initial state, segment index 0."""
    import jax
    import jax.numpy as jnp

    return (
        jnp.asarray(p.runs.seeds),
        jax.tree.map(jnp.asarray, p.runs.hparams),
        jax.tree.map(jnp.asarray, p.runs.env_params),
        None,
        jnp.int32(0),
    )
