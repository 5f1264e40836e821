"""The experiment's typed, frozen config dataclasses: one block each (env, train, runs,
transfer, shaping, search, sinks, analysis, meta, plasticity). Agents declare their own
settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

from flax import struct

from research.config.rules import (
    BOOL,
    FRACTION,
    NONNEG_FLOAT,
    POS_FLOAT,
    POS_INT,
    UNIT,
    UNIT_OPEN,
    Rule,
    _f,
)

# --------------------------------------------------------------------------- experiment


@dataclass(frozen=True)
class AgentSpec:
    name: str
    config: Any  # the agent's static config dataclass
    hparams: Any  # the agent's hparams dataclass (python floats)


@dataclass(frozen=True)
class ValueGrid:
    """Values a swept field takes: an explicit list, or a linear/log range."""

    values: tuple[float, ...]


@dataclass(frozen=True)
class Discretize:
    """Observation -> state index, for tabular agents on continuous envs.

    bins[d] equal bins over [low[d], high[d]] per observation dimension; values outside
    fall into the edge bins. prod(bins) states.
    """

    bins: tuple[int, ...] = field(metadata={"rule": POS_INT, "sequence": True})
    low: tuple[float, ...] = field(metadata={"rule": Rule("float"), "sequence": True})
    high: tuple[float, ...] = field(metadata={"rule": Rule("float"), "sequence": True})


MAX_STATES = 2**31 - 1  # state indices are int32


@dataclass(frozen=True)
class EnvShift:
    """The env changes during training: `params` overrides take effect from fraction `at`
    of training (rounded to a log boundary), ramping linearly over fraction `drift`
    (0 = a step change)."""

    params: Mapping[str, float]
    at: float = _f(MISSING, FRACTION)
    drift: float = _f(0.0, UNIT)  # and at most 1 - at (checked by the parser)


@dataclass(frozen=True)
class EnvSchedule:
    """A continual setting: the env runs through phases, each `params` entry's overrides
    on top of the run's own variant ({} = the variant itself), switching every `every`
    updates (an int) or fraction of training (a float in (0, 1)), on log boundaries; after
    the last phase the env stays there, or with `cycle` starts the sequence again."""

    params: tuple[Mapping[str, float], ...]
    every: int | float
    cycle: bool = _f(False, BOOL)


@dataclass(frozen=True)
class EnvConfig:
    id: str
    params: Mapping[str, float]  # fixed overrides of EnvParams fields
    variants: Mapping[str, ValueGrid]  # EnvParams fields -> values, crossed as a grid
    discretize: Discretize | None = None
    shift: EnvShift | None = None
    schedule: EnvSchedule | None = None


@dataclass(frozen=True)
class TrainConfig:
    total_timesteps: int = _f(MISSING, POS_INT)
    num_logs: int = _f(25, POS_INT)


# What a run whose losses or parameters stop being finite does (RunsConfig.on_diverge).
ON_DIVERGE = ("continue", "stop")


@dataclass(frozen=True)
class RunsConfig:
    seeds: int = _f(8, POS_INT)
    base_seed: int = 0  # checked against seeds (parse._base_seed)
    max_runs_per_chunk: int | None = _f(None, POS_INT, optional=True)
    memory_budget_gb: float | None = _f(None, POS_FLOAT, optional=True)
    num_devices: int | None = _f(None, POS_INT, optional=True)
    # A run whose losses or parameters stop being finite: "continue" trains it on, "stop"
    # keeps its last finite state (research.runner.train.make_train, on_diverge).
    on_diverge: str = _f("continue", Rule("str", choices=ON_DIVERGE))
    # Processes of one program (jax.distributed, research.platform.start_processes): None
    # takes what the launcher started; a number must equal it (a clear error otherwise).
    processes: int | None = _f(None, POS_INT, optional=True)


@dataclass(frozen=True)
class FinetuneConfig:
    """How a fine-tuning run adopts its checkpoint (research/extensions/finetune.py)."""

    load: str = _f("all", Rule("str", choices=("all", "torso")))  # torso: heads re-initialised
    freeze: str = _f("none", Rule("str", choices=("none", "torso")))
    reset_optimizer: bool = _f(True, BOOL)

    @property
    def frozen_groups(self) -> tuple[str, ...]:
        return () if self.freeze == "none" else (self.freeze,)


@dataclass(frozen=True)
class SourceConfig:
    """Pretraining: the source task(s) of the target's env id; one checkpoint per
    source variant x seed."""

    params: Mapping[str, float]
    variants: Mapping[str, ValueGrid]
    total_timesteps: int = _f(MISSING, POS_INT)
    seeds: int = _f(1, POS_INT)


@dataclass(frozen=True)
class EvaluationConfig:
    """Greedy evaluation: num_envs episodes of at most num_steps steps per run;
    held_out: variants never trained on (a grid); obs_noise: observation-noise stds."""

    held_out: Mapping[str, ValueGrid]
    obs_noise: tuple[float, ...]
    num_envs: int = _f(16, POS_INT)
    num_steps: int | None = _f(None, POS_INT, optional=True)


@dataclass(frozen=True)
class TransferConfig:
    """Pretrain on `source` (or load `checkpoint`), fine-tune on the experiment's env,
    and (with `scratch`) train from scratch on it for comparison."""

    checkpoint: str | None
    source: SourceConfig | None
    finetune: FinetuneConfig
    evaluation: EvaluationConfig
    scratch: bool = _f(True, BOOL)
    threshold: float | None = _f(None, Rule("float"), optional=True)
    # Methods against forgetting (research/extensions/keep.py), None = off:
    distill: Regulariser | None = None  # weight * KL(pi_0 || pi) on the batch's states
    bc: Regulariser | None = None  # weight * -log pi(a_0 | s_0) on stored source data
    ewc: Regulariser | None = None  # weight / 2 * sum F (theta - theta_0)^2
    guide: Guide | None = None  # the checkpoint acts the first h steps of each episode
    forgetting: ForgettingConfig | None = None  # source return during training


# research.extensions.keep.weight_at
WEIGHT_SCHEDULES = ("constant", "linear", "exponential", "gated")


@struct.dataclass
class WeightHParams:
    """A fine-tuning regulariser's traced weight (each a scalar, or [R] across runs): weight
    times its schedule's factor: constant 1; linear 1 -> 0 over the first anneal_fraction
    of training; exponential exp(-decay * progress); gated (R0 - R) / (margin * |R0|)
    clipped to [0, 1], R0 the checkpoint's greedy return on the run's own task when it
    starts and R the learner's, measured after every segment: the term holds the learner
    only while it does worse there than the checkpoint did."""

    weight: float = _f(1.0, NONNEG_FLOAT)
    schedule: float = _f(0.0, Rule("float"))  # index into WEIGHT_SCHEDULES
    anneal_fraction: float = _f(1.0, UNIT_OPEN)
    decay: float = _f(5.0, NONNEG_FLOAT)
    margin: float = _f(0.1, POS_FLOAT)


@dataclass(frozen=True)
class Regulariser:
    """hparams: base values; grid: the fields swept (schedule as indices); batch_size:
    stored source states per update (bc) or that the Fisher averages over (ewc)."""

    hparams: WeightHParams
    grid: Mapping[str, ValueGrid]
    batch_size: int = _f(256, POS_INT)  # distill has none: it reads each minibatch


GUIDE_SCHEDULES = ("constant", "linear", "exponential", "threshold")


@struct.dataclass
class GuideHParams:
    """Guide-policy roll-in (jump-start RL): the checkpoint acts the first h steps of every
    episode, h = horizon * the curriculum's factor: constant, linear or exponential in the
    fraction of training done (as WeightHParams), or "threshold": h falls by horizon /
    stages each time the running mean of the training return reaches `threshold`."""

    horizon: float = _f(100.0, NONNEG_FLOAT)
    schedule: float = _f(0.0, Rule("float"))  # index into GUIDE_SCHEDULES
    anneal_fraction: float = _f(1.0, UNIT_OPEN)
    decay: float = _f(5.0, NONNEG_FLOAT)
    threshold: float = _f(0.0, Rule("float"))
    stages: float = _f(5.0, Rule("float", low=1.0))
    return_rate: float = _f(0.05, UNIT_OPEN)  # step of the return's running mean per update


@dataclass(frozen=True)
class Guide:
    hparams: GuideHParams
    grid: Mapping[str, ValueGrid]


@dataclass(frozen=True)
class ForgettingConfig:
    """Every `every` segments (and at the last), inside the program: the greedy return of
    num_envs episodes on the run's source task, and KL(pi_0 || pi) on its stored states."""

    every: int = _f(5, POS_INT)
    num_envs: int = _f(8, POS_INT)


