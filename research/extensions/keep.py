"""Fine-tuning that keeps what the checkpoint knew (issue: forgetting).

Plain fine-tuning can lose a checkpoint that already solved the target (Wolczyk et al.
2024). Each method here is one extension of the loop, its strength a traced value of the
run (`RunParams.ext[name]`), so methods x weights x targets x seeds train in one program:

- `Distill` (kickstarting): weight * KL(pi_0 || pi) on the states of each minibatch; for
  Q agents weight * 1/2 sum_a (Q - Q_0)^2.
- `BehaviourCloning`: weight * -log pi(a_0 | s_0) on source states s_0 stored with the
  checkpoint and the checkpoint's greedy actions a_0 there (Q agents: the softmax of Q).
- `EWC`: weight / 2 * sum_i F_i (theta_i - theta_0,i)^2 with F the diagonal Fisher of the
  checkpoint's policy (and critic) on the stored source states.
- `GuideRollIn` (jump-start RL): the checkpoint acts the first h steps of every episode.
- `SourceEval` (forgetting measured during training): every K segments the greedy return
  on the run's source task and KL(pi_0 || pi) on its stored states.

pi_0 is the checkpoint's own policy (the loaded parameters, even where fine-tuning
re-initialised the heads), held frozen in the extension's per-run state. Weights follow
the shared schedules (research.rl.shaping.schedule_factor) or the "gated" one: on only
while the learner's greedy return on its task is below the checkpoint's (`Weighted`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from research.agents import Agent
from research.config import WEIGHT_SCHEDULES
from research.rl.distributions import Categorical, DiagGaussian, kl
from research.rl.shaping import schedule_factor
from research.runner.extension import Extension, Start, Step

# ------------------------------------------------------------------------------ maths


def is_distribution(out: Any) -> bool:
    return isinstance(out, (Categorical, DiagGaussian))


def divergence(out0: Any, out: Any) -> jax.Array:
    """Per state [...]: KL(pi_0 || pi) of two action distributions, or, for Q-values
    [..., A], 1/2 sum_a (Q - Q_0)^2 (a regression towards the checkpoint's Q)."""
    if is_distribution(out):
        return kl(out0, out)
    return 0.5 * jnp.sum((out - out0) ** 2, axis=-1)


def clone_loss(out: Any, action: jax.Array) -> jax.Array:
    """Per state [...]: -log pi(action | s); for Q-values [..., A], the cross-entropy of the
    softmax of Q with the action."""
    if is_distribution(out):
        return -out.log_prob(action)
    return -Categorical(out).log_prob(action)


def fisher_diagonal(
    heads: Callable, params: Any, obs: jax.Array, key: jax.Array, chunk: int = 16
) -> Any:
    """Diagonal Fisher of the policy at `params`, averaged over obs [B, *obs_shape]: a tree
    like params.

    F = E_s E_{a ~ pi(s)} [(d log pi(a|s) / d theta)^2], the inner expectation exact for
    a Categorical (or the softmax of Q-values), one sampled action for a Gaussian; for an
    actor-critic, plus the critic's (dV/dtheta)^2 (a unit-variance Gaussian likelihood).
    States are summed in chunks of at most `chunk` (the largest size dividing B): per-state
    gradients of a whole batch would hold B copies of the parameters.
    """

    def log_probs(p, s, a):
        out, _ = heads(p, s[None])
        return (out if is_distribution(out) else Categorical(out)).log_prob(a[None])[0]

    def one_state(s, k):
        out, _ = heads(params, s[None])
        square = lambda g: jax.tree.map(jnp.square, g)
        if isinstance(out, DiagGaussian):
            a = out.sample(k)[0]
            fisher = square(jax.grad(log_probs)(params, s, a))
        else:
            logits = out.logits if is_distribution(out) else out
            probs = jax.nn.softmax(logits[0])
            actions = jnp.arange(probs.shape[0])
            grads = jax.vmap(lambda a: square(jax.grad(log_probs)(params, s, a)))(actions)
            fisher = jax.tree.map(lambda g: jnp.tensordot(probs, g, axes=1), grads)
        if is_distribution(out):
            value = lambda p: heads(p, s[None])[1][0]
            fisher = jax.tree.map(jnp.add, fisher, square(jax.grad(value)(params)))
        return fisher

    batch = obs.shape[0]
    chunk = math.gcd(batch, chunk)
    keys = jax.random.split(key, batch)
    shape = lambda x: x.reshape(batch // chunk, chunk, *x.shape[1:])

    def add_chunk(total, xs):
        s, k = xs
        part = jax.vmap(one_state)(s, k)
        return jax.tree.map(lambda t, f: t + f.sum(0), total, part), None

    zeros = jax.tree.map(jnp.zeros_like, params)
    total, _ = jax.lax.scan(add_chunk, zeros, (shape(obs), shape(keys)))
    return jax.tree.map(lambda t: t / batch, total)


def ewc_penalty(params: Any, anchor: Any, fisher: Any, weight: jax.Array) -> jax.Array:
    """weight / 2 * sum F (params - anchor)^2 over every leaf; []."""
    terms = jax.tree.map(lambda p, a, f: jnp.sum(f * (p - a) ** 2), params, anchor, fisher)
    return 0.5 * weight * sum(jax.tree.leaves(terms))


GATED = WEIGHT_SCHEDULES.index("gated")


def gate_factor(reference: jax.Array, current: jax.Array, margin: jax.Array) -> jax.Array:
    """(reference - current) / (margin * |reference|) clipped to [0, 1], []: 0 while the
    learner's greedy return `current` is at or above the checkpoint's `reference`, 1 from
    `margin` (a fraction of |reference|) below it (a step at R0 = 0). 1 where either is
    NaN (an evaluation in which no episode ended): unmeasured, the learner is held."""
    scale = jnp.maximum(margin * jnp.abs(reference), 1e-6)
    gated = jnp.clip((reference - current) / scale, 0.0, 1.0)
    return jnp.where(jnp.isnan(reference) | jnp.isnan(current), 1.0, gated)


def weight_at(h: Any, progress: jax.Array, gate: Gate | None = None) -> jax.Array:
    """A WeightHParams' weight at the fraction of training done, []. `gate`: the run's
    greedy returns, for the "gated" schedule (None: no run of the batch has it)."""
    factor = schedule_factor(h.schedule, progress, h.anneal_fraction, h.decay, 0.0, 0.0, 1.0)
    if gate is not None:  # (without one, no run's schedule is "gated": see Weighted)
        gated = gate_factor(gate.reference, gate.current, h.margin)
        factor = jnp.where(jnp.round(h.schedule) == GATED, gated, factor)
    return jnp.asarray(h.weight, jnp.float32) * factor


def running_return(batch: Any, mean: jax.Array, rate: jax.Array) -> jax.Array:
    """The running mean [] of the training return after a batch [T, N]: mean + rate *
    (the batch's mean finished-episode return - mean); a NaN mean (none yet) takes the
    batch's; unchanged when no episode ended."""
    done = jnp.logical_or(batch.terminated, batch.truncated)
    count = done.sum()
    batch_mean = jnp.sum(jnp.where(done, batch.episode_return, 0.0)) / jnp.maximum(count, 1)
    new = jnp.where(jnp.isnan(mean), batch_mean, mean + rate * (batch_mean - mean))
    return jnp.where(count > 0, new, mean)


def teacher(s: Start) -> Any:
    """The checkpoint's parameters (the fresh ones when a run starts from none)."""
    return (s.agent_state if s.loaded is None else s.loaded).params


@jax.tree_util.register_dataclass
@dataclass
class Gate:
    reference: jax.Array  # [] the checkpoint's greedy return on the run's task
    current: jax.Array  # [] the learner's, at the start and after every segment


@dataclass(frozen=True)
class Weighted(Extension):
    """A regulariser with a WeightHParams weight (traced: step.traced, or its first item).

    evaluate: None when no run uses the "gated" schedule (then nothing below is traced);
    else research.runner.evaluate.make_evaluate(...) on the run's own task, which measures
    the checkpoint when the run starts and the learner then, with one key (so a learner
    that is the checkpoint measures exactly R0 and starts released), and the learner
    after every segment with a fresh key (other start states each time). Its cost: one
    greedy evaluation per run and segment, for each gated method.

    `metrics` row: `<name>_weight`, the weight in force during the segment (at its end for
    time schedules)."""

    agent: Agent
    evaluate: Callable | None = field(default=None, kw_only=True)

    def hparams(self, traced: Any) -> Any:
        return traced[0] if isinstance(traced, tuple) else traced

    def start_gate(self, s: Start) -> Gate | None:
        if self.evaluate is None:
            return None
        state0 = s.agent_state if s.loaded is None else s.loaded
        key = jax.random.fold_in(s.key, GATE_KEY)
        on = lambda state: self.evaluate(state, s.hparams, s.env_params, key, 0.0)
        return Gate(on(state0.replace(params=teacher(s))), on(s.agent_state))

    def on_segment(self, agent_state: Any, state: Any, metrics: Any, step: Step):
        if self.evaluate is None:
            return agent_state, state, {}
        *rest, gate = state
        weight = weight_at(self.hparams(step.traced), step.progress, gate)  # in force
        current = self.evaluate(agent_state, step.hparams, step.env_params, step.key, 0.0)
        gate = Gate(gate.reference, current)
        return agent_state, (*rest, gate), {f"{self.name}_weight": weight}

    def weight(self, state: Any, step: Step) -> jax.Array:
        gate = state[-1] if self.evaluate is not None else None
        return weight_at(self.hparams(step.traced), step.progress, gate)


# A stream of the start key apart from the Fisher's per-state keys (split(key, B)).
GATE_KEY = 1 << 30


def with_gate(state: tuple, gate: Gate | None) -> tuple:
    return state if gate is None else (*state, gate)


@dataclass(frozen=True)
class Distill(Weighted):
    """weight * mean KL(pi_0 || pi) over each minibatch's states (kickstarting).

    Traced: WeightHParams."""

    name: str = "distill"
    traced = True

    def start(self, s: Start) -> tuple[Any, Any]:
        return s.agent_state, with_gate((teacher(s),), self.start_gate(s))

    def loss(self, params: Any, obs: jax.Array, state: Any, step: Step) -> jax.Array:
        out0 = jax.lax.stop_gradient(self.agent.heads(state[0], obs)[0])
        term = divergence(out0, self.agent.heads(params, obs)[0]).mean()
        return self.weight(state, step) * term


@dataclass(frozen=True)
class BehaviourCloning(Weighted):
    """weight * mean -log pi(a_0 | s_0) over `batch_size` stored source states drawn each
    update (the same draw serves every gradient step of that update).

    Traced: (WeightHParams, {"obs": [S, *obs_shape], "action": [S, ...]})."""

    batch_size: int = field(default=256, kw_only=True)
    name: str = "bc"
    traced = True

    def start(self, s: Start) -> tuple[Any, Any]:
        return s.agent_state, with_gate((), self.start_gate(s))

    def loss(self, params: Any, obs: jax.Array, state: Any, step: Step) -> jax.Array:
        data = step.traced[1]
        index = jax.random.randint(step.key, (self.batch_size,), 0, data["obs"].shape[0])
        seen = self.agent.observe(step.agent_state, data["obs"][index])
        term = clone_loss(self.agent.heads(params, seen)[0], data["action"][index]).mean()
        return self.weight(state, step) * term


@dataclass(frozen=True)
class EWC(Weighted):
    """weight / 2 * sum F (theta - theta_0)^2, F the checkpoint's diagonal Fisher on the
    first `batch_size` stored source states, computed once when the run starts.

    Traced: (WeightHParams, {"obs": [S, *obs_shape], ...})."""

    batch_size: int = field(default=256, kw_only=True)
    name: str = "ewc"
    traced = True

    def start(self, s: Start) -> tuple[Any, Any]:
        params0 = teacher(s)
        state0 = s.agent_state if s.loaded is None else s.loaded
        obs = self.agent.observe(state0, s.traced[1]["obs"][: self.batch_size])
        fisher = fisher_diagonal(self.agent.heads, params0, obs, s.key)
        return s.agent_state, with_gate((params0, fisher), self.start_gate(s))

    def loss(self, params: Any, obs: jax.Array, state: Any, step: Step) -> jax.Array:
        params0, fisher = state[0], state[1]
        return ewc_penalty(params, params0, fisher, self.weight(state, step))


def guide_horizon(h: Any, progress: jax.Array, stage: jax.Array) -> jax.Array:
    """The roll-in length h, [] float: horizon * the schedule's factor (constant, linear,
    exponential) or, for "threshold" (index 3), horizon * (1 - stage / stages)."""
    factor = schedule_factor(h.schedule, progress, h.anneal_fraction, h.decay, 0.0, 0.0, 1.0)
    staged = jnp.clip(1.0 - stage / h.stages, 0.0, 1.0)
    return h.horizon * jnp.where(jnp.round(h.schedule) == 3, staged, factor)


def roll_in(
    guide_action: jax.Array, action: jax.Array, episode_step: jax.Array, horizon: jax.Array
) -> jax.Array:
    """The guide's action where the env's episode has run fewer than `horizon` steps.
    guide_action, action: [N, ...]; episode_step: [N] steps since the env's last reset."""
    use = episode_step < horizon
    return jnp.where(use.reshape(use.shape + (1,) * (action.ndim - 1)), guide_action, action)


@jax.tree_util.register_dataclass
@dataclass
class GuideState:
    params0: Any
    stage: jax.Array  # [] curriculum stages passed ("threshold")
    return_ema: jax.Array  # [] running mean of the training return (NaN: none yet)


@dataclass(frozen=True)
class GuideRollIn(Extension):
    """The checkpoint's greedy policy acts the first h steps of each episode, the learner
    after. An acting aux's `log_prob` is recomputed for the action taken (PPO's ratio is
    then that of the learner's policy to the one that acted as far as the learner knows).

    Traced: GuideHParams."""

    agent: Agent
    name: str = "guide"
    traced = True

    def start(self, s: Start) -> tuple[Any, GuideState]:
        return s.agent_state, GuideState(teacher(s), jnp.zeros(()), jnp.full((), jnp.nan))

    def horizon(self, g: GuideState, step: Step) -> jax.Array:
        return guide_horizon(step.traced, step.progress, g.stage)

    def act(self, act: Callable, g: GuideState, step: Step) -> Callable:
        horizon = self.horizon(g, step)
        learner = step.agent_state
        guide_state = learner.replace(params=g.params0)

        def mixed(obs, key, env_state):
            action, aux = act(obs, key, env_state)
            guide, _ = self.agent.act(guide_state, obs, key, step.hparams, False)
            action = roll_in(guide, action, env_state.episode_length, horizon)
            if isinstance(aux, dict) and "log_prob" in aux:
                seen = self.agent.observe(learner, obs)
                aux = {
                    **aux,
                    "log_prob": self.agent.heads(learner.params, seen)[0].log_prob(action),
                }
            return action, aux

        return mixed

    def on_batch(self, batch: Any, g: GuideState, step: Step):
        h = step.traced
        ema = running_return(batch, g.return_ema, h.return_rate)
        passed = (jnp.round(h.schedule) == 3) & (ema >= h.threshold)
        # After a stage the mean restarts, so the next stage is earned at the shorter h.
        g = GuideState(g.params0, g.stage + passed, jnp.where(passed, jnp.nan, ema))
        metrics = {"guide_horizon": self.horizon(g, step)}
        return batch, g, metrics


@dataclass(frozen=True)
class SourceEval(Extension):
    """Every `every` segments and at the last: the greedy return on the run's source task
    (`source_return`), KL(pi_0 || pi) on its stored states (`source_kl`) and, when given,
    the mean greedy return over held-out variants (`held_out_return`); NaN between.
    `source_return_start` is the return when the run starts.

    evaluate: research.runner.evaluate.make_evaluate(agent, env, ...).
    Traced: {"env": source EnvParams, "obs": [S, *obs_shape], optionally "held_out":
    EnvParams [H]} of the run's checkpoint."""

    agent: Agent
    evaluate: Callable
    every: int
    num_logs: int
    name: str = "forgetting"
    traced = True

    def start(self, s: Start) -> tuple[Any, Any]:
        initial = self.evaluate(s.agent_state, s.hparams, s.traced["env"], s.key, 0.0)
        return s.agent_state, (teacher(s), initial)

    def on_segment(self, agent_state: Any, state: Any, metrics: Any, step: Step):
        params0, initial = state
        data = step.traced
        segment = step.update // (step.num_updates // self.num_logs)  # segments done

        def measure(_):
            on = lambda params: self.evaluate(agent_state, step.hparams, params, step.key, 0.0)
            seen = self.agent.observe(agent_state, data["obs"])
            out0 = self.agent.heads(params0, seen)[0]
            div = divergence(out0, self.agent.heads(agent_state.params, seen)[0]).mean()
            row = {"source_return": on(data["env"]), "source_kl": div}
            if "held_out" in data:
                row["held_out_return"] = jnp.nanmean(jax.vmap(on)(data["held_out"]))
            return row

        due = (segment % self.every == 0) | (segment == self.num_logs)
        skipped = lambda _: jax.tree.map(
            lambda x: jnp.full_like(x, jnp.nan), jax.eval_shape(measure, None)
        )
        row = jax.lax.cond(due, measure, skipped, None)
        return agent_state, state, {**row, "source_return_start": initial}
