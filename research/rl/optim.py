"""The one optimiser every neural agent steps with.

Adam whose learning rate and clipping norm are traced values (so runs with
different learning rates share one compiled program), with frozen parameter groups
for fine-tuning and optional decoupled weight decay (AdamW: Loshchilov & Hutter 2019).
The state keeps the parameters the run started from (`anchor`), which the L2-to-init
extension pulls towards (research/extensions/l2_init.py); extension loss
terms reach the agents' losses through `with_penalty`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

GROUPS = ("torso", "head")


def param_group(path: tuple) -> str:
    """'torso' or 'head' for a parameter's key path; 'other' if neither.

    Networks name their modules `*torso` (hidden layers) and `*head` (output layers,
    with a Gaussian's `log_std`); see research/rl/networks.py.
    """
    for entry in path:
        name = str(getattr(entry, "key", getattr(entry, "name", "")))
        if name.endswith("torso"):
            return "torso"
        if name.endswith("head") or name == "log_std":
            return "head"
    return "other"


@struct.dataclass
class OptState:
    adam: Any
    anchor: Any  # parameters the L2-to-init penalty pulls towards


def with_penalty(
    loss: jax.Array, penalty: Callable[[Any, jax.Array], jax.Array] | None, params: Any, obs: Any
) -> jax.Array:
    """loss + penalty(params, obs): the loop's extension loss terms
    (research.runner.extension), added inside the differentiated loss; loss if None."""
    return loss if penalty is None else loss + penalty(params, obs)


def annealed_lr(
    lr: jax.Array, num_updates: jax.Array, total_updates: int, anneal: bool
) -> jax.Array:
    """lr, or lr decayed linearly to 0 over total_updates when `anneal` (a static choice)."""
    return lr * jnp.clip(1.0 - num_updates / total_updates, 0.0, 1.0) if anneal else lr


@dataclass(frozen=True)
class Optimizer:
    """Adam + global-norm clipping; `frozen` parameter groups never change (bit-equal).

    decay: whether `step` applies decoupled weight decay (a static switch: without it the
    term is not in the program at all, so a run with no weight decay is bit-for-bit the
    plain optimiser; the pipelines switch it on when some run has a non-zero weight)."""

    frozen: tuple[str, ...] = ()
    eps: float = 1e-5
    decay: bool = False

    def __post_init__(self):
        unknown = set(self.frozen) - set(GROUPS)
        if unknown:
            raise ValueError(f"frozen groups {sorted(unknown)}; allowed: {GROUPS}")

    @property
    def _adam(self) -> optax.GradientTransformation:
        return optax.inject_hyperparams(optax.adam)(learning_rate=0.0, eps=self.eps)

    def init(self, params: Any) -> OptState:
        return OptState(self._adam.init(params), params)

    def _trainable(self, tree: Any) -> Any:
        """Leaves of frozen groups replaced by zeros (decided from static key paths)."""
        return jax.tree_util.tree_map_with_path(
            lambda path, x: jnp.zeros_like(x) if param_group(path) in self.frozen else x, tree
        )

    def step(
        self,
        opt_state: OptState,
        params: Any,
        grads: Any,
        lr: jax.Array,
        max_grad_norm: jax.Array,
        weight_decay: jax.Array | float = 0.0,
    ) -> tuple[Any, OptState, jax.Array]:
        """One step on the loss's grads.

        Frozen groups get no gradient (so they do not count towards the clipping norm)
        and no update (so kept Adam moments cannot move them, nor the decay).
        weight_decay [] (with `decay`): theta <- theta + adam_update - lr * wd * theta, as
        AdamW (the decay follows the learning rate's anneal; it never enters Adam's
        moments). A run's wd = 0 selects the plain update, so even a -0.0 parameter keeps
        its bits beside runs that decay.
        Returns (new params, new opt_state, the gradient norm before clipping).
        """
        grads = self._trainable(grads)
        grad_norm = optax.tree.norm(grads)
        scale = jnp.minimum(1.0, max_grad_norm / jnp.maximum(grad_norm, 1e-12))
        grads = jax.tree.map(lambda g: g * scale, grads)
        adam = opt_state.adam
        adam = adam._replace(
            hyperparams={**adam.hyperparams, "learning_rate": jnp.asarray(lr, jnp.float32)}
        )
        updates, adam = self._adam.update(grads, adam, params)
        if self.decay:
            wd = jnp.asarray(weight_decay, jnp.float32)
            rate = jnp.asarray(lr, jnp.float32) * wd
            updates = jax.tree.map(
                lambda u, p: jnp.where(wd == 0, u, u - rate * p), updates, params
            )
        params = optax.apply_updates(params, self._trainable(updates))
        return params, opt_state.replace(adam=adam), grad_norm
