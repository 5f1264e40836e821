"""Extension points of the one training loop (`research.runner.train.make_train`).

A method that changes how runs train (an env schedule, reward shaping, a regulariser
towards a checkpoint, a reset between updates, extra diagnostics) is one `Extension`:
a small frozen object whose hooks the loop calls at fixed points of every update. The
loop knows no method by name; `make_train(agent, env, ..., extensions=(...))` runs
whichever it is given, in order.

Per update, for a run, the loop does:

    env_params = fold(ext.env_params)            which env the rollout steps
    act        = fold(ext.act)                   who acts (e.g. a guide policy's roll-in)
    batch      = rollout(act, env_params)
    batch      = fold(ext.on_batch)              what the agent learns from
    agent.update(batch, penalty=sum(ext.loss))   extra loss terms, differentiated with it
    agent      = fold(ext.after_update)          state transforms between updates

at the start `ext.start` (may replace the agent state, e.g. adopt a checkpoint), and at
the end of every segment `ext.on_segment` (its metrics row, from its per-update metrics
and, for diagnostics or an in-training evaluation, the agent state; it may also change
the state, e.g. a reset every K segments). Hooks act per run, but for one: `population`,
called by the batched program (research.runner.execute) after each segment on a device's
whole block of runs, for what needs several runs at once (population-based training,
research.extensions.pbt).

Each extension may carry its own per-run state through the scan (`start` returns it)
and has its own traced values: the leaf `RunParams.ext[ext.name]` of the run's
parameters, vmapped like any hyperparameter, so its strengths can be swept without
recompiling. Everything static (sizes, schedules'
kinds, functions) is a field of the extension object.

The base class's hooks do nothing, so an extension defines only the hooks it needs, and a
trainer without extensions is the plain loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class RunParams:
    """A run's traced parameters beyond the agent's hyperparameters: the env's params and,
    by extension name, each extension's own traced values (leaves [R] across runs)."""

    env: Any
    ext: dict[str, Any]


def split_params(params: Any) -> tuple[Any, dict[str, Any]]:
    """(env params, extensions' traced values) of plain EnvParams or a RunParams."""
    if isinstance(params, RunParams):
        return params.env, params.ext
    return params, {}


class Start(NamedTuple):
    """What `Extension.start` sees when a run is initialised.

    fresh: the agent state from this run's own key; loaded: the given initial state or
    None; agent_state: the state chosen so far (loaded if given, else fresh, as changed by
    earlier extensions)."""

    key: jax.Array
    fresh: Any
    loaded: Any
    agent_state: Any
    hparams: Any
    env_params: Any
    traced: Any


class Step(NamedTuple):
    """What a hook sees of the loop at one update.

    update: [] int32, updates done before this one, the same in every run of a batch (not
    batched under vmap, so `lax.cond(step.update % k == 0, ...)` runs one branch: "every K
    updates" costs only every K); num_updates: static total.
    env_params: those of this update's rollout. traced: the extension's own traced values
    (None if it has none). key: a key of the extension's own for this update, a stream
    apart from the loop's and the other extensions' (unused keys cost nothing).
    agent_state: the agent state the update starts from (on_segment: the current one)."""

    update: jax.Array
    num_updates: int
    hparams: Any
    env_params: Any
    traced: Any
    key: jax.Array
    agent_state: Any

    @property
    def progress(self) -> jax.Array:
        """Fraction of training done before this update, []."""
        return self.update / self.num_updates


