"""Parsing: the composed Hydra mapping -> an ExperimentConfig, or one ConfigError naming the
field, the bad value and what is allowed, before anything is traced or compiled."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import math
from collections.abc import Mapping, Sequence
from typing import Any

from research.config.rules import (
    BOOL,
    FRACTION,
    NONNEG_FLOAT,
    POS_FLOAT,
    POS_INT,
    ConfigError,
    Rule,
    agent_entries,
)
from research.config.schema import (
    GUIDE_SCHEDULES,
    MAX_STATES,
    PBT_FIXED,
    SHAPING_SCHEDULES,
    SINK_PACKAGES,
    WEIGHT_SCHEDULES,
    AgentSpec,
    AnalysisConfig,
    DiagnosticsConfig,
    Discretize,
    EnvConfig,
    EnvSchedule,
    EnvShift,
    ESConfig,
    EvaluationConfig,
    ExperimentConfig,
    FieldRange,
    FinetuneConfig,
    ForgettingConfig,
    Guide,
    GuideHParams,
    Intervention,
    MetaConfig,
    MetaEvaluationConfig,
    PBTConfig,
    PlasticityConfig,
    RedoHParams,
    Regulariser,
    ReptileConfig,
    ResetHParams,
    RunsConfig,
    SearchConfig,
    ShapingConfig,
    ShapingHParams,
    ShrinkPerturbHParams,
    SinksConfig,
    SourceConfig,
    TrainConfig,
    TransferConfig,
    ValueGrid,
    WeightHParams,
)

# --------------------------------------------------------------------------- parsing


def _mapping(path: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: got {raw!r}; must be a mapping of key: value")
    return raw


def _reject_unknown(path: str, raw: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}.{key}: unknown field; allowed: {', '.join(sorted(allowed))}")


def _field_rule(cls: type, name: str) -> Rule:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls)}[name]


def _is_list(raw: Any) -> bool:
    return isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) and len(raw) > 0


def _build_dataclass(cls: type, path: str, raw: Mapping[str, Any], **given: Any) -> Any:
    """Instantiates `cls`: the fields in `given` as parsed by the caller, every other one
    from `raw` checked by its rule, or its default when absent (a required field absent is
    checked as null, so its message says what it must be). Unknown keys are the caller's."""
    values = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in given or "rule" not in f.metadata:  # the latter: its default
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.name not in raw and not required:
            continue
        rule, value = f.metadata["rule"], raw.get(f.name)
        where = f"{path}.{f.name}" if path else f.name
        if value is None and f.metadata.get("optional"):
            pass
        elif f.metadata.get("sequence"):
            if not _is_list(value):
                raise ConfigError(
                    f"{where}: got {value!r}; must be a non-empty list of {rule.describe()}s"
                )
            value = tuple(rule.check(f"{where}[{i}]", v) for i, v in enumerate(value))
        else:
            value = rule.check(where, value)
        values[f.name] = value
    return cls(**values)


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


# The spelling of grids and random search before the one range syntax: still read there, as
# it was (no order between the two; both > 0 for log), so that configs and run directories
# written then parse, and reproduce, unchanged.
_OLD_RANGE_KEYS = {"start": "low", "stop": "high"}


def parse_range(
    path: str, raw: Mapping[str, Any], rule: Rule, num: str = "forbidden", old_names: bool = False
) -> FieldRange:
    """The one range syntax, `{low: a, high: b, log: false}`, plus `num: n` (the points of a
    grid) where `num` is "required"; "ignored" accepts it unused (a random search may reuse a
    grid's sweep block). Needs low < high, and low > 0 when `log`. The bounds are checked by
    `rule`. With `old_names`, `{start, stop}` (both, instead of low and high) is read as
    before. Returns FieldRange(low, high, log); a grid's num is in raw."""
    old = old_names and any(k in raw for k in _OLD_RANGE_KEYS)
    lo, hi = ("start", "stop") if old else ("low", "high")
    if old:
        mixed = [k for k in ("low", "high") if k in raw]
        if mixed:
            raise ConfigError(
                f"{path}.{mixed[0]}: set beside start/stop (their old names); "
                "write {low, high} only"
            )
    allowed = (lo, hi, "log") + (() if num == "forbidden" else ("num",))
    _reject_unknown(path, raw, allowed)
    needed = (lo, hi) + (("num",) if num == "required" else ())
    for key in needed:
        if raw.get(key) is None:
            raise ConfigError(
                f"{path}.{key}: missing; a range needs "
                + (f"{lo}, {hi} and num" if num == "required" else f"{lo} and {hi}")
            )
    low, high = rule.check(f"{path}.{lo}", raw[lo]), rule.check(f"{path}.{hi}", raw[hi])
    log = BOOL.check(f"{path}.log", raw.get("log", False))
    if not old and not low < high:
        raise ConfigError(f"{path}.{hi}: got {high!r}; must be > {lo} = {low!r}")
    for key, value in ((lo, low), (hi, high)):
        if log and value <= 0:
            raise ConfigError(f"{path}.{key}: got {value!r}; a log range needs {key} > 0")
    return FieldRange(low=float(low), high=float(high), log=log)


def parse_grid(path: str, raw: Any, rule: Rule | None = None) -> ValueGrid:
    """A list `[a, b, ...]` or a range `{low, high, num, log: false}` (num points, evenly or
    log-evenly spaced, both ends included) -> ValueGrid."""
    if isinstance(raw, Mapping):
        r = parse_range(path, raw, Rule("float"), num="required", old_names=True)
        num = POS_INT.check(f"{path}.num", raw["num"])
        if num == 1:
            values = [r.low]
        elif r.log:  # this order of operations: the values grids had before, bit for bit
            values = [
                math.exp(math.log(r.low) + i * (math.log(r.high / r.low)) / (num - 1))
                for i in range(num)
            ]
        else:
            values = [r.low + i * (r.high - r.low) / (num - 1) for i in range(num)]
    elif _is_list(raw):
        values = list(raw)
    else:
        raise ConfigError(
            f"{path}: got {raw!r}; must be a non-empty list of values or "
            "a range {low: a, high: b, num: n, log: false}"
        )
    rule = rule or Rule("float")
    return ValueGrid(tuple(rule.check(f"{path}[{i}]", v) for i, v in enumerate(values)))


