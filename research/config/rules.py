"""The rules a config field is checked by, ConfigError, and `setting` (a field with its
default and rule), which the experiment's and the agents' dataclasses are declared with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from research.errors import InputError


class ConfigError(InputError):
    """A config value is invalid. The message names field, value and what is allowed."""

    kind = "config error"


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A constraint on one scalar field: type (`int`, `float`, `bool`, `str`) and range."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.kind == "str":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        article = "an" if self.kind == "int" else "a"
        if self.low is None and self.high is None:
            return f"{article} {self.kind}"
        lo = "" if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        return f"{article} {self.kind} with {lo}x{hi}"

    def check(self, path: str, value: Any) -> Any:
        """Returns the value converted to the rule's type, or raises ConfigError."""
        bad = ConfigError(f"{path}: got {value!r}; must be {self.describe()}")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if self.kind == "str":
            if value not in self.choices:
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if self.kind == "int" and not float(value).is_integer():
            raise bad
        value = int(value) if self.kind == "int" else float(value)
        if not within(value, self.low, self.high, self.low_open, self.high_open):
            raise bad
        return value


def within(
    value: float,
    low: float | None,
    high: float | None,
    low_open: bool = False,
    high_open: bool = False,
) -> bool:
    """value is finite, >= low (> with low_open) and <= high (< with high_open); None: no
    bound. The range test of config rules and of env parameter ranges alike."""
    if not math.isfinite(value):
        return False
    if low is not None and (value < low or (low_open and value == low)):
        return False
    return high is None or not (value > high or (high_open and value == high))


POS_INT = Rule("int", low=1)
POS_FLOAT = Rule("float", low=0.0, low_open=True)
NONNEG_FLOAT = Rule("float", low=0.0)
UNIT_OPEN = Rule("float", low=0.0, high=1.0, low_open=True)  # (0, 1]
UNIT = Rule("float", low=0.0, high=1.0)  # [0, 1]
FRACTION = Rule("float", low=0.0, high=1.0, low_open=True, high_open=True)  # (0, 1)
BOOL = Rule("bool")


def setting(default: Any, rule: Rule, **kw: Any) -> Any:
    """A dataclass field with its default (MISSING: required) and the rule parsing checks it
    by (kw: more metadata: sequence=True for a non-empty list of values of `rule`,
    optional=True for a field that may be null)."""
    return field(default=default, metadata={"rule": rule, **kw})


_f = setting  # the short name this module's own dataclasses use


# --------------------------------------------------------------------------- agents
# Each agent module declares its own settings with these rules (research/agents/*.py) and
# registers them in one AgentEntry (research.agents.AGENTS); parsing reads them from there.

SCHEDULES = Rule("str", choices=("constant", "linear", "exponential"))  # epsilon schedules


def check_minibatches(config: Any) -> None:
    """num_minibatches divides the batch num_envs * num_steps (an AgentEntry.check)."""
    batch = config.num_envs * config.num_steps
    if batch % config.num_minibatches:
        raise ConfigError(
            f"agent.num_minibatches: got {config.num_minibatches}; must divide "
            f"num_envs * num_steps = {config.num_envs} * {config.num_steps} = {batch}"
        )


def agent_entries() -> Mapping[str, Any]:
    """name -> AgentEntry of every registered agent (research.agents.AGENTS).

    Imported when first needed: the agent modules import this one for its rules."""
    from research.agents import AGENTS

    return AGENTS