class Extension:
    """Base of every extension: all hooks are the identity. Subclasses are frozen
    dataclasses; `name` is the key of their traced values and must be unique in a trainer.
    `traced` (a class attribute): whether the run's params carry RunParams.ext[name].
    """

    name: str = "extension"
    traced = False
    # Runs whose states this extension mixes (a PBT population): each group of
    # `group_size` consecutive runs stays inside one device's block of every chunk.
    group_size = 1

    def start(self, s: Start) -> tuple[Any, Any]:
        """(agent state to train from, this extension's per-run state)."""
        return s.agent_state, None

    def env_params(self, env_params: Any, traced: Any, update: jax.Array) -> Any:
        """The env params of the rollout at `update` (update 0 also resets the envs)."""
        return env_params

    def act(self, act: Callable, state: Any, step: Step) -> Callable:
        """The acting function of this update's rollout, given the one so far:
        act(obs [N, ...], key, env_state [N]) -> (action [N, ...], aux)."""
        return act

    def on_batch(self, batch: Any, state: Any, step: Step) -> tuple[Any, Any, Any]:
        """(batch [T, N] the agent learns from, new state, per-update metrics pytree)."""
        return batch, state, None

    def loss(self, params: Any, obs: jax.Array, state: Any, step: Step) -> jax.Array | None:
        """A [] term added to the agent's loss at every gradient step. Override it only to
        add one (the base's None means no term, and no penalty reaches the agent).

        params: those being differentiated; obs: the minibatch's observations as the
        network sees them [..., *obs_shape]."""
        return None

    def after_update(
        self, agent_state: Any, state: Any, step: Step, previous: Any
    ) -> tuple[Any, Any]:
        """(agent state, state) after the agent's update; `previous` is the agent state
        before it (for churn, or to undo)."""
        return agent_state, state

    def on_segment(
        self, agent_state: Any, state: Any, metrics: Any, step: Step
    ) -> tuple[Any, Any, dict[str, jax.Array]]:
        """(agent state, state, metrics row) at the end of a segment; `metrics` are this
        extension's per-update ones (leaves [U, ...]), the default row their means. Here
        step.update counts the updates done so far, segment included."""
        row = {} if metrics is None else jax.tree.map(jnp.mean, metrics)
        return agent_state, state, row

    def population(
        self, runner: Any, hparams: Any, metrics: dict, index: jax.Array, slot: int
    ) -> tuple[Any, Any, dict]:
        """(runner, hparams, metrics row) of a device's block of runs after segment `index`:
        the one hook that sees several runs at once (population-based training copies one
        run's state over another's). runner: the block's RunnerState, leaves [B, ...];
        hparams [B]; metrics the segment's row {name: [B]}; index [] int32, unbatched;
        runner.ext[slot] is this extension's per-run state. B is a multiple of
        `group_size`, and groups of `group_size` consecutive runs never straddle a block.
        Only extensions that override it are called, so others leave the program as it is.
        """
        return runner, hparams, metrics


def mixes_runs(e: Extension) -> bool:
    """Whether `e` overrides `population` (acts on a block of runs)."""
    return type(e).population is not Extension.population


def population(
    extensions: tuple[Extension, ...], runner: Any, hparams: Any, metrics: dict, index: Any
) -> tuple[Any, Any, dict]:
    """Every run-mixing extension's `population` hook, in order, on a block [B]; the
    identity (no operation traced at all) when none overrides it."""
    for slot, e in enumerate(extensions):
        if mixes_runs(e):
            runner, hparams, metrics = e.population(runner, hparams, metrics, index, slot)
    return runner, hparams, metrics


def loss_term(e: Extension, params: Any, obs: Any, state: Any, step: Step) -> jax.Array:
    """e's loss term, or a clear error where an override gave none."""
    term = e.loss(params, obs, state, step)
    if term is None:
        raise ValueError(f"extension {e.name!r} overrides loss but returned None")
    return term


def check_traced(extensions: tuple[Extension, ...], ext_params: dict[str, Any]) -> None:
    """The run's RunParams.ext holds exactly the traced values its extensions need."""
    needed = {e.name for e in extensions if e.traced}
    missing, unknown = sorted(needed - set(ext_params)), sorted(set(ext_params) - needed)
    if missing or unknown:
        raise ValueError(
            f"RunParams.ext: missing {missing}, unknown {unknown}; the extensions "
            f"{[e.name for e in extensions]} take traced values {sorted(needed)}"
        )


def check_names(extensions: tuple[Extension, ...]) -> None:
    names = [e.name for e in extensions]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"extensions named {duplicated} more than once: {names}")