def _parse_agent(raw: Mapping[str, Any]) -> AgentSpec:
    raw = _mapping("agent", raw)
    name = raw.get("name")
    entries = agent_entries()
    if name not in entries:
        raise ConfigError(f"agent.name: got {name!r}; allowed: {', '.join(entries)}")
    entry = entries[name]
    allowed = ["name"] + _field_names(entry.config)
    allowed += _field_names(entry.hparams)
    _reject_unknown("agent", raw, allowed)
    config = _build_dataclass(entry.config, "agent", raw)
    hparams = _build_dataclass(entry.hparams, "agent", raw)
    if entry.check is not None:
        entry.check(config)
    return AgentSpec(name=name, config=config, hparams=hparams)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules holds None or a spec-less stub
        return False


def _parse_sinks(raw: Any) -> SinksConfig:
    """The sinks block; an enabled sink whose package is missing is an error now, before
    anything compiles, rather than after the runs."""
    raw = _mapping("sinks", raw)
    _reject_unknown("sinks", raw, list(SINK_PACKAGES))
    sinks = _build_dataclass(SinksConfig, "sinks", raw)
    for name, (module, extra) in SINK_PACKAGES.items():
        if getattr(sinks, name) and not _installed(module):
            raise ConfigError(
                f"sinks.{name}: got True; the {name} sink needs the '{module}' "
                f"package: pip install -e '.[{extra}]', or set sinks.{name}=false"
            )
    return sinks


def _parse_analysis(raw: Any) -> AnalysisConfig:
    raw = _mapping("analysis", raw)
    _reject_unknown("analysis", raw, ("optimality_threshold",))
    threshold = raw.get("optimality_threshold")
    return AnalysisConfig(
        optimality_threshold=None
        if threshold is None
        else Rule("float").check("analysis.optimality_threshold", threshold)
    )


def _parse_search(raw: Any) -> SearchConfig:
    raw = _mapping("search", raw)
    _reject_unknown("search", raw, _field_names(SearchConfig))
    return _build_dataclass(SearchConfig, "search", raw)


def sample_field(path: str, raw: Any, rule: Rule, rng: Any, num: int) -> ValueGrid:
    """`num` random values of one swept field: from a range (uniform, or log-uniform with
    log: true; a grid's `num` is ignored there) or among the values of a list."""
    import numpy as np

    if isinstance(raw, Mapping):
        r = parse_range(path, raw, Rule("float"), num="ignored", old_names=True)
        u = rng.uniform(size=num)
        values = (
            np.exp(np.log(r.low) + u * np.log(r.high / r.low))
            if r.log
            else r.low + u * (r.high - r.low)
        )
    else:
        choices = parse_grid(path, raw, rule).values
        values = np.asarray(choices)[rng.integers(0, len(choices), size=num)]
    return ValueGrid(tuple(rule.check(f"{path}[{i}]", float(v)) for i, v in enumerate(values)))


def _parse_sweep(raw: Any, agent: AgentSpec, search: SearchConfig) -> dict[str, ValueGrid]:
    """Field -> values: crossed as a grid, or (random search) aligned joint samples."""
    import numpy as np

    rng = np.random.default_rng(search.seed)
    hparams_cls = type(agent.hparams)
    names = _field_names(hparams_cls)
    static = _field_names(type(agent.config))
    out = {}
    for key, values in _mapping("sweep", raw).items():
        if values is None:
            continue
        if key in static:
            raise ConfigError(
                f"sweep.{key}: '{key}' changes array shapes, so it cannot vary inside one "
                f"program; run one program per value with Hydra multirun "
                f"(-m agent.{key}=a,b). Sweepable: {', '.join(names)}"
            )
        if key not in names:
            raise ConfigError(
                f"sweep.{key}: not a hyperparameter of agent '{agent.name}'; "
                f"sweepable: {', '.join(names)}"
            )
        rule = _field_rule(hparams_cls, key)
        out[key] = (
            sample_field(f"sweep.{key}", values, rule, rng, search.num_samples)
            if search.kind == "random"
            else parse_grid(f"sweep.{key}", values, rule)
        )
    return out


def _parse_discretize(raw: Any) -> Discretize | None:
    if raw is None:
        return None
    raw = _mapping("env.discretize", raw)
    names = _field_names(Discretize)
    _reject_unknown("env.discretize", raw, names)
    for name in names:
        if raw.get(name) is None:
            raise ConfigError(
                f"env.discretize.{name}: missing; discretize needs bins, low and "
                "high, one entry per observation dimension each"
            )
    spec = _build_dataclass(Discretize, "env.discretize", raw)
    if not len(spec.bins) == len(spec.low) == len(spec.high):
        raise ConfigError(
            "env.discretize: bins, low and high need one entry per observation dimension each; "
            f"got {len(spec.bins)}, {len(spec.low)} and {len(spec.high)}"
        )
    for i, (low, high) in enumerate(zip(spec.low, spec.high)):
        if not low < high:
            raise ConfigError(
                f"env.discretize.high[{i}]: got {high!r}; must be > low[{i}] = {low!r}"
            )
    if math.prod(spec.bins) > MAX_STATES:
        raise ConfigError(
            f"env.discretize.bins: got {list(spec.bins)}, {math.prod(spec.bins)} "
            f"states; at most {MAX_STATES} (state indices are int32)"
        )
    return spec


