"""The one interface every agent implements, and the record that registers it (see
docs/design.md).

An agent is three pure functions over its own `flax.struct` state; static
settings and the env spec are closed over by the agent's `make`:

    init(key, hparams) -> state
    act(state, obs [N, ...], key, hparams, explore) -> (action [N, ...], aux)
    update(state, batch: Transition [T, N], key, hparams, penalty=None)
        -> (state, metrics: dict of scalars)

    value(state, obs [..., *obs_shape]) -> V(obs) [...]   (critic, or max_a Q)

a gradient-based agent also has, for the methods that compare its outputs with a
checkpoint's (distillation, behaviour cloning, EWC, churn):

    heads(params, obs_seen [..., *obs_shape]) -> (out, V [...]); out: the action
        distribution (policy agents) or Q-values [..., A] (Q agents)
    observe(state, obs) -> obs_seen: what the network sees of raw obs (normalised by
        the state's running statistics where the agent normalises)

`aux` is whatever `update` later needs from acting time (log-probs, values). `value`
serves learned shaping potentials. `penalty(params, obs [..., *obs_shape]) -> []`, when
given, is added to the loss at every gradient step (the loop's extension loss terms,
research.runner.extension).

Each agent module declares one `AgentEntry` (its settings, state and capabilities);
research.agents.AGENTS collects them, and config parsing, `make_agent`, checkpoints and
fine-tuning read the capabilities from there instead of testing agent names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple


class Agent(NamedTuple):
    init: Callable[..., Any]
    act: Callable[..., tuple[Any, Any]]
    update: Callable[..., tuple[Any, dict]]
    value: Callable[..., Any]
    heads: Callable[..., tuple[Any, Any]] | None = None  # gradient-based agents only
    observe: Callable[..., Any] = lambda state, obs: obs


@dataclass(frozen=True)
class AgentEntry:
    """One agent, as everything outside its module knows it.

    name: `agent.name` in configs (and configs/agent/<name>.yaml, whose values are the
      defaults of `config` and `hparams`; tests/test_agent_registry.py keeps them equal).
    make: (config, spec, total_updates[, optimizer]) -> Agent; the optimizer argument only
      for gradient-based agents.
    config: static settings, a frozen dataclass whose fields carry research.config rules.
    hparams: traced hyperparameters, a flax struct dataclass of rule-carrying fields.
    state: the class of the agent's state (fine-tuning finds the entry by it).
    discrete_actions / continuous_actions: the action spaces it handles.
    state_indices: observations must be state indices (EnvSpec.num_states > 0): tabular.
    gradient_based: network parameters stepped by research.rl.optim: the state holds
      `params` (torso and head groups) and `opt_state` (an optim.OptState, with the L2
      anchor), `make` takes the optimizer (frozen groups), updates take extension loss
      terms, hparams have `l2_init`, and meta-learning can move the parameters.
    network_fields: static settings that change what the saved parameters compute without
      always changing their shapes, or their structure; a checkpoint records them and
      refuses to load into an agent whose values differ.
    loaded_fields: state fields fine-tuning takes from the checkpoint as they are (beyond
      `params` / `opt_state` of a gradient-based agent).
    param_copies: state fields that hold a copy of the parameters (a target network), set
      to the adopted parameters when fine-tuning (where not None, as in a mode without one).
    check: validates a static config beyond each field's rule (raises ConfigError).
    """

    name: str
    make: Callable[..., Agent]
    config: type
    hparams: type
    state: type
    discrete_actions: bool
    continuous_actions: bool
    state_indices: bool = False
    gradient_based: bool = True
    network_fields: tuple[str, ...] = ()
    loaded_fields: tuple[str, ...] = ()
    param_copies: tuple[str, ...] = ()
    check: Callable[[Any], None] | None = None

    def __post_init__(self):
        def names(cls: type) -> set[str]:
            return {f.name for f in dataclasses.fields(cls)}

        problems = []
        unknown = sorted(set(self.network_fields) - names(self.config))
        if unknown:
            problems.append(f"network_fields {unknown} are not fields of {self.config.__name__}")
        needed = set(self.loaded_fields) | set(self.param_copies)
        if self.gradient_based:
            needed |= {"params", "opt_state"}
            if "l2_init" not in names(self.hparams):
                problems.append(f"gradient-based, but {self.hparams.__name__} has no l2_init")
        missing = sorted(needed - names(self.state))
        if missing:
            problems.append(f"{self.state.__name__} has no fields {missing}")
        if not (self.discrete_actions or self.continuous_actions):
            problems.append("it handles neither discrete nor continuous actions")
        if problems:
            raise ValueError(f"agent entry {self.name!r}: " + "; ".join(problems))
