"""Return and advantage estimators, time-major, with termination and truncation kept apart.

Shapes: every argument is [T, ...] (time first, any batch dims after).
`next_values[t]` is V(s'_t) of the true successor of step t: on truncation that is
the value of the final observation (bootstrap), on termination it is ignored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gae(
    rewards: jax.Array,
    values: jax.Array,
    next_values: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    gamma: jax.Array | float,
    lam: jax.Array | float,
) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation.

    delta_t = r_t + gamma * (1 - term_t) * V(s'_t) - V(s_t)
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done = term | trunc

    The trace is cut at every episode end; the last step of the rollout
    bootstraps from V(s'_{T-1}).
    Returns (advantages [T, ...], value targets = advantages + values [T, ...]).
    """
    terminated = terminated.astype(rewards.dtype)
    not_done = 1.0 - jnp.maximum(terminated, truncated.astype(rewards.dtype))
    deltas = rewards + gamma * (1.0 - terminated) * next_values - values

    def backward(next_adv, x):
        delta, nd = x
        adv = delta + gamma * lam * nd * next_adv
        return adv, adv

    _, advantages = jax.lax.scan(
        backward, jnp.zeros_like(deltas[0]), (deltas, not_done), reverse=True
    )
    return advantages, advantages + values


def discounted_returns(
    rewards: jax.Array,
    terminated: jax.Array,
    truncated: jax.Array,
    bootstrap: jax.Array,
    gamma: jax.Array | float,
) -> jax.Array:
    """Discounted returns G_t within each episode segment of the rollout.

    G_t = r_t + gamma * [ (1 - done_t) * G_{t+1} + trunc_t * bootstrap_t ],  and at
    the last step G_{T-1} = r + gamma * (1 - term) * bootstrap_{T-1}.
    `bootstrap[t]` is the value estimate of s'_t (zeros for pure Monte Carlo).
    Returns [T, ...].
    """
    terminated = terminated.astype(rewards.dtype)
    truncated = truncated.astype(rewards.dtype)
    not_done = 1.0 - jnp.maximum(terminated, truncated)

    def backward(next_return, x):
        r, nd, trunc, boot = x
        g = r + gamma * (nd * next_return + trunc * boot)
        return g, g

    # Past the rollout's end an unfinished episode goes on unseen: bootstrap from V(s').
    _, returns = jax.lax.scan(
        backward, bootstrap[-1], (rewards, not_done, truncated, bootstrap), reverse=True
    )
    return returns