def _parse_params(path: str, raw: Any) -> dict[str, float]:
    """EnvParams overrides {field: number}; null values mean 'default'."""
    return {
        key: Rule("float").check(f"{path}.{key}", value)
        for key, value in _mapping(path, raw).items()
        if value is not None
    }


def _parse_grids(path: str, raw: Any) -> dict[str, ValueGrid]:
    return {
        key: parse_grid(f"{path}.{key}", value)
        for key, value in _mapping(path, raw).items()
        if value is not None
    }


def _parse_shift(raw: Any) -> EnvShift | None:
    if raw is None:
        return None
    raw = _mapping("env.shift", raw)
    _reject_unknown("env.shift", raw, _field_names(EnvShift))
    params = _parse_params("env.shift.params", raw.get("params"))
    if not params:
        raise ConfigError(
            "env.shift.params: missing; name the EnvParams fields that change, e.g. {length: 2.0}"
        )
    shift = _build_dataclass(EnvShift, "env.shift", raw, params=params)
    # The ramp ends by the end of training.
    Rule("float", low=0.0, high=1.0 - shift.at).check("env.shift.drift", shift.drift)
    return shift


def _parse_schedule(raw: Any) -> EnvSchedule | None:
    """env.schedule: {params: [{field: value}, ...] (one entry per phase), every, cycle}."""
    if raw is None:
        return None
    raw = _mapping("env.schedule", raw)
    _reject_unknown("env.schedule", raw, ("params", "every", "cycle"))
    phases = raw.get("params")
    if isinstance(phases, (str, bytes, Mapping)) or not isinstance(phases, Sequence):
        raise ConfigError(
            f"env.schedule.params: got {phases!r}; must be a list of EnvParams overrides, "
            "one per phase, e.g. [{}, {length: 2.0}, {length: 0.25}]"
        )
    if len(phases) < 2:
        raise ConfigError(
            f"env.schedule.params: got {len(phases)} phase(s); a schedule needs at least 2"
        )
    params = tuple(
        _parse_params(f"env.schedule.params[{i}]", phase) for i, phase in enumerate(phases)
    )
    every = raw.get("every")
    if isinstance(every, int) and not isinstance(every, bool):
        every = POS_INT.check("env.schedule.every", every)
    else:
        every = FRACTION.check("env.schedule.every", every)
    return _build_dataclass(EnvSchedule, "env.schedule", raw, params=params, every=every)


def _parse_env(raw: Any) -> EnvConfig:
    raw = _mapping("env", raw)
    _reject_unknown("env", raw, ("id", "params", "variants", "discretize", "shift", "schedule"))
    env_id = raw.get("id")
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env.id: got {env_id!r}; must be an environment name")
    return EnvConfig(
        id=env_id,
        params=_parse_params("env.params", raw.get("params")),
        variants=_parse_grids("env.variants", raw.get("variants")),
        discretize=_parse_discretize(raw.get("discretize")),
        shift=_parse_shift(raw.get("shift")),
        schedule=_parse_schedule(raw.get("schedule")),
    )


def _parse_transfer(raw: Any, agent: AgentSpec) -> TransferConfig | None:
    if raw is None:
        return None
    raw = _mapping("transfer", raw)
    methods = ("distill", "bc", "ewc", "guide", "forgetting")
    _reject_unknown(
        "transfer",
        raw,
        ("checkpoint", "source", "finetune", "scratch", "evaluation", "threshold", *methods),
    )
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
        raise ConfigError(
            f"transfer.checkpoint: got {checkpoint!r}; must be the path of a "
            "checkpoint directory, or null to pretrain on transfer.source"
        )
    source = None
    if checkpoint is None:
        src = raw.get("source")
        if src is None:
            raise ConfigError(
                "transfer.source: missing; give a source task to pretrain on, "
                "or transfer.checkpoint to load one"
            )
        src = _mapping("transfer.source", src)
        _reject_unknown("transfer.source", src, ("params", "variants", "total_timesteps", "seeds"))
        source = _build_dataclass(
            SourceConfig,
            "transfer.source",
            src,
            params=_parse_params("transfer.source.params", src.get("params")),
            variants=_parse_grids("transfer.source.variants", src.get("variants")),
        )
    ft_raw = _mapping("transfer.finetune", raw.get("finetune"))
    _reject_unknown("transfer.finetune", ft_raw, _field_names(FinetuneConfig))
    finetune = _build_dataclass(FinetuneConfig, "transfer.finetune", ft_raw)
    entry = agent_entries()[agent.name]
    for name in ("load", "freeze"):
        if not entry.gradient_based and getattr(finetune, name) == "torso":
            raise ConfigError(
                f"transfer.finetune.{name}: got 'torso'; agent {agent.name!r} has "
                "a table, not a torso and heads; allowed: "
                + ("'all'" if name == "load" else "'none'")
            )
    ev = _mapping("transfer.evaluation", raw.get("evaluation"))
    _reject_unknown("transfer.evaluation", ev, ("num_envs", "num_steps", "held_out", "obs_noise"))
    noise = ev.get("obs_noise") or []
    if isinstance(noise, (str, bytes)) or not isinstance(noise, Sequence):
        raise ConfigError(
            f"transfer.evaluation.obs_noise: got {noise!r}; must be a list of "
            "noise standard deviations >= 0"
        )
    noise = tuple(
        NONNEG_FLOAT.check(f"transfer.evaluation.obs_noise[{i}]", v) for i, v in enumerate(noise)
    )
    if entry.state_indices and any(noise):
        raise ConfigError(
            f"transfer.evaluation.obs_noise: agent {agent.name!r} sees state "
            "indices, which noise cannot perturb; allowed: []"
        )
    evaluation = _build_dataclass(
        EvaluationConfig,
        "transfer.evaluation",
        ev,
        held_out=_parse_grids("transfer.evaluation.held_out", ev.get("held_out")),
        obs_noise=noise,
    )
    return _build_dataclass(
        TransferConfig,
        "transfer",
        raw,
        checkpoint=checkpoint,
        source=source,
        finetune=finetune,
        evaluation=evaluation,
        **_parse_keep(raw, agent),
    )