# ------------------------------------------------------------------------- plasticity
# research/extensions/plasticity.py; docs/plasticity.md. Every `every` of an intervention
# counts updates (static: when it acts); its strengths are traced (swept in one program).


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Plasticity diagnostics, per run inside the program, every `every` segments (and at
    the last) on `probe_size` states of the latest rollout: dormant fractions at each of
    `taus`, effective rank and srank (`srank_delta`) of the penultimate features, weight
    norm and distance to the start, and the last update's policy churn."""

    every: int = _f(5, POS_INT)
    probe_size: int | None = _f(None, POS_INT)  # None: 256, or the whole rollout if smaller
    taus: tuple[float, ...] = _f((0.0, 0.025), NONNEG_FLOAT, sequence=True)
    srank_delta: float = _f(0.01, FRACTION)


@struct.dataclass
class RedoHParams:
    """ReDo's traced threshold: units with score <= tau are recycled (a negative tau
    recycles none: the off point of a sweep, bit for bit no ReDo)."""

    tau: float = _f(0.025, Rule("float", low=-1.0, high=1.0))


@struct.dataclass
class ShrinkPerturbHParams:
    """theta <- alpha * theta + sigma * theta_fresh (alpha = 1, sigma = 0: off)."""

    alpha: float = _f(0.8, Rule("float", low=0.0, high=1.0))
    sigma: float = _f(0.2, NONNEG_FLOAT)


