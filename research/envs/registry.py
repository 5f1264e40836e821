"""One registry for every environment: gymnax's built-ins and the project's own.

Everything the project knows about one environment is one `EnvEntry`: how to make it,
which EnvParams fields are derived, which field combinations are invalid, its shaping
potentials and goal distance, its per-episode metrics. Each environment module registers
its own entries when imported (research/envs/__init__.py imports them all); a user's
module outside research/ calls `register` the same way and is named in the config's
`import_modules`. An id nobody registered (most gymnax built-ins) has the empty entry.

`make_gymnax(env_id)` returns the raw environment; `spec_of` tells an agent the
observation shape and the action space without touching gymnax.

Bad physics is refused before anything compiles: each entry's `ranges` give the values a
field may take on its own (a mass > 0), its `check` what fields must satisfy together
(a goal inside the grid); `COMMON_RANGES` hold for every environment (episode lengths).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import gymnax
import numpy as np
from gymnax.environments import spaces

from research.config.rules import ConfigError, within

ObsFn = Callable[[Any, Any], Any]  # (obs [..., *obs_shape], env_params) -> [...], jittable
Check = Callable[[Any], tuple[str, str] | None]  # params -> (field, what is allowed) or None


@dataclass(frozen=True)
class Range:
    """The values one EnvParams field may take on its own: low <= x (low < x with
    `low_open`) and x <= high (x < high with `high_open`); None is no bound.

    high_name: how the message writes `high` ("pi"); why: what the bounds protect, said in
    the error. A config value outside is refused with `describe`'s words.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    high_name: str | None = None
    why: str = ""

    def allows(self, value: float) -> bool:
        return within(float(value), self.low, self.high, self.low_open, self.high_open)

    def describe(self, integer: bool = False) -> str:
        """'a float > 0', 'an int >= 1', 'a float with 0 <= x <= 1 (why)'."""
        kind = "an int" if integer else "a float"
        low = None if self.low is None else f"{self.low:g}"
        high = self.high_name or (None if self.high is None else f"{self.high:g}")
        below, above = ("<" if self.low_open else "<="), ("<" if self.high_open else "<=")
        if low is not None and high is not None:
            text = f"{kind} with {low} {below} x {above} {high}"
        elif low is not None:
            text = f"{kind} {'>' if self.low_open else '>='} {low}"
        elif high is not None:
            text = f"{kind} {above} {high}"
        else:
            text = kind
        return f"{text} ({self.why})" if self.why else text


POSITIVE = Range(low=0.0, low_open=True)  # masses, lengths, time steps, speed limits
NONNEGATIVE = Range(low=0.0)  # noise scales, costs, frictions
PROBABILITY = Range(low=0.0, high=1.0)

# Every gymnax env truncates an episode once `time >= max_steps_in_episode`
# (Environment.is_truncated), so with 0 or less every episode silently lasts one step.
COMMON_RANGES: Mapping[str, Range] = MappingProxyType(
    {"max_steps_in_episode": Range(low=1, why="episodes are truncated after this many steps")}
)


@dataclass(frozen=True)
class ObservedMetric:
    """An episode metric of what the agent observed, where the rewards do not tell it
    (the driving env's collisions and near misses): fn(next_obs [T, *obs_shape] of one
    episode from its start, valid [T] bool (its steps), params) -> []. next_obs is s' of each
    step (the final observation at the episode's end)."""

    fn: Callable[[Any, Any, Any], Any]


def _frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy, so that an entry cannot change after it is registered."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class EnvEntry:
    """What the project knows about one environment id.

    factory: makes the environment (a gymnax-API class or a function of no arguments);
        None for a gymnax built-in, which `gymnax.make(env_id)` makes.
    derived: EnvParams fields gymnax stores but computes from others, name -> fn(params).
        Set directly, a variant would be silently inconsistent, so they are recomputed
        after every override and a config may not set them.
    ranges: field -> the `Range` of values it may take on its own (a mass > 0), checked for
        every value a config gives (each variant, shift, held-out value, meta range bound)
        under that value's own path, before the fields are combined. A field without one
        may take any finite value (e.g. CartPole's force_mag: a negative push is a variant
        the transfer experiments use); `COMMON_RANGES` apply where the entry sets none.
    check: params -> (field, what is allowed) for the first inconsistent field, else None:
        what fields must satisfy together, on every combined variant. A goal outside the
        grid would silently make the task unsolvable.
    potentials: progress potentials for shaping, name -> fn(obs, params) -> [...], scaled
        to about [-1, 1] so that one shaping weight means something similar across envs;
        the first is the default of `shaping.name`.
    goal_distance: fn(obs, params) -> [...] >= 0, for the (non-potential) bonus shaping.
    episode_metrics: statistics beyond the return that evaluation reports, name ->
        fn(rewards [T] of one episode from its start, zeros after its end; params) -> [],
        or an `ObservedMetric` of its observations.
    discrete_states: observations are state indices (Discrete), for tabular agents.
    """

    env_id: str
    factory: Callable[[], Any] | None = None
    derived: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    check: Check | None = None
    potentials: Mapping[str, ObsFn] = field(default_factory=dict)
    goal_distance: ObsFn | None = None
    episode_metrics: Mapping[str, Callable[[Any, Any], Any]] = field(default_factory=dict)
    discrete_states: bool = False
    ranges: Mapping[str, Range] = field(default_factory=dict)  # last: positional use stays

    def __post_init__(self):
        for name in ("derived", "ranges", "potentials", "episode_metrics"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))