def _parse_keep(raw: Mapping[str, Any], agent: AgentSpec) -> dict[str, Any]:
    """The methods against forgetting (transfer.distill, bc, ewc, guide, forgetting)."""
    out: dict[str, Any] = {}
    given = [name for name in ("distill", "bc", "ewc", "guide", "forgetting") if raw.get(name)]
    if given and not agent_entries()[agent.name].gradient_based:
        raise ConfigError(
            f"transfer.{given[0]}: set for agent {agent.name!r}, which has a table, not a "
            "policy network; allowed: null"
        )
    for name in ("distill", "bc", "ewc"):
        if raw.get(name) is None:
            continue
        block = dict(_mapping(f"transfer.{name}", raw[name]))
        allowed = _field_names(WeightHParams)
        if name != "distill":
            allowed.append("batch_size")
        _reject_unknown(f"transfer.{name}", block, allowed)
        sizes = {"batch_size": block.pop("batch_size")} if "batch_size" in block else {}
        hparams, grid = parse_traced(
            f"transfer.{name}", block, WeightHParams, {"schedule": WEIGHT_SCHEDULES}
        )
        out[name] = _build_dataclass(
            Regulariser, f"transfer.{name}", sizes, hparams=hparams, grid=grid
        )
    if raw.get("guide") is not None:
        block = _mapping("transfer.guide", raw["guide"])
        _reject_unknown("transfer.guide", block, _field_names(GuideHParams))
        out["guide"] = Guide(
            *parse_traced("transfer.guide", block, GuideHParams, {"schedule": GUIDE_SCHEDULES})
        )
    if raw.get("forgetting") is not None:
        block = _mapping("transfer.forgetting", raw["forgetting"])
        _reject_unknown("transfer.forgetting", block, _field_names(ForgettingConfig))
        out["forgetting"] = _build_dataclass(ForgettingConfig, "transfer.forgetting", block)
    return out


def parse_traced(
    path: str, raw: Mapping[str, Any], cls: type, labels: Mapping[str, Sequence[str]]
) -> tuple[Any, dict[str, ValueGrid]]:
    """An extension's traced settings: (cls of the single values, {field: ValueGrid} of the
    swept ones: a list or a range). A field in `labels` is categorical: given by name (or a
    list of names), held as the index of the name (the first name when unset)."""
    base, grid = {}, {}
    for f in dataclasses.fields(cls):
        value = raw.get(f.name)
        if f.name in labels:
            choices = labels[f.name]
            value = value if value is not None else choices[0]
            names = (
                list(value)
                if isinstance(value, Sequence) and not isinstance(value, str)
                else [value]
            )
            rule = Rule("str", choices=choices)
            index = [
                float(choices.index(rule.check(f"{path}.{f.name}[{i}]", n)))
                for i, n in enumerate(names)
            ]
            if not index:
                raise ConfigError(
                    f"{path}.{f.name}: got []; must be a {f.name} or a non-empty "
                    "list of: " + ", ".join(choices)
                )
            value = index if len(index) > 1 else index[0]
        if value is None:
            continue
        if isinstance(value, (Mapping, list, tuple)):
            grid[f.name] = parse_grid(f"{path}.{f.name}", value, f.metadata["rule"])
        else:
            base[f.name] = f.metadata["rule"].check(f"{path}.{f.name}", value)
    return cls(**base), grid


def _parse_shaping(raw: Any) -> ShapingConfig | None:
    if raw is None:
        return None
    raw = _mapping("shaping", raw)
    numeric = [f.name for f in dataclasses.fields(ShapingHParams) if f.name != "schedule"]
    _reject_unknown(
        "shaping",
        raw,
        ("kind", "potential", "name", "checkpoint", "schedule", "threshold", *numeric),
    )
    name, checkpoint = raw.get("name"), raw.get("checkpoint")
    # kind, potential and threshold by their rules; the other fields are set below
    config = _build_dataclass(
        ShapingConfig, "shaping", raw, name=name, checkpoint=checkpoint, hparams=None, grid={}
    )
    kind, potential = config.kind, config.potential
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"shaping.name: got {name!r}; must be a potential's name")
    if potential == "value" and kind == "potential" and not isinstance(checkpoint, str):
        raise ConfigError(
            f"shaping.checkpoint: got {checkpoint!r}; potential 'value' needs "
            "the path of a checkpoint whose value function is the potential"
        )
    hparams, grid = parse_traced("shaping", raw, ShapingHParams, {"schedule": SHAPING_SCHEDULES})
    if (
        "return_low" not in grid
        and "return_high" not in grid
        and not hparams.return_low < hparams.return_high
    ):
        raise ConfigError(
            f"shaping.return_high: got {hparams.return_high!r}; must be > "
            f"shaping.return_low = {hparams.return_low!r}"
        )
    return dataclasses.replace(config, hparams=hparams, grid=grid)


INTERVENTIONS = {  # plasticity.<name>: its traced settings and the default `every` (updates)
    "redo": (RedoHParams, 100),
    "shrink_perturb": (ShrinkPerturbHParams, 100),
    "reset": (ResetHParams, 200),
}


