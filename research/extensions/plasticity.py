"""Plasticity (issue 22): diagnostics measured inside the program, and interventions.

- `Diagnostics`: every `every` segments (and at the last), per run, on a probe batch of
  the latest rollout's states: the fraction of tau-dormant units of each hidden layer,
  effective rank and srank of the penultimate features, the weight norm and distance to
  the parameters the run started from (the optimiser's anchor), and the churn of the
  segment's last update (KL(pi_before || pi_after) for policies, the fraction of greedy
  actions changed for Q-values). The gradient norm is the agents' own `grad_norm`.
- `Redo` (Sokar et al. 2023), `ShrinkPerturb` (Ash & Adams 2020), `ResetLayers` (Nikishin
  et al. 2022): every K updates (static), with traced strengths, so interventions x
  strengths x seeds train in one program. Each at its off value (ReDo tau < 0, S&P alpha
  = 1 and sigma = 0, reset enabled = 0) leaves the agent state bit for bit as it is.

The maths is research/rl/diagnostics.py and research/rl/plasticity.py; this module only
decides when, on which states and with which fresh parameters. Fresh parameters are the
agent's own `init` with the extension's key of the update (a stream of its own).

Networks name their MLP torsos `*torso` (research/rl/networks.py): the first (`torso`, or
`actor_torso` of an actor-critic) is the one whose metrics carry no prefix; the others'
are prefixed by their name (`critic_dormant_0.025[0]`, `critic_feature_erank`).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from research.agents import Agent
from research.extensions.keep import is_distribution
from research.rl import diagnostics as dg
from research.rl import plasticity as pl
from research.runner.extension import Extension, Start, Step

# ------------------------------------------------------------------------------ helpers


def torsos(params: Any) -> list[str]:
    """The network's torso names, the policy's (or Q-network's) first."""
    names = [k for k in params["params"] if k.endswith("torso")]
    return sorted(names, key=lambda n: n not in ("torso", "actor_torso"))


def prefix(torso: str) -> str:
    """'' for the first torso, 'critic_' for critic_torso."""
    return "" if torso in ("torso", "actor_torso") else torso.removesuffix("torso")


def probe_indices(batch_size: int, probe_size: int) -> np.ndarray:
    """probe_size indices spread evenly over a flattened rollout of batch_size states
    (every env and the whole rollout, not its first steps only); static."""
    return np.arange(probe_size) * batch_size // probe_size


def probe_of(obs: jax.Array, probe_size: int, obs_ndim: int) -> jax.Array:
    """A rollout's obs [T, N, *obs_shape] -> the probe [probe_size, *obs_shape]."""
    flat = obs.reshape(-1, *obs.shape[obs.ndim - obs_ndim :])
    return flat[probe_indices(flat.shape[0], probe_size)]


def hidden_features(agent: Agent, params: Any, seen: jax.Array, torso: str) -> list[jax.Array]:
    """[probe, units_l] per hidden layer of `torso` (dg.hidden_activations through the
    agent's `heads`, which apply the network)."""
    return dg.hidden_activations(types.SimpleNamespace(apply=agent.heads), params, seen, torso)


def segment_due(done: jax.Array, per_segment: int, every: int, num_logs: int) -> jax.Array:
    """[] bool: whether the segment that ends after `done` updates is measured: every
    `every`-th segment and the last. done: [] int32, unbatched."""
    segment = done // per_segment
    return (done % per_segment == 0) & ((segment % every == 0) | (segment == num_logs))


def churn(agent: Agent, before: Any, after: Any, seen: jax.Array) -> jax.Array:
    """[]: how far an update moved the policy on the states `seen`: KL(before || after)
    of a policy, or the fraction of greedy actions changed of Q-values."""
    out0, out1 = agent.heads(before.params, seen)[0], agent.heads(after.params, seen)[0]
    return dg.policy_kl(out0, out1) if is_distribution(out0) else dg.greedy_changed(out0, out1)


def measure(
    agent: Agent, agent_state: Any, probe: jax.Array, taus: tuple[float, ...], delta: float
) -> dict[str, jax.Array]:
    """The diagnostics of agent_state on probe [P, *obs_shape]: a dict of [] float32.

    dormant_<tau>[l] per hidden layer l and tau; feature_erank, feature_srank of the last
    hidden layer (each torso, prefixed as `prefix`); param_norm; param_distance to the
    optimiser's anchor (the parameters the run started from)."""
    params = agent_state.params
    seen = agent.observe(agent_state, probe)
    row = {}
    for torso in torsos(params):
        hs = hidden_features(agent, params, seen, torso)
        p = prefix(torso)
        for tau in taus:
            for layer, h in enumerate(hs):
                row[f"{p}dormant_{tau:g}[{layer}]"] = dg.dormant_fraction(h, tau)
        row[f"{p}feature_erank"] = dg.effective_rank(hs[-1])
        row[f"{p}feature_srank"] = dg.srank(hs[-1], delta)
    row["param_norm"] = dg.param_norm(params)
    row["param_distance"] = dg.param_distance(params, agent_state.opt_state.anchor)
    return {k: jnp.asarray(v, jnp.float32) for k, v in row.items()}


def nan_like(tree: Any) -> Any:
    """NaNs shaped like a tree of float32 arrays (or their shapes)."""
    return jax.tree.map(lambda x: jnp.full(x.shape, jnp.nan, jnp.float32), tree)


def fresh_params(agent: Agent, key: jax.Array, hparams: Any) -> Any:
    """A fresh initialisation's parameters (the agent's own initialisers)."""
    return agent.init(key, hparams).params


def select(on: jax.Array, new: Any, old: Any) -> Any:
    """new where on [] (traced), old elsewhere, leaf by leaf: old's bits when off."""
    return jax.tree.map(lambda a, b: jnp.where(on, a, b), new, old)


def every_k(step: Step, every: int) -> jax.Array:
    """[] bool: this update is the every-th, 2 every-th, ... (1-based): unbatched."""
    return (step.update + 1) % every == 0


# --------------------------------------------------------------------------- extensions


@jax.tree_util.register_dataclass
@dataclass
class ProbeState:
    probe: jax.Array  # [P, *obs_shape] states of the latest rollout
    churn: jax.Array  # [] the last measured update's churn (NaN: none yet)


@dataclass(frozen=True)
class Diagnostics(Extension):
    """Plasticity diagnostics every `every` segments and at the last (NaN between).

    obs_shape: the env's; updates_per_log, num_logs: the trainer's (which update ends a
    segment); taus: dormancy thresholds; delta: srank's."""

    agent: Agent
    obs_shape: tuple[int, ...]
    every: int
    probe_size: int
    updates_per_log: int
    num_logs: int
    taus: tuple[float, ...] = (0.0, 0.025)
    delta: float = 0.01
    name: str = "diagnostics"

    def start(self, s: Start) -> tuple[Any, ProbeState]:
        probe = jnp.zeros((self.probe_size, *self.obs_shape), jnp.float32)
        return s.agent_state, ProbeState(probe, jnp.full((), jnp.nan))

    def on_batch(self, batch: Any, state: ProbeState, step: Step):
        probe = probe_of(batch.obs, self.probe_size, len(self.obs_shape))
        return batch, ProbeState(probe.astype(jnp.float32), state.churn), None

    def due(self, done: jax.Array) -> jax.Array:
        return segment_due(done, self.updates_per_log, self.every, self.num_logs)

    def after_update(self, agent_state: Any, state: ProbeState, step: Step, previous: Any):
        # Only the update that ends a measured segment: its churn is the row's.
        value = jax.lax.cond(
            self.due(step.update + 1),
            lambda: churn(
                self.agent, previous, agent_state, self.agent.observe(previous, state.probe)
            ),
            lambda: state.churn,
        )
        return agent_state, ProbeState(state.probe, value)

    def on_segment(self, agent_state: Any, state: ProbeState, metrics: Any, step: Step):
        def run():
            row = measure(self.agent, agent_state, state.probe, self.taus, self.delta)
            return {**row, "churn": state.churn}

        shapes = jax.eval_shape(run)
        row = jax.lax.cond(self.due(step.update), run, lambda: nan_like(shapes))
        return agent_state, state, row


@dataclass(frozen=True)
class Redo(Extension):
    """ReDo every `every` updates: each torso's tau-dormant units on the probe (the
    update's rollout) get fresh incoming weights, zero outgoing weights and zero Adam
    moments there. Logs `redo_units`: units recycled in the segment. Traced: RedoHParams."""

    agent: Agent
    obs_shape: tuple[int, ...]
    every: int
    probe_size: int
    name: str = "redo"
    traced = True

    def start(self, s: Start) -> tuple[Any, Any]:
        probe = jnp.zeros((self.probe_size, *self.obs_shape), jnp.float32)
        return s.agent_state, (probe, jnp.zeros((), jnp.int32))

    def on_batch(self, batch: Any, state: Any, step: Step):
        probe = probe_of(batch.obs, self.probe_size, len(self.obs_shape))
        return batch, (probe.astype(jnp.float32), state[1]), None

    def recycle(self, agent_state: Any, probe: jax.Array, step: Step) -> tuple[Any, jax.Array]:
        """(agent state with its dormant units recycled, how many there were [] int32)."""
        tau = step.traced.tau
        fresh = fresh_params(self.agent, step.key, step.hparams)
        seen = self.agent.observe(agent_state, probe)
        params, opt_state, units = agent_state.params, agent_state.opt_state, 0
        for torso in torsos(params):
            # Masks from the parameters before any torso is recycled (the same forward).
            hs = hidden_features(self.agent, agent_state.params, seen, torso)
            masks = [dg.dormant_mask(h, tau) for h in hs]
            params, opt_state = pl.redo(params, opt_state, fresh, masks, torso)
            units = units + sum(jnp.sum(m, dtype=jnp.int32) for m in masks)
        return agent_state.replace(params=params, opt_state=opt_state), units

    def after_update(self, agent_state: Any, state: Any, step: Step, previous: Any):
        probe, units = state
        agent_state, recycled = jax.lax.cond(
            every_k(step, self.every),
            lambda: self.recycle(agent_state, probe, step),
            lambda: (agent_state, jnp.zeros((), jnp.int32)),
        )
        return agent_state, (probe, units + recycled)

    def on_segment(self, agent_state: Any, state: Any, metrics: Any, step: Step):
        probe, units = state
        row = {"redo_units": units.astype(jnp.float32)}
        return agent_state, (probe, jnp.zeros((), jnp.int32)), row


@dataclass(frozen=True)
class ShrinkPerturb(Extension):
    """theta <- alpha * theta + sigma * theta_fresh every `every` updates (optimiser state
    kept, as Ash & Adams). Traced: ShrinkPerturbHParams."""

    agent: Agent
    every: int
    name: str = "shrink_perturb"
    traced = True

    def after_update(self, agent_state: Any, state: None, step: Step, previous: Any):
        h = step.traced

        def apply():
            fresh = fresh_params(self.agent, step.key, step.hparams)
            return agent_state.replace(
                params=pl.shrink_perturb(agent_state.params, fresh, h.alpha, h.sigma)
            )

        return jax.lax.cond(every_k(step, self.every), apply, lambda: agent_state), state


@dataclass(frozen=True)
class ResetLayers(Extension):
    """The last `layers` Dense layers of every torso-head pair (1 = the heads) <- a fresh
    initialisation, with their Adam moments zeroed, every `every` updates, in the runs
    whose traced `enabled` is set. Traced: ResetHParams."""

    agent: Agent
    every: int
    layers: int = 1
    name: str = "reset"
    traced = True

    def after_update(self, agent_state: Any, state: None, step: Step, previous: Any):
        def apply():
            fresh = fresh_params(self.agent, step.key, step.hparams)
            pick = pl.last_layers(agent_state.params, self.layers)
            params, opt_state = pl.reset_params(
                agent_state.params, agent_state.opt_state, fresh, pick
            )
            on = step.traced.enabled > 0
            new = (params, opt_state)
            params, opt_state = select(on, new, (agent_state.params, agent_state.opt_state))
            return agent_state.replace(params=params, opt_state=opt_state)

        return jax.lax.cond(every_k(step, self.every), apply, lambda: agent_state), state