@struct.dataclass
class ResetHParams:
    """Whether the run resets its last layers (traced, so reset and no-reset runs share
    one program)."""

    enabled: bool = _f(True, BOOL)


@dataclass(frozen=True)
class Intervention:
    """every: updates between two applications (after updates every, 2 every, ...);
    hparams: the traced strengths' base values; grid: the swept ones; layers: how many
    last Dense layers a reset re-initialises (1 = the heads), unused elsewhere."""

    every: int
    hparams: Any
    grid: Mapping[str, ValueGrid]
    layers: int = 1


@dataclass(frozen=True)
class PlasticityConfig:
    """None = off, for each part."""

    diagnostics: DiagnosticsConfig | None = None
    redo: Intervention | None = None
    shrink_perturb: Intervention | None = None
    reset: Intervention | None = None


# --------------------------------------------------------------------------------- pbt
# research/extensions/pbt.py; docs/pbt.md.

PBT_INITIAL = ("keep", "sample")
# The training return, or (fine-tuning with transfer.forgetting) the in-training source
# evaluation's greedy return.
PBT_FITNESS = ("episode_return", "source_return")
# Traced agent hyperparameters PBT refuses to change mid-run: read only when a run starts,
# or deciding from the config which parts a program has (research/pipelines/train.py).
PBT_FIXED = {
    "init_log_std": "read only when a run starts",
    "l2_init": "its loss term is plugged in from the config's values",
    "weight_decay": "its decay term is plugged in from the config's values",
}


