"""L2-to-init: a pull towards the parameters the run started from (the checkpoint when
fine-tuning), loss term `l2_init / 2 * |params - anchor|^2` with the agent's traced
hyperparameter `l2_init` (so it is swept and searched like any other).

The anchor is the optimiser state's (set at init, and by adoption to the adopted params:
research.extensions.finetune), read from the state each update starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

from research.runner.extension import Extension, Step


def l2_penalty(params: Any, anchor: Any, weight: jax.Array) -> jax.Array:
    """weight / 2 * sum of squared differences over every leaf; []."""
    diff = jax.tree.map(lambda p, a: p - a, params, anchor)
    return 0.5 * weight * optax.tree.norm(diff, squared=True)


@dataclass(frozen=True)
class L2Init(Extension):
    name: str = "l2_init"

    def loss(self, params: Any, obs: jax.Array, state: None, step: Step) -> jax.Array:
        anchor = step.agent_state.opt_state.anchor
        return l2_penalty(params, anchor, jnp.asarray(step.hparams.l2_init, jnp.float32))