def _parse_diagnostics(raw: Any, agent: AgentSpec) -> DiagnosticsConfig | None:
    """true (the defaults), false / null (off) or a mapping of DiagnosticsConfig fields."""
    if raw is None or raw is False:
        return None
    if raw is True:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"plasticity.diagnostics: got {raw!r}; must be true, false or a mapping "
            "{every, probe_size, taus, srank_delta}"
        )
    names = _field_names(DiagnosticsConfig)
    _reject_unknown("plasticity.diagnostics", raw, names)
    config = _build_dataclass(DiagnosticsConfig, "plasticity.diagnostics", raw)
    batch = agent.config.num_envs * agent.config.num_steps
    if config.probe_size is None:
        return dataclasses.replace(config, probe_size=min(256, batch))
    if config.probe_size > batch:
        raise ConfigError(
            f"plasticity.diagnostics.probe_size: got {config.probe_size}; the probe is drawn "
            f"from the latest rollout, so at most num_envs * num_steps = {batch}"
        )
    return config


def _parse_intervention(name: str, raw: Any, agent: AgentSpec) -> Intervention | None:
    if raw is None:
        return None
    path = f"plasticity.{name}"
    raw = dict(_mapping(path, raw))
    cls, every = INTERVENTIONS[name]
    allowed = ["every", *(f.name for f in dataclasses.fields(cls))]
    if name == "reset":
        allowed.append("layers")
    _reject_unknown(path, raw, allowed)
    every = POS_INT.check(f"{path}.every", raw.pop("every", every))
    layers = POS_INT.check(f"{path}.layers", raw.pop("layers", 1))
    dense = len(agent.config.hidden_sizes) + 1  # per torso, and its head
    if layers > dense:
        raise ConfigError(
            f"{path}.layers: got {layers}; the network has {dense} Dense layers per torso "
            f"(hidden_sizes {list(agent.config.hidden_sizes)} and the head): at most {dense}"
        )
    hparams, grid = parse_traced(path, raw, cls, {})
    return Intervention(every=every, hparams=hparams, grid=grid, layers=layers)


def _parse_plasticity(raw: Any, agent: AgentSpec) -> PlasticityConfig | None:
    """The plasticity block (research/extensions/plasticity.py): diagnostics and the
    interventions ReDo, shrink-and-perturb and resets of the last layers."""
    if raw is None:
        return None
    raw = _mapping("plasticity", raw)
    _reject_unknown("plasticity", raw, ("diagnostics", *INTERVENTIONS))
    given = [k for k, v in raw.items() if v is not None and v is not False]
    if given and not agent_entries()[agent.name].gradient_based:
        raise ConfigError(
            f"plasticity.{given[0]}: set for agent {agent.name!r}, which has a table, not a "
            "network; allowed: null"
        )
    return PlasticityConfig(
        diagnostics=_parse_diagnostics(raw.get("diagnostics"), agent),
        **{name: _parse_intervention(name, raw.get(name), agent) for name in INTERVENTIONS},
    )


def plasticity_grids(config: ExperimentConfig) -> dict[str, ValueGrid]:
    """The swept lists of the plasticity block, by path (plasticity.<name>.<field>)."""
    p = config.plasticity
    blocks = {} if p is None else {n: getattr(p, n) for n in INTERVENTIONS}
    return {
        f"plasticity.{name}.{k}": v
        for name, block in blocks.items()
        if block is not None
        for k, v in block.grid.items()
    }


def _parse_pbt(raw: Any, agent: AgentSpec) -> PBTConfig | None:
    """The pbt block (research/extensions/pbt.py): every value checked, one line each."""
    if raw is None:
        return None
    raw = _mapping("pbt", raw)
    fields = _field_names(PBTConfig)
    _reject_unknown("pbt", raw, fields)
    # the scalar fields first, so their messages come before those of perturb and bounds
    scalars = _build_dataclass(PBTConfig, "pbt", raw, perturb=(), bounds=())
    size, fraction = scalars.population_size, scalars.fraction
    if int(fraction * size) < 1:
        raise ConfigError(
            f"pbt.fraction: got {fraction!r}; with population_size {size} it replaces "
            f"int({fraction!r} * {size}) = 0 members: must be >= 1 / {size}"
        )
    hparams = _field_names(type(agent.hparams))
    perturbable = [n for n in hparams if n not in PBT_FIXED]
    perturb = _mapping("pbt.perturb", raw.get("perturb"))
    if not perturb:
        raise ConfigError(
            f"pbt.perturb: got {raw.get('perturb')!r}; must map at least one hyperparameter "
            f"to its factors, e.g. {{lr: [0.8, 1.25]}}; perturbable: {', '.join(perturbable)}"
        )
    factors = {}
    for name, values in perturb.items():
        path = f"pbt.perturb.{name}"
        if name in PBT_FIXED:
            raise ConfigError(
                f"{path}: '{name}' is {PBT_FIXED[name]}, so it cannot change during a run; "
                f"perturbable: {', '.join(perturbable)}"
            )
        if name not in hparams:
            raise ConfigError(
                f"{path}: not a traced hyperparameter of agent '{agent.name}'; "
                f"perturbable: {', '.join(perturbable)}"
            )
        if not _is_list(values):
            raise ConfigError(f"{path}: got {values!r}; must be a non-empty list of factors > 0")
        factors[name] = tuple(POS_FLOAT.check(f"{path}[{i}]", v) for i, v in enumerate(values))
    raw_bounds = _mapping("pbt.bounds", raw.get("bounds"))
    for name in raw_bounds:
        if name not in factors:
            raise ConfigError(
                f"pbt.bounds.{name}: '{name}' is not perturbed; bounds are for the fields of "
                f"pbt.perturb: {', '.join(factors)}"
            )
    bounds = {}
    for name in factors:
        path, pair = f"pbt.bounds.{name}", raw_bounds.get(name)
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ConfigError(
                f"{path}: got {pair!r}; every perturbed field needs bounds [low, high]"
            )
        rule = _field_rule(type(agent.hparams), name)
        low, high = (rule.check(f"{path}[{i}]", v) for i, v in enumerate(pair))
        if not low < high:
            raise ConfigError(f"{path}[1]: got {high!r}; must be > low = {low!r}")
        bounds[name] = (float(low), float(high))
    return dataclasses.replace(
        scalars, perturb=tuple(sorted(factors.items())), bounds=tuple(sorted(bounds.items()))
    )


