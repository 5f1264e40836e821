"""The one interface every agent implements (see DESIGN.md).

An agent is three pure functions over its own `flax.struct` state; static
settings and the env spec are closed over by the agent's `make`:

    init(key, hparams) -> state
    act(state, obs [N, ...], key, hparams, explore) -> (action [N, ...], aux)
    update(state, batch: Transition [T, N], key, hparams, penalty=None)
        -> (state, metrics: dict of scalars)

    value(state, obs [..., *obs_shape]) -> V(obs) [...]   (critic, or max_a Q)

`aux` is whatever `update` later needs from acting time (log-probs, values). `value`
serves learned shaping potentials. `penalty(params, obs [..., *obs_shape]) -> []`, when
given, is added to the loss at every gradient step (the loop's extension loss terms,
research.runner.extension).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Agent(NamedTuple):
    init: Callable[..., Any]
    act: Callable[..., tuple[Any, Any]]
    update: Callable[..., tuple[Any, dict]]
    value: Callable[..., Any]
