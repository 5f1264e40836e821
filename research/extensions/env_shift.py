"""The environment changes during training: from each run's env params to `after`.

Updates before `first` see the run's own params, from `last` on the shifted ones
(`RunParams.ext["env_shift"]`, per run), linearly interpolated in between (first == last:
a step change). Derived fields are recomputed (research.envs.interpolate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from research.envs import interpolate
from research.runner.extension import Extension


def shift_weight(update: jax.Array, start: int, end: int) -> jax.Array:
    """0 before `start`, 1 from `end` on, linear in between; []."""
    weight = jnp.clip((update - start) / max(end - start, 1), 0.0, 1.0)
    return jnp.where(update >= end, 1.0, weight)


@dataclass(frozen=True)
class ShiftEnvParams(Extension):
    env_id: str
    first: int  # the first update that sees any change
    last: int  # the first update that sees the full change
    name: str = "env_shift"
    traced = True

    def env_params(self, env_params: Any, traced: Any, update: jax.Array) -> Any:
        weight = shift_weight(update, self.first, self.last)
        return interpolate(self.env_id, env_params, traced, weight)
