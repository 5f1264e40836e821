"""A continual setting: the environment runs through a sequence of phases.

Phase i's EnvParams (`RunParams.ext["env_schedule"]`, leaves [P] per run: the run's own
variant with the i-th overrides, derived fields recomputed when built) hold from update
i * every on; after the last phase the env stays there, or with `cycle` the sequence
starts again. The run's own params are not used once a schedule is plugged in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from research.runner.extension import Extension, Step


def phase_at(update: jax.Array, every: int, num_phases: int, cycle: bool) -> jax.Array:
    """[] int32: the phase of the rollout at `update` (0-based)."""
    phase = jnp.asarray(update, jnp.int32) // every
    return phase % num_phases if cycle else jnp.minimum(phase, num_phases - 1)


@dataclass(frozen=True)
class EnvSchedule(Extension):
    every: int  # updates per phase
    num_phases: int
    cycle: bool = False
    name: str = "env_schedule"
    traced = True

    def env_params(self, env_params: Any, traced: Any, update: jax.Array) -> Any:
        phase = phase_at(update, self.every, self.num_phases, self.cycle)
        return jax.tree.map(lambda x: x[phase], traced)

    def on_segment(self, agent_state: Any, state: Any, metrics: Any, step: Step):
        # The phase of the segment's last update (step.update counts the updates done).
        phase = phase_at(step.update - 1, self.every, self.num_phases, self.cycle)
        return agent_state, state, {"env_phase": phase.astype(jnp.float32)}