@dataclass(frozen=True)
class PBTConfig:
    """Population-based training inside the program. Populations are consecutive groups of
    `population_size` runs of the runs axis. Every `interval` segments, members are ranked
    by `fitness` (a logged metric, NaN-aware mean over the last `window` segments); each of
    the bottom `fraction` copies the agent state and hyperparameters of a member drawn from
    the top `fraction`, then each field of `perturb` is multiplied by one of its factors or,
    with `resample_probability`, redrawn from its `bounds` (log-uniform when low > 0), and
    clipped to them. initial "sample": members start from values drawn from the bounds."""

    # (field, factors) and (field, (low, high)) pairs, sorted by field: hashable, as the
    # extension holding this config is part of the compiled programs' cache key
    perturb: tuple[tuple[str, tuple[float, ...]], ...]
    bounds: tuple[tuple[str, tuple[float, float]], ...]
    population_size: int = _f(MISSING, Rule("int", low=2))
    interval: int = _f(4, POS_INT)
    fraction: float = _f(0.25, Rule("float", low=0.0, high=0.5, low_open=True))
    window: int = _f(1, POS_INT)
    fitness: str = _f("episode_return", Rule("str", choices=PBT_FITNESS))
    resample_probability: float = _f(0.0, Rule("float", low=0.0, high=1.0))
    initial: str = _f("keep", Rule("str", choices=PBT_INITIAL))

    @property
    def num_replaced(self) -> int:
        """Members replaced per generation (and the size of the top the parents come from)."""
        return int(self.fraction * self.population_size)

    @property
    def fields(self) -> tuple[str, ...]:
        """The perturbed hyperparameters, sorted."""
        return tuple(name for name, _ in self.perturb)

    def factors(self, name: str) -> tuple[float, ...]:
        return dict(self.perturb)[name]

    def bound(self, name: str) -> tuple[float, float]:
        return dict(self.bounds)[name]


SHAPING_SCHEDULES = ("constant", "linear", "exponential", "adaptive")


@struct.dataclass
class ShapingHParams:
    """Traced shaping settings (each a scalar, or [R] across runs); see research/rl/shaping.py.

    schedule: index into SHAPING_SCHEDULES; the weight is weight * the schedule's factor.
    """

    weight: float = _f(1.0, Rule("float"))
    schedule: float = _f(0.0, Rule("float"))
    anneal_fraction: float = _f(1.0, UNIT_OPEN)  # linear: reaches 0 here
    decay: float = _f(5.0, NONNEG_FLOAT)  # exponential: exp(-decay * progress)
    return_low: float = _f(0.0, Rule("float"))  # adaptive: full weight at or below
    return_high: float = _f(1.0, Rule("float"))  # adaptive: zero weight at or above
    return_rate: float = _f(0.05, UNIT_OPEN)  # adaptive: running-mean step per update


@dataclass(frozen=True)
class ShapingConfig:
    """kind "potential": F = gamma Phi(s') - Phi(s), with Phi the env's progress potential
    `name` or ("value") the value function of run 0 of `checkpoint`; kind "bonus":
    weight / (distance(s') + 1), NOT policy-preserving (an ablation).
    hparams: base values; grid: the shaping fields swept (schedule as indices)."""

    name: str | None
    checkpoint: str | None
    hparams: ShapingHParams
    grid: Mapping[str, ValueGrid]
    kind: str = _f("potential", Rule("str", choices=("potential", "bonus")))
    potential: str = _f("progress", Rule("str", choices=("progress", "value")))
    threshold: float | None = _f(None, Rule("float"), optional=True)


@dataclass(frozen=True)
class SearchConfig:
    """How `sweep` values combine: "grid" crosses them; "random" draws `num_samples` joint
    points (a range {low, high, log} is sampled uniformly, or log-uniformly; a list is
    sampled among its values); "zip" pairs the i-th values of every list (the sweep's and
    the swept shaping and transfer-method fields alike, all of one length): a paired design
    such as one fine-tuning method per point. All of them traced in one program."""

    kind: str = _f("grid", Rule("str", choices=("grid", "random", "zip")))
    num_samples: int = _f(16, POS_INT)
    seed: int = _f(0, Rule("int", low=0))


# sink -> (the module it imports, the pip extra that installs it)
SINK_PACKAGES = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}


@dataclass(frozen=True)
class SinksConfig:
    """Optional metric sinks, written from the finished run directory (research/sinks.py)."""

    tensorboard: bool = _f(False, BOOL)  # event files in <run dir>/tensorboard/
    wandb: bool = _f(False, BOOL)  # an offline wandb run in <run dir>/wandb/


@dataclass(frozen=True)
class AnalysisConfig:
    """optimality_threshold: the score the optimality gap is measured to (e.g. the env's
    maximum return); None: the best final return of any run in the run directory."""

    optimality_threshold: float | None = None


