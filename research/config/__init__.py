"""Typed, frozen experiment configs and their validation.

This package holds the config schema: the rules (rules.py), the experiment's dataclasses
(schema.py) and their parsing (parse.py); each agent declares its own settings with these
rules in its module (research/agents/*.py, registered in research.agents.AGENTS). Hydra
composes a plain mapping; `parse_experiment` turns it into frozen dataclasses or raises
one `ConfigError` naming the field, the bad value and what is allowed -- before anything
is traced or compiled. Everything is importable from `research.config` itself.

Two kinds of agent settings exist, and the split is the heart of batching:
- *static* settings change array shapes or loop counts (num_envs, layer sizes)
  and are closed over by `make_train`;
- *hyperparameters* are scalars that become traced pytree leaves, so a sweep
  over them is vmapped inside one compiled program.
"""

from __future__ import annotations

from typing import Any

from research.config.parse import (
    derive_phase,
    import_modules,
    parse_experiment,
    parse_grid,
    parse_traced,
    sample_field,
)
from research.config.rules import (
    BOOL,
    NONNEG_FLOAT,
    POS_FLOAT,
    POS_INT,
    SCHEDULES,
    UNIT,
    UNIT_OPEN,
    ConfigError,
    Rule,
    agent_entries,
    check_minibatches,
    setting,
)
from research.config.schema import (
    ES_ALGORITHMS,
    GUIDE_SCHEDULES,
    MAX_STATES,
    SHAPING_SCHEDULES,
    SINK_PACKAGES,
    WEIGHT_SCHEDULES,
    AgentSpec,
    AnalysisConfig,
    Discretize,
    EnvConfig,
    EnvShift,
    ESConfig,
    EvaluationConfig,
    ExperimentConfig,
    FieldRange,
    FinetuneConfig,
    ForgettingConfig,
    Guide,
    GuideHParams,
    MetaConfig,
    MetaEvaluationConfig,
    PBTConfig,
    Regulariser,
    ReptileConfig,
    RunsConfig,
    SearchConfig,
    ShapingConfig,
    ShapingHParams,
    SinksConfig,
    SourceConfig,
    TrainConfig,
    TransferConfig,
    ValueGrid,
    WeightHParams,
)


def __getattr__(name: str) -> Any:
    """The agents' settings classes (PPOConfig, QLearningHParams, ...) by name, as they
    were importable from here before each agent module declared its own."""
    if not name.startswith("_"):
        for entry in agent_entries().values():
            for cls in (entry.config, entry.hparams):
                if cls.__name__ == name:
                    return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AgentSpec",
    "AnalysisConfig",
    "BOOL",
    "ConfigError",
    "Discretize",
    "ESConfig",
    "ES_ALGORITHMS",
    "EnvConfig",
    "EnvShift",
    "EvaluationConfig",
    "ExperimentConfig",
    "FieldRange",
    "FinetuneConfig",
    "MAX_STATES",
    "MetaConfig",
    "MetaEvaluationConfig",
    "PBTConfig",
    "NONNEG_FLOAT",
    "POS_FLOAT",
    "POS_INT",
    "ReptileConfig",
    "Rule",
    "RunsConfig",
    "SCHEDULES",
    "SHAPING_SCHEDULES",
    "SINK_PACKAGES",
    "SearchConfig",
    "ShapingConfig",
    "ShapingHParams",
    "SinksConfig",
    "SourceConfig",
    "TrainConfig",
    "TransferConfig",
    "UNIT",
    "UNIT_OPEN",
    "ValueGrid",
    "ForgettingConfig",
    "Guide",
    "GuideHParams",
    "GUIDE_SCHEDULES",
    "Regulariser",
    "WEIGHT_SCHEDULES",
    "WeightHParams",
    "agent_entries",
    "parse_traced",
    "check_minibatches",
    "import_modules",
    "derive_phase",
    "parse_experiment",
    "parse_grid",
    "sample_field",
    "setting",
]
