"""Agents: maths and state only, behind one interface (`research.agents.base.Agent`)."""

from __future__ import annotations

from typing import Any

from research.agents import dqn, ppo, q_learning, reinforce
from research.agents.base import Agent
from research.envs import EnvSpec
from research.rl.optim import Optimizer

_MAKERS = {
    "ppo": ppo.make,
    "dqn": dqn.make,
    "reinforce": reinforce.make,
    "q_learning": q_learning.make,
}


def make_agent(
    name: str, config: Any, spec: EnvSpec, total_updates: int, optimizer: Optimizer | None = None
) -> Agent:
    """The agent `name` with its static `config`, for environments of `spec`.

    optimizer: for neural agents (frozen groups when fine-tuning); tabular ones have none.
    """
    if name == "q_learning":
        return _MAKERS[name](config, spec, total_updates)
    return _MAKERS[name](config, spec, total_updates, optimizer or Optimizer())


__all__ = ["Agent", "make_agent"]