@dataclass(frozen=True)
class FieldRange:
    """A distribution over one scalar: uniform on [low, high] (log-uniform with `log`), or,
    when `values` is given, uniform among those values."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class ReptileConfig:
    """First-order Reptile: `iterations` outer steps; each fine-tunes the initialisation on
    `meta_batch` sampled variants for `inner_timesteps` env steps and moves it by
    outer_lr (linearly annealed to 0 with `anneal`) towards the mean fine-tuned params."""

    iterations: int = _f(20, POS_INT)
    meta_batch: int = _f(4, POS_INT)
    inner_timesteps: int = _f(8192, POS_INT)
    outer_lr: float = _f(1.0, UNIT_OPEN)
    anneal: bool = _f(True, BOOL)


ES_ALGORITHMS = ("snes", "open_es")


@dataclass(frozen=True)
class ESConfig:
    """Evolution strategies (evosax) over fine-tuning hyperparameters and shaping parameters.

    Each generation: `population` candidates, each fine-tuned (from the pretrained source,
    or from scratch) on `variants` sampled variants x `seeds` seeds for `inner_timesteps`;
    fitness = the unshaped training return (mean over logs: "auc", or the last log: "final").
    search: field -> range; agent hyperparameters by name, shaping ones as shaping.<field>.
    """

    algorithm: str = _f("snes", Rule("str", choices=ES_ALGORITHMS))
    generations: int = _f(10, POS_INT)
    population: int = _f(8, Rule("int", low=2))
    variants: int = _f(2, POS_INT)
    seeds: int = _f(1, POS_INT)
    inner_timesteps: int = _f(16384, POS_INT)
    std_init: float = _f(1.0, POS_FLOAT)  # of the search distribution, in sigmoid space
    lr: float = _f(1.0, POS_FLOAT)  # SGD step of the search distribution's mean
    fitness: str = _f("auc", Rule("str", choices=("auc", "final")))
    init: str = _f("source", Rule("str", choices=("source", "scratch")))
    search: Mapping[str, FieldRange] = field(default_factory=dict)


@dataclass(frozen=True)
class MetaEvaluationConfig:
    """Greedy evaluation before and after fine-tuning on the held-out variants."""

    num_envs: int = _f(8, POS_INT)
    num_steps: int | None = _f(None, POS_INT, optional=True)  # None: the env's max_steps_in_episode
    threshold: float | None = _f(None, Rule("float"), optional=True)  # steps to this return


@dataclass(frozen=True)
class MetaConfig:
    """Meta-learning (research/pipelines/meta.py): `method` meta-trains `seeds` independent
    times on variants drawn from `variants`, then every initialisation (meta-learned,
    scratch, single-source pretraining on `source`, multi-task pretraining on the
    variant distribution) is fine-tuned on the `held_out` grid for train.total_timesteps.
    pretrain_timesteps: the pretraining budget of the baselines, and of the source that ES
    fine-tunes (Reptile only, None: the same as Reptile's inner env steps in all)."""

    method: str
    variants: Mapping[str, FieldRange]
    held_out: Mapping[str, ValueGrid]
    source: Mapping[str, float]
    pretrain_timesteps: int | None
    reptile: ReptileConfig
    es: ESConfig
    evaluation: MetaEvaluationConfig
    seeds: int = _f(2, POS_INT)
    seed: int = _f(0, Rule("int", low=0))


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    agent: AgentSpec
    env: EnvConfig
    train: TrainConfig
    runs: RunsConfig
    sweep: Mapping[str, ValueGrid]  # hparam name -> values, crossed (grid) or aligned (random)
    output_root: str
    progress: bool = _f(True, BOOL)
    plot: bool = _f(True, BOOL)
    transfer: TransferConfig | None = None
    save_checkpoint: bool = _f(False, BOOL)
    # states of the source task stored with each checkpoint run (behaviour cloning, EWC,
    # forgetting): a greedy rollout of the checkpoint's policy
    checkpoint_states: int = _f(1024, Rule("int", low=0))
    shaping: ShapingConfig | None = None
    search: SearchConfig = SearchConfig()
    sinks: SinksConfig = SinksConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    meta: MetaConfig | None = None
    plasticity: PlasticityConfig | None = None
    pbt: PBTConfig | None = None
    # jax's persistent compilation cache (research.platform.compile_cache_dir): "default"
    # (the user's cache home), a directory, or None (off)
    compile_cache: str | None = "default"
