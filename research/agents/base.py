"""The one interface every agent implements (see DESIGN.md).

An agent is three pure functions over its own `flax.struct` state; static
settings and the env spec are closed over by the agent's `make`:

    init(key, hparams) -> state
    act(state, obs [N, ...], key, hparams, explore) -> (action [N, ...], aux)
    update(state, batch: Transition [T, N], key, hparams) -> (state, metrics: dict of scalars)

`aux` is whatever `update` later needs from acting time (log-probs, values).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple


class Agent(NamedTuple):
    init: Callable[..., Any]
    act: Callable[..., tuple[Any, Any]]
    update: Callable[..., tuple[Any, dict]]