def _check_pbt(config: ExperimentConfig) -> ExperimentConfig:
    """The pbt block against the rest of the config."""
    pbt = config.pbt
    if pbt is None:
        return config
    if config.meta is not None:
        raise ConfigError("pbt: set in a meta experiment; allowed: null")
    if pbt.fitness == "source_return":
        forgetting = None if config.transfer is None else config.transfer.forgetting
        if forgetting is None:
            raise ConfigError(
                "pbt.fitness: got 'source_return'; the source task is measured only when "
                "fine-tuning with transfer.forgetting set; allowed here: 'episode_return'"
            )
        for name in ("interval", "window"):  # else a generation may rank on no value
            if getattr(pbt, name) < forgetting.every:
                raise ConfigError(
                    f"pbt.{name}: got {getattr(pbt, name)}; source_return is measured every "
                    f"transfer.forgetting.every = {forgetting.every} segments (NaN between): "
                    f"must be >= {forgetting.every}"
                )
    if pbt.initial == "sample":
        swept = sorted(set(pbt.fields) & set(config.sweep))
        if swept:
            raise ConfigError(
                f"pbt.initial: got 'sample', which draws {swept[0]} from pbt.bounds, but "
                f"sweep.{swept[0]} sets it too; allowed: 'keep' (start from the sweep)"
            )
    return config


def _check_continual(config: ExperimentConfig) -> ExperimentConfig:
    """env.schedule and the plasticity block: what they cannot combine with."""
    schedule = config.env.schedule
    if schedule is not None:
        clashes = [
            ("env.shift", config.env.shift is not None, "one of env.shift and env.schedule"),
            ("transfer", config.transfer is not None, "null (fine-tuning runs on fixed targets)"),
            ("meta", config.meta is not None, "null (meta samples its own variants)"),
        ]
        for path, bad, allowed in clashes:
            if bad:
                raise ConfigError(f"{path}: set with env.schedule; allowed: {allowed}")
    if config.plasticity is not None and config.meta is not None:
        raise ConfigError("plasticity: set in a meta experiment; allowed: null")
    if config.meta is not None and "weight_decay" in config.meta.es.search:
        # The optimiser's decay term is switched on per program from the config's values
        # (research.pipelines.train.uses_weight_decay), which a search does not show.
        raise ConfigError(
            "meta.es.search.weight_decay: not searchable; set agent.weight_decay instead"
        )
    if config.search.kind == "zip" and plasticity_grids(config):
        # The other swept lists were checked against each other by _check_zip.
        _check_zip_lengths(swept_lengths(config), among=list(plasticity_grids(config)))
    return config


def _parse_distribution(path: str, raw: Any, rule: Rule, allow_list: bool = True) -> FieldRange:
    """A range (parse_range; uniform, or log-uniform) or, if allowed, a list to draw from."""
    if isinstance(raw, Mapping):
        return parse_range(path, raw, rule)
    if allow_list and _is_list(raw):
        return FieldRange(
            values=tuple(float(rule.check(f"{path}[{i}]", v)) for i, v in enumerate(raw))
        )
    allowed = "a range {low: a, high: b, log: false}" + (
        " or a non-empty list of values" if allow_list else ""
    )
    raise ConfigError(f"{path}: got {raw!r}; must be {allowed}")


def _search_rule(name: str, agent: AgentSpec) -> Rule:
    """The rule of an ES search field: an agent hyperparameter, or shaping.<field>."""
    hparams = _field_names(type(agent.hparams))
    shaping = [
        f"shaping.{f.name}" for f in dataclasses.fields(ShapingHParams) if f.name != "schedule"
    ]
    if name in hparams:
        return _field_rule(type(agent.hparams), name)
    if name in shaping:
        return _field_rule(ShapingHParams, name[len("shaping.") :])
    raise ConfigError(
        f"meta.es.search.{name}: not a traced hyperparameter; allowed: "
        f"{', '.join(hparams + shaping)}"
    )


