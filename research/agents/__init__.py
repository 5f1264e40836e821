"""Agents: maths and state only, behind one interface (`research.agents.base.Agent`).

AGENTS is the registry: one `AgentEntry` per agent module, declared there. To add an
agent, write its module (settings, state, `make`, `ENTRY`), list it below, and add
configs/agent/<name>.yaml with its defaults (tests/test_agent_registry.py checks both).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from research.agents import dqn, ppo, q_learning, reinforce
from research.agents.base import Agent, AgentEntry
from research.config import ConfigError
from research.envs import EnvSpec, discrete_state_ids
from research.rl.optim import Optimizer

# name -> entry, in the order error messages list them
AGENTS: Mapping[str, AgentEntry] = MappingProxyType(
    {e.name: e for e in (ppo.ENTRY, q_learning.ENTRY, dqn.ENTRY, reinforce.ENTRY)}
)


def agent_of_state(state: Any) -> AgentEntry:
    """The entry of the agent whose state `state` is."""
    for entry in AGENTS.values():
        if isinstance(state, entry.state):
            return entry
    raise TypeError(f"{type(state).__name__} is the state of no registered agent")


def check_env(entry: AgentEntry, spec: EnvSpec) -> None:
    """Raises ConfigError if the agent cannot act in environments of `spec`."""

    def handles(e: AgentEntry) -> bool:
        return e.discrete_actions if spec.discrete else e.continuous_actions

    if not handles(entry):
        need, have = ("continuous", "discrete") if spec.discrete else ("discrete", "continuous")
        able = " or ".join(n for n, e in AGENTS.items() if handles(e))
        raise ConfigError(
            f"agent.name: {entry.name!r} needs {need} actions; env.id {spec.env_id!r} "
            f"has {have} actions (use {able})"
        )
    if entry.state_indices and not spec.num_states:
        raise ConfigError(
            f"agent.name: {entry.name!r} is tabular and needs discrete states; env.id "
            f"{spec.env_id!r} has observations of shape {spec.obs_shape}. Allowed: an env with "
            f"discrete states ({', '.join(discrete_state_ids())}), or env.discretize with bins, "
            "low and high per observation dimension (e.g. env=cartpole_discrete)"
        )


def make_agent(
    name: str, config: Any, spec: EnvSpec, total_updates: int, optimizer: Optimizer | None = None
) -> Agent:
    """The agent `name` with its static `config`, for environments of `spec`.

    optimizer: for gradient-based agents (frozen groups when fine-tuning); others have none.
    """
    entry = AGENTS[name]
    check_env(entry, spec)
    if entry.gradient_based:
        return entry.make(config, spec, total_updates, optimizer or Optimizer())
    return entry.make(config, spec, total_updates)


__all__ = ["AGENTS", "Agent", "AgentEntry", "agent_of_state", "check_env", "make_agent"]
