"""Pretraining for the meta-learning baselines: one agent trained through a sequence of
env variants, one variant per logged segment of the runner's own training loop.

Multi-task pretraining is this with variants drawn from the meta-training distribution
(the agent switches variant every segment, mid-episode included, as in an env shift);
single-source pretraining is the same program with one variant repeated, so both get
exactly the same updates, budget and learning-rate schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from research.runner.train import Trainer


def make_sequential(trainer: Trainer) -> Callable:
    """pretrain(key, hparams, variants) -> (agent_state, metrics), pure and jittable.

    variants: env params, every leaf [trainer.num_logs, ...]: segment s trains on variant s.
    metrics: each [num_logs], as the runner logs them.
    """

    def pretrain(key, hparams, variants):
        first = jax.tree.map(lambda x: x[0], variants)
        runner = trainer.init(key, hparams, first)
        index = jnp.arange(trainer.num_logs, dtype=jnp.int32)
        runner, metrics = jax.lax.scan(
            lambda r, xs: trainer.segment(r, hparams, *xs), runner, (variants, index)
        )
        return runner.agent_state, metrics

    return pretrain