_ENTRIES: dict[str, EnvEntry] = {}


def register(new: EnvEntry, *, replace: bool = False) -> EnvEntry:
    """Adds `new` to the registry (returns it); ValueError for an id registered before,
    unless `replace`. An entry without a factory adds to a gymnax built-in; one with a
    factory may not shadow a gymnax id, since two environments would share one name."""
    if not isinstance(new, EnvEntry):
        raise TypeError(f"register takes an EnvEntry; got {type(new).__name__}")
    env_id = new.env_id
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"EnvEntry.env_id: got {env_id!r}; must be a non-empty id")
    builtin = env_id in gymnax.registered_envs
    if new.factory is None and not builtin:
        raise ValueError(
            f"environment {env_id!r} has no factory and is not a gymnax id; pass the "
            "environment class as factory"
        )
    if new.factory is not None and builtin:
        raise ValueError(
            f"environment {env_id!r} is already registered (by gymnax); use another id, "
            "or factory=None to add to gymnax's own"
        )
    if env_id in _ENTRIES and not replace:
        raise ValueError(
            f"environment {env_id!r} is already registered; pass replace=True to replace it"
        )
    _ENTRIES[env_id] = new
    return new


def entry(env_id: str) -> EnvEntry:
    """The registered entry of `env_id`; the empty one (gymnax makes it, nothing to add)
    for an id nobody registered. Whether the id exists at all is `make_gymnax`'s check."""
    return _ENTRIES.get(env_id) or EnvEntry(env_id)


def field_range(env_id: str, name: str) -> Range | None:
    """The range of EnvParams field `name` of `env_id` (its entry's, else the common one)."""
    return entry(env_id).ranges.get(name) or COMMON_RANGES.get(name)


def registered() -> tuple[EnvEntry, ...]:
    """Every registered entry, in registration order (the order error messages list)."""
    return tuple(_ENTRIES.values())


def discrete_state_ids() -> tuple[str, ...]:
    """Ids observed as state indices, for tabular agents; any flat continuous env becomes
    one with env.discretize."""
    return tuple(e.env_id for e in registered() if e.discrete_states)


@dataclass(frozen=True)
class EnvSpec:
    """What an agent may know about an environment.

    obs_shape: shape of one observation.
    discrete: True for `Discrete(num_actions)`, False for a `Box` of `action_dim`.
    action_low / action_high: bounds of a continuous action (per dimension).
    num_states: > 0 when each observation is an int32 state index in [0, num_states)
    (obs_shape is then ()): what tabular agents need.
    """

    env_id: str
    obs_shape: tuple[int, ...]
    discrete: bool
    num_actions: int = 0
    action_dim: int = 0
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    num_states: int = 0


def _own_ids() -> list[str]:
    """Registered ids that gymnax does not make."""
    return [k for k, e in _ENTRIES.items() if e.factory is not None]


def available() -> list[str]:
    """All environment ids, gymnax's first."""
    return list(gymnax.registered_envs) + _own_ids()


def make_gymnax(env_id: str) -> tuple[Any, Any]:
    """The raw gymnax environment and its default params; ConfigError if unknown."""
    factory = entry(env_id).factory
    if factory is not None:
        env = factory()
        return env, env.default_params
    if env_id in gymnax.registered_envs:
        return gymnax.make(env_id)
    raise ConfigError(f"env.id: got {env_id!r}; allowed: {', '.join(available())}")


def spec_of(env_id: str, env: Any, params: Any) -> EnvSpec:
    obs_space = env.observation_space(params)
    obs_shape = tuple(int(d) for d in obs_space.shape)
    num_states = int(obs_space.n) if isinstance(obs_space, spaces.Discrete) else 0
    space = env.action_space(params)
    if isinstance(space, spaces.Discrete):
        return EnvSpec(env_id, obs_shape, True, num_actions=int(space.n), num_states=num_states)
    if isinstance(space, spaces.Box):
        shape = tuple(space.shape) or (1,)
        low = np.broadcast_to(np.asarray(space.low, np.float32), shape).reshape(-1)
        high = np.broadcast_to(np.asarray(space.high, np.float32), shape).reshape(-1)
        return EnvSpec(
            env_id,
            obs_shape,
            False,
            action_dim=int(np.prod(shape)),
            action_low=tuple(map(float, low)),
            action_high=tuple(map(float, high)),
            num_states=num_states,
        )
    raise ConfigError(
        f"env.id: {env_id!r} has action space {type(space).__name__}; supported: Discrete, Box"
    )
