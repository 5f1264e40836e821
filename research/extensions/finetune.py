"""Fine-tuning: the state a run starts from is a loaded checkpoint state, adopted.

One rule for every agent, by the state fields its entry declares (research.agents.AGENTS):
- loaded from the checkpoint: the entry's `loaded_fields` (the tabular `q`, the
  `obs_stats` normalisation the parameters were trained with) and, for a gradient-based
  agent, `params`, and `opt_state` unless the optimizer is reset;
- re-initialised from this run's own key: the `head` parameter group when
  `load == "torso"`;
- derived: the entry's `param_copies` (`target_params`) = the adopted params, and the
  optimizer's L2 anchor = the adopted params (so `l2_init` pulls towards where
  fine-tuning started);
- fresh: everything else -- update counters (schedules, learning-rate anneal and
  epsilon restart: re-warming), replay buffers, running baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax

from research.agents import agent_of_state
from research.config import FinetuneConfig
from research.rl.optim import param_group
from research.runner.extension import Extension, Start


def _with_fresh_heads(loaded: Any, fresh: Any) -> Any:
    return jax.tree_util.tree_map_with_path(
        lambda path, old, new: new if param_group(path) == "head" else old, loaded, fresh
    )


def adopt(fresh: Any, loaded: Any, options: FinetuneConfig) -> Any:
    """fresh: this run's newly initialised state; loaded: the checkpoint's. Same structure."""
    entry = agent_of_state(fresh)
    fields = {name: getattr(loaded, name) for name in entry.loaded_fields}
    if entry.gradient_based:
        params = loaded.params
        if options.load == "torso":
            params = _with_fresh_heads(params, fresh.params)
        fields["params"] = params
        opt_state = fresh.opt_state if options.reset_optimizer else loaded.opt_state
        fields["opt_state"] = opt_state.replace(anchor=params)
        for name in entry.param_copies:
            if getattr(fresh, name) is not None:
                fields[name] = params
    return fresh.replace(**fields)


@dataclass(frozen=True)
class Finetune(Extension):
    """Adopts the given initial state with `options` (without an initial state: nothing)."""

    options: FinetuneConfig
    name: str = "finetune"

    def start(self, s: Start) -> tuple[Any, None]:
        if s.loaded is None:
            return s.agent_state, None
        return adopt(s.fresh, s.loaded, self.options), None