def _parse_meta(raw: Any, agent: AgentSpec) -> MetaConfig | None:
    if raw is None:
        return None
    raw = _mapping("meta", raw)
    _reject_unknown(
        "meta",
        raw,
        (
            "method",
            "seeds",
            "seed",
            "variants",
            "held_out",
            "source",
            "pretrain_timesteps",
            "reptile",
            "es",
            "evaluation",
        ),
    )
    method = Rule("str", choices=("reptile", "es")).check("meta.method", raw.get("method"))
    entries = agent_entries()
    if not entries[agent.name].gradient_based:
        raise ConfigError(
            f"agent.name: got {agent.name!r}; meta-learning moves network parameters; "
            "allowed: " + ", ".join(n for n, e in entries.items() if e.gradient_based)
        )
    variants = {
        key: _parse_distribution(f"meta.variants.{key}", value, Rule("float"))
        for key, value in _mapping("meta.variants", raw.get("variants")).items()
        if value is not None
    }
    if method == "reptile" and not variants:
        raise ConfigError(
            "meta.variants: missing; Reptile needs a distribution of training "
            "variants, e.g. {length: {low: 0.25, high: 1.5}}"
        )
    held_out = _parse_grids("meta.held_out", raw.get("held_out"))
    if not held_out:
        raise ConfigError(
            "meta.held_out: missing; give the held-out variants to evaluate on, "
            "e.g. {length: [2.0]}"
        )
    batch = agent.config.num_envs * agent.config.num_steps

    def timesteps(path: str, value: Any) -> int:
        steps = POS_INT.check(path, value)
        if steps < batch:
            raise ConfigError(
                f"{path}: got {steps}; must be at least num_envs * num_steps = {batch} (one update)"
            )
        return steps

    reptile_raw = _mapping("meta.reptile", raw.get("reptile"))
    _reject_unknown("meta.reptile", reptile_raw, _field_names(ReptileConfig))
    reptile = _build_dataclass(ReptileConfig, "meta.reptile", reptile_raw)
    es_raw = dict(_mapping("meta.es", raw.get("es")))
    _reject_unknown("meta.es", es_raw, _field_names(ESConfig))
    search_raw = dict(_mapping("meta.es.search", es_raw.pop("search", None)))
    # shaping.<field> written as a dotted override arrives nested: {shaping: {field: ...}}
    nested = search_raw.pop("shaping", None)
    search_raw.update(
        {f"shaping.{k}": v for k, v in _mapping("meta.es.search.shaping", nested).items()}
    )
    es = dataclasses.replace(
        _build_dataclass(ESConfig, "meta.es", es_raw),
        search={
            name: _parse_distribution(
                f"meta.es.search.{name}", value, _search_rule(name, agent), False
            )
            for name, value in search_raw.items()
            if value is not None
        },
    )
    pretrain = raw.get("pretrain_timesteps")
    pretrain = None if pretrain is None else timesteps("meta.pretrain_timesteps", pretrain)
    if method == "reptile":
        timesteps("meta.reptile.inner_timesteps", reptile.inner_timesteps)
    else:
        timesteps("meta.es.inner_timesteps", es.inner_timesteps)
        if not es.search:
            raise ConfigError(
                "meta.es.search: missing; give the fields to search, e.g. "
                "{lr: {low: 1e-5, high: 1e-3, log: true}}"
            )
        if es.algorithm == "open_es" and es.population % 2:
            raise ConfigError(
                f"meta.es.population: got {es.population}; open_es samples "
                "antithetic pairs, so it must be even"
            )
        if pretrain is None:
            raise ConfigError(
                "meta.pretrain_timesteps: missing; ES has no inner budget to "
                "match, so give the baselines' pretraining budget in env steps"
            )
    ev_raw = _mapping("meta.evaluation", raw.get("evaluation"))
    _reject_unknown("meta.evaluation", ev_raw, ("num_envs", "num_steps", "threshold"))
    evaluation = _build_dataclass(MetaEvaluationConfig, "meta.evaluation", ev_raw)
    return _build_dataclass(
        MetaConfig,
        "meta",
        raw,
        method=method,
        variants=variants,
        held_out=held_out,
        source=_parse_params("meta.source", raw.get("source")),
        pretrain_timesteps=pretrain,
        reptile=reptile,
        es=es,
        evaluation=evaluation,
    )


def _check_meta(config: ExperimentConfig) -> ExperimentConfig:
    """A meta experiment owns its variants and fine-tuning runs: what it cannot combine."""
    meta = config.meta
    if meta is None:
        return config
    clashes = [
        ("transfer", config.transfer is not None, "null (meta fine-tunes its own initialisations)"),
        (
            "env.variants",
            bool(config.env.variants),
            "{} (meta samples meta.variants and evaluates on meta.held_out)",
        ),
        ("env.shift", config.env.shift is not None, "null"),
        ("sweep", bool(config.sweep), "{} (search traced values with meta.es.search)"),
        (
            "shaping",
            config.shaping is not None and bool(config.shaping.grid),
            "single values (search them with meta.es.search.shaping.<field>)",
        ),
    ]
    for path, bad, allowed in clashes:
        if bad:
            raise ConfigError(f"{path}: set in a meta experiment; allowed: {allowed}")
    for name in meta.es.search if meta.method == "es" else ():
        if name.startswith("shaping.") and config.shaping is None:
            raise ConfigError(
                f"meta.es.search.{name}: the config has no shaping block; add "
                "shaping: {name: ...} or search agent hyperparameters only"
            )
    return config


def swept_lengths(config: ExperimentConfig, plasticity: bool = True) -> dict[str, int]:
    """The number of values of every swept list, by path: the sweep's, then shaping's,
    the transfer methods' and (with `plasticity`) the plasticity interventions'."""
    lists = {f"sweep.{k}": len(v.values) for k, v in config.sweep.items()}
    if config.shaping is not None:
        lists.update({f"shaping.{k}": len(v.values) for k, v in config.shaping.grid.items()})
    t = config.transfer
    for name in ("distill", "bc", "ewc", "guide"):
        block = None if t is None else getattr(t, name)
        if block is not None:
            lists.update({f"transfer.{name}.{k}": len(v.values) for k, v in block.grid.items()})
    if plasticity:
        lists.update({path: len(grid.values) for path, grid in plasticity_grids(config).items()})
    return lists


def _check_zip_lengths(lengths: dict[str, int], among: list[str]) -> None:
    """A ConfigError naming the first list in `among` whose length differs from the first
    list's (search.kind zip needs one length)."""
    first = next(iter(lengths))
    for path in among:
        if lengths[path] != lengths[first]:
            raise ConfigError(
                f"{path}: got {lengths[path]} values; search.kind zip pairs the i-th "
                f"values of every list, so each needs as many as {first} ({lengths[first]})"
            )


def _check_zip(config: ExperimentConfig) -> ExperimentConfig:
    """search.kind zip: every swept list but the plasticity ones (_check_continual) has
    one length."""
    if config.search.kind == "zip":
        lengths = swept_lengths(config, plasticity=False)
        if lengths:
            _check_zip_lengths(lengths, among=list(lengths))
    return config


