"""`make_train`: the only training loop, for one run, as pure jittable functions.

A run is split into `num_logs` equal segments of updates. Each segment returns
one row of metrics, so metrics are logged at an interval, never every step.
The batched executor (`research.runner.execute`) scans segments over a vmapped
batch of runs; `train` here is the same computation for a single run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import struct

from research.agents import Agent
from research.config.schema import ON_DIVERGE
from research.envs import Env, EnvState
from research.rl.rollout import reset_envs, rollout
from research.runner.extension import (
    Extension,
    Start,
    Step,
    check_names,
    check_traced,
    loss_term,
    split_params,
)


@struct.dataclass
class RunnerState:
    agent_state: Any
    env_state: EnvState  # [N]
    obs: jax.Array  # [N, *obs_shape]
    key: jax.Array
    num_updates: jax.Array  # [] int32
    ext: tuple = ()  # each extension's per-run state, in the trainer's order
    # [] int32: the first update whose losses or parameters were not finite, -1 while none
    # was; None when the trainer does not track divergence (on_diverge=None).
    diverged_at: Any = None


class Trainer(NamedTuple):
    """Pure functions of one run. Statics (sizes, counts) are closed over.

    init(key, hparams, env_params, init_state=None) -> RunnerState
    segment(runner, hparams, env_params, index []) -> (runner, metrics: dict of [] scalars)
    train(key, hparams, env_params, init_state=None) -> (agent_state, metrics: dict of [num_logs])
    """

    init: Callable[..., RunnerState]
    segment: Callable[..., tuple[RunnerState, dict]]
    train: Callable[..., tuple[Any, dict]]
    num_logs: int
    steps_per_segment: int
    extensions: tuple = ()  # the plugged-in methods, in the order their hooks run


def all_finite(tree: Any) -> jax.Array:
    """[] bool: every floating leaf of `tree` is finite (True for a tree without any)."""
    leaves = [
        jnp.isfinite(x).all()
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def mask_diverged(metrics: dict, diverged: jax.Array) -> dict:
    """A segment's metrics row ([] each) with every float metric NaN and `episodes` 0 where
    `diverged` ([] bool): a diverged run reports no return, loss or measure from the
    segment it diverged in on. env_steps and diverged_at stay as they are."""
    kept = ("env_steps", "diverged_at")

    def mask(name, x):
        if name in kept:
            return x
        if jnp.issubdtype(x.dtype, jnp.inexact):
            return jnp.where(diverged, jnp.nan, x)
        return jnp.where(diverged, jnp.zeros_like(x), x) if name == "episodes" else x

    return {k: mask(k, v) for k, v in metrics.items()}


def episode_metrics(done: jax.Array, episode_return: jax.Array, episode_length: jax.Array) -> dict:
    """Mean return and length of the episodes that ended (NaN if none did; never a fake 0)."""
    count = done.sum()
    mean = lambda x: jnp.where(
        count > 0, jnp.sum(jnp.where(done, x, 0.0)) / jnp.maximum(count, 1), jnp.nan
    )
    return {
        "episode_return": mean(episode_return),
        "episode_length": mean(episode_length),
        "episodes": count,
    }


# Extensions' keys are sub-streams tagged apart from the loop's own: fold_in(k, i) equals
# split(k, n)[i] for small i, so folding an extension's index into a key the loop also
# splits would hand it the loop's own keys (epoch, minibatch, replay-sample keys).
_START_KEY, _UPDATE_KEY, _SEGMENT_KEY = 1 << 28, 1 << 29, 1 << 30


def _ext_keys(key: jax.Array, tag: int, n: int) -> list[jax.Array]:
    root = jax.random.fold_in(key, tag)
    return [jax.random.fold_in(root, i) for i in range(n)]


def make_train(
    agent: Agent,
    env: Env,
    num_envs: int,
    num_steps: int,
    num_updates: int,
    num_logs: int,
    extensions: Sequence[Extension] = (),
    on_diverge: str | None = "continue",
) -> Trainer:
    """One run: `num_updates` updates of `num_envs * num_steps` env steps each.

    num_updates must be a multiple of num_logs (the config layer rounds it). An
    `init_state` continues training exactly as it is (resume) unless an extension's
    `start` adopts it otherwise (research.extensions.finetune). `extensions` plug
    methods into the loop (research.runner.extension); with any that has traced values,
    the run's `env_params` is a `RunParams(env, ext)`, else the env's own params.

    on_diverge: every update checks that the agent's losses (gradient norm included where
    the agent logs it) and its parameters (`params` of a gradient-based agent, the whole
    state of a tabular one) are finite; the first update that is not is logged as
    `diverged_at` (-1: none), and from the segment it falls in on the run logs NaN for
    every metric but env_steps (episodes 0). "continue": the run trains on as it is;
    "stop": its agent and extension states stay as they were before that update (its last
    finite ones, which the final state and a checkpoint then hold). None: no check and
    no `diverged_at`, the loop as before it had one (for measuring the check's cost).
    """
    if on_diverge not in (*ON_DIVERGE, None):
        raise ValueError(f"on_diverge: got {on_diverge!r}; one of {ON_DIVERGE} or None")
    if num_updates % num_logs:
        raise ValueError(f"num_updates={num_updates} is not a multiple of num_logs={num_logs}")
    extensions = tuple(extensions)
    check_names(extensions)
    updates_per_log = num_updates // num_logs
    has_loss = tuple(type(e).loss is not Extension.loss for e in extensions)
    # A gradient-based agent (the one kind with `heads`) keeps its network in state.params
    # (AgentEntry's contract); a tabular one is its state. Replay buffers stay unchecked:
    # a non-finite observation reaches the losses anyway, without a pass over the buffer.
    watched = (lambda s: s.params) if agent.heads is not None else (lambda s: s)

    def track(runner, old_agent, old_ext, agent_state, states, finite, update):
        """(agent state, extension states, diverged_at) after an update (or a segment's
        hooks) whose outcome is `finite` ([] bool)."""
        if on_diverge is None:
            return agent_state, states, None
        fresh = jnp.logical_and(runner.diverged_at < 0, jnp.logical_not(finite))
        diverged_at = jnp.where(fresh, update, runner.diverged_at)
        if on_diverge == "stop":
            keep = lambda old, new: jax.tree.map(
                lambda a, b: jnp.where(diverged_at >= 0, a, b), old, new
            )
            agent_state, states = keep(old_agent, agent_state), keep(old_ext, states)
        return agent_state, states, diverged_at

    def env_params_at(env_params, ext_params, update):
        for e in extensions:
            env_params = e.env_params(env_params, ext_params.get(e.name), update)
        return env_params

    def steps_at(update, runner, hparams, env_params, ext_params, keys):
        return [
            Step(update, num_updates, hparams, env_params, ext_params.get(e.name), key,
                 runner.agent_state)
            for e, key in zip(extensions, keys)
        ]  # fmt: skip

    def init(key, hparams, env_params, init_state=None) -> RunnerState:
        env_params, ext_params = split_params(env_params)
        check_traced(extensions, ext_params)
        agent_key, env_key, run_key = jax.random.split(key, 3)
        fresh = agent.init(agent_key, hparams)
        agent_state = fresh if init_state is None else init_state
        states = []
        for e, k in zip(extensions, _ext_keys(run_key, _START_KEY, len(extensions))):
            start = Start(k, fresh, init_state, agent_state, hparams, env_params,
                          ext_params.get(e.name))  # fmt: skip
            agent_state, state = e.start(start)
            states.append(state)
        reset_params = env_params_at(env_params, ext_params, 0)
        obs, env_state = reset_envs(env, env_key, reset_params, num_envs)
        zero = jnp.zeros((), jnp.int32)
        diverged_at = None if on_diverge is None else jnp.full((), -1, jnp.int32)
        return RunnerState(agent_state, env_state, obs, run_key, zero, tuple(states), diverged_at)

    def one_update(runner: RunnerState, hparams, env_params, update: jax.Array):
        """update: [] int32, the index of this update, the same for every run of a batch (so
        an extension's `lax.cond` on it stays a branch under vmap, not a select)."""
        env_params, ext_params = split_params(env_params)
        key, rollout_key, update_key = jax.random.split(runner.key, 3)
        env_params = env_params_at(env_params, ext_params, update)
        keys = _ext_keys(update_key, _UPDATE_KEY, len(extensions))
        steps = steps_at(update, runner, hparams, env_params, ext_params, keys)
        act = lambda obs, k, env_state: agent.act(runner.agent_state, obs, k, hparams, True)
        for i, e in enumerate(extensions):
            act = e.act(act, runner.ext[i], steps[i])
        (env_state, obs), batch = rollout(
            env, act, env_params, runner.env_state, runner.obs, rollout_key, num_steps
        )
        done = jnp.logical_or(batch.terminated, batch.truncated)
        episodes = {"done": done, "return": batch.episode_return, "length": batch.episode_length}
        states, ext_metrics = list(runner.ext), []
        for i, e in enumerate(extensions):
            batch, states[i], metrics = e.on_batch(batch, states[i], steps[i])
            ext_metrics.append(metrics)
        terms = [(e, states[i], steps[i]) for i, e in enumerate(extensions) if has_loss[i]]
        penalty = None
        if terms:
            penalty = lambda params, obs: sum(
                loss_term(e, params, obs, s, st) for e, s, st in terms
            )
        agent_state, losses = agent.update(
            runner.agent_state, batch, update_key, hparams, penalty=penalty
        )
        for i, e in enumerate(extensions):
            agent_state, states[i] = e.after_update(
                agent_state, states[i], steps[i], runner.agent_state
            )
        finite = None
        if on_diverge is not None:
            finite = jnp.logical_and(all_finite(losses), all_finite(watched(agent_state)))
        agent_state, states, diverged_at = track(
            runner, runner.agent_state, runner.ext, agent_state, tuple(states), finite, update
        )
        runner = RunnerState(
            agent_state, env_state, obs, key, runner.num_updates + 1, states, diverged_at
        )
        return runner, (losses, episodes, tuple(ext_metrics))

    def segment(runner: RunnerState, hparams, env_params, index) -> tuple[RunnerState, dict]:
        """index: [] int32, which segment this is (unbatched, like one_update's `update`)."""
        first = index * updates_per_log
        runner, (losses, episodes, ext_metrics) = jax.lax.scan(
            lambda r, u: one_update(r, hparams, env_params, u),
            runner,
            first + jnp.arange(updates_per_log, dtype=jnp.int32),
        )
        metrics = {
            "env_steps": runner.num_updates * (num_envs * num_steps),
            **episode_metrics(episodes["done"], episodes["return"], episodes["length"]),
            **jax.tree.map(jnp.mean, losses),
        }
        env_params, ext_params = split_params(env_params)
        done_updates = first + updates_per_log
        # The env of the segment's last update (not the next one's, across a shift).
        env_params = env_params_at(env_params, ext_params, done_updates - 1)
        keys = _ext_keys(runner.key, _SEGMENT_KEY, len(extensions))
        steps = steps_at(done_updates, runner, hparams, env_params, ext_params, keys)
        agent_state, states = runner.agent_state, list(runner.ext)
        reserved = set() if on_diverge is None else {"diverged_at"}
        for i, (e, m) in enumerate(zip(extensions, ext_metrics)):
            agent_state, states[i], row = e.on_segment(agent_state, states[i], m, steps[i])
            clash = sorted(set(row) & (set(metrics) | reserved))
            if clash:
                raise ValueError(f"extension {e.name!r} logs {clash}, which are logged already")
            metrics.update(row)
        if on_diverge is None:
            return runner.replace(agent_state=agent_state, ext=tuple(states)), metrics
        # A segment's hooks (resets, evaluations) can make the parameters non-finite too.
        agent_state, states, diverged_at = track(
            runner, runner.agent_state, runner.ext, agent_state, tuple(states),
            all_finite(watched(agent_state)), done_updates - 1,
        )  # fmt: skip
        metrics = mask_diverged({**metrics, "diverged_at": diverged_at}, diverged_at >= 0)
        runner = runner.replace(agent_state=agent_state, ext=states, diverged_at=diverged_at)
        return runner, metrics

    def train(key, hparams, env_params, init_state=None):
        runner = init(key, hparams, env_params, init_state)
        runner, metrics = jax.lax.scan(
            lambda r, i: segment(r, hparams, env_params, i),
            runner,
            jnp.arange(num_logs, dtype=jnp.int32),
        )
        return runner.agent_state, metrics

    steps_per_segment = updates_per_log * num_envs * num_steps
    return Trainer(init, segment, train, num_logs, steps_per_segment, extensions)