def import_modules(raw: Any) -> tuple[str, ...]:
    """Imports each module named in the config's `import_modules` (returns the names).

    A user's module outside research/ registers its own environments and potentials
    (`research.envs.register`) when imported, so a config names it here and every
    entry point that parses configs (train, resume, reproduce) sees them.
    """
    if raw is None:
        return ()
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(
            f"import_modules: got {raw!r}; must be a list of module names, e.g. [my_envs]"
        )
    for i, name in enumerate(raw):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"import_modules[{i}]: got {name!r}; must be a module name")
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise ConfigError(f"import_modules: cannot import {name!r}: {error}") from error
    return tuple(raw)


def _base_seed(value: Any, seeds: int) -> int:
    """runs.base_seed: run i's seed is base_seed + i, a uint32, so all of them must fit."""
    value = Rule("int", low=0).check("runs.base_seed", value)
    if value + seeds > 2**32:
        raise ConfigError(
            f"runs.base_seed: got {value}; with runs.seeds = {seeds} it must be at most "
            f"{2**32 - seeds} (2^32 - seeds: run seeds are uint32)"
        )
    return value


def _parse_compile_cache(raw: Any) -> str | None:
    """The setting: "default", a directory, or None for off (off, false or null)."""
    if raw in (None, False, "off"):
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(
            f"compile_cache: got {raw!r}; must be default (the user's cache home), off, "
            "or a directory"
        )
    return raw


# The parts of a transfer experiment that run alone as plain experiments: `phase: source`
# (or scratch) in a transfer config. Their run directories' config.yaml is the transfer's own
# with the phase set, so the one derivation below is all that makes them.
PHASES = ("source", "scratch")


def derive_phase(config: ExperimentConfig, phase: str) -> ExperimentConfig:
    """The plain experiment of one part of transfer experiment `config`. "source": its
    pretraining runs (what the checkpoint keeps), on transfer.source's env params and
    variants, total_timesteps and seeds; "scratch": its targets trained from scratch. Neither
    has the sweep (the fine-tuning runs' points) nor PBT (which tunes the fine-tuning runs)."""
    t = config.transfer
    if t is None:
        raise ConfigError(f"phase: got {phase!r}; a phase is a part of a transfer experiment")
    plain = {"sweep": {}, "transfer": None, "pbt": None, "name": f"{config.name}_{phase}"}
    if phase == "scratch":
        return _checked(dataclasses.replace(config, **plain))
    if t.source is None:
        raise ConfigError(
            "phase: got 'source'; this transfer loads transfer.checkpoint, it pretrains nothing"
        )
    s = t.source
    return _checked(
        dataclasses.replace(
            config,
            **plain,
            env=dataclasses.replace(config.env, params=s.params, variants=s.variants, shift=None),
            train=dataclasses.replace(config.train, total_timesteps=s.total_timesteps),
            runs=dataclasses.replace(
                config.runs, seeds=s.seeds, base_seed=_base_seed(config.runs.base_seed, s.seeds)
            ),
        )
    )


def _checked(config: ExperimentConfig) -> ExperimentConfig:
    """The checks across blocks, run on every parsed or derived experiment."""
    return _check_pbt(_check_continual(_check_zip(_check_meta(config))))


def parse_experiment(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validates a composed config mapping (e.g. Hydra's) into an ExperimentConfig."""
    raw = _mapping("config", raw)
    if raw.get("phase") is not None:  # the transfer parsed whole, then its part derived
        phase = Rule("str", choices=PHASES).check("phase", raw["phase"])
        return derive_phase(parse_experiment({k: v for k, v in raw.items() if k != "phase"}), phase)
    # First: the modules may register the env.id and the potential checked below.
    import_modules(raw.get("import_modules"))
    top = (
        "phase",
        "import_modules",
        "experiment_name",
        "agent",
        "env",
        "train",
        "runs",
        "sweep",
        "output_root",
        "progress",
        "plot",
        "transfer",
        "save_checkpoint",
        "checkpoint_states",
        "shaping",
        "search",
        "sinks",
        "analysis",
        "meta",
        "plasticity",
        "pbt",
        "compile_cache",
    )
    _reject_unknown("config", raw, top)
    agent = _parse_agent(raw.get("agent"))

    train_raw = _mapping("train", raw.get("train"))
    _reject_unknown("train", train_raw, _field_names(TrainConfig))
    train = _build_dataclass(TrainConfig, "train", train_raw)
    runs_raw = _mapping("runs", raw.get("runs"))
    _reject_unknown("runs", runs_raw, _field_names(RunsConfig))
    runs = _build_dataclass(RunsConfig, "runs", runs_raw)
    runs = dataclasses.replace(runs, base_seed=_base_seed(runs_raw.get("base_seed", 0), runs.seeds))
    name = raw.get("experiment_name", "default")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"experiment_name: got {name!r}; must be a non-empty name without '/'")
    output_root = raw.get("output_root", "results/runs")
    if not isinstance(output_root, str) or not output_root:
        raise ConfigError(f"output_root: got {output_root!r}; must be a directory path")
    search = _parse_search(raw.get("search"))
    experiment = _build_dataclass(
        ExperimentConfig,
        "",
        raw,
        name=name,
        agent=agent,
        env=_parse_env(raw.get("env")),
        train=train,
        runs=runs,
        sweep=_parse_sweep(raw.get("sweep"), agent, search),
        output_root=output_root,
        transfer=_parse_transfer(raw.get("transfer"), agent),
        shaping=_parse_shaping(raw.get("shaping")),
        search=search,
        sinks=_parse_sinks(raw.get("sinks")),
        analysis=_parse_analysis(raw.get("analysis")),
        meta=_parse_meta(raw.get("meta"), agent),
        plasticity=_parse_plasticity(raw.get("plasticity"), agent),
        pbt=_parse_pbt(raw.get("pbt"), agent),
        compile_cache=_parse_compile_cache(raw.get("compile_cache", "default")),
    )
    return _checked(experiment)
