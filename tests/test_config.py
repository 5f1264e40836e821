"""Every bad config value stops with one message naming the field, the value and what is allowed."""

import copy

import pytest

from research.config import ConfigError, derive_phase, parse_experiment
from research.pipelines.train import prepare
from tests.conftest import CONFIGS, compose_raw

BASE = compose_raw("progress=false")


def _with(**changes):
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return raw


def test_issue_example_composes_to_128_runs():
    raw = compose_raw("agent=ppo", "env=cartpole", "runs.seeds=64", "sweep.lr=[1e-3,3e-4]")
    prepared = prepare(parse_experiment(raw))
    assert len(prepared.runs) == 128
    assert sorted(set(prepared.runs.hparams.lr.tolist())) == pytest.approx([3e-4, 1e-3])
    assert prepared.runs.table.columns.tolist() == ["run", "seed", "lr"]


def test_env_variant_grid_from_overrides():
    raw = compose_raw(
        "runs.seeds=2",
        "env.variants.length=[0.5,1.0]",
        "env.params.gravity=5.0",
        "sweep.ent_coef={start: 0, stop: 0.02, num: 3}",
    )
    prepared = prepare(parse_experiment(raw))
    assert len(prepared.runs) == 2 * 2 * 3
    assert set(prepared.runs.env_params.gravity.tolist()) == {5.0}
    assert set(prepared.runs.env_params.polemass_length.round(4).tolist()) == {0.05, 0.1}


BAD = [
    (dict(agent__name="sac"), r"agent.name: got 'sac'; allowed: ppo"),
    (dict(agent__lr=-1e-3), r"agent.lr: got -0.001; must be a float with 0 < x"),
    (dict(agent__lr="fast"), r"agent.lr: got 'fast'; must be a float"),
    (dict(agent__gamma=1.5), r"agent.gamma: got 1.5; must be a float with 0 <= x <= 1"),
    (dict(agent__num_envs=0), r"agent.num_envs: got 0; must be an int with 1 <= x"),
    (dict(agent__num_steps=2.5), r"agent.num_steps: got 2.5; must be an int"),
    (
        dict(agent__activation="gelu"),
        r"agent.activation: got 'gelu'; must be one of 'tanh', 'relu'",
    ),
    (dict(agent__hidden_sizes=[64, -1]), r"agent.hidden_sizes\[1\]: got -1"),
    (
        dict(agent__num_minibatches=3),
        r"agent.num_minibatches: got 3; must divide num_envs \* "
        r"num_steps = 4 \* 128 = 512",
    ),
    (dict(agent__learning_rate=1e-3), r"agent.learning_rate: unknown field; allowed: .*lr"),
    (dict(runs__seeds=0), r"runs.seeds: got 0; must be an int with 1 <= x"),
    (dict(train__total_timesteps=-5), r"train.total_timesteps: got -5"),
    (dict(train__num_logs=0), r"train.num_logs: got 0"),
    (dict(sweep__lr=[1e-3, -1.0]), r"sweep.lr\[1\]: got -1.0; must be a float with 0 < x"),
    (dict(sweep__lr=[]), r"sweep.lr: got \[\]; must be a non-empty list"),
    (dict(sweep__num_envs=[4, 8]), r"sweep.num_envs: 'num_envs' changes array shapes.*multirun"),
    (dict(sweep__bogus=[1]), r"sweep.bogus: not a hyperparameter of agent 'ppo'"),
    (dict(sweep__lr={"start": 1e-4, "stop": 1e-3}), r"sweep.lr.num: missing"),
    (
        dict(sweep__lr={"start": 0, "stop": 1e-3, "num": 3, "log": True}),
        r"sweep.lr.start: got 0.0; a log range needs start > 0",
    ),
    (
        dict(sweep__lr={"low": 1e-3, "high": 1e-4, "num": 3}),
        r"sweep.lr.high: got 0.0001; must be > low = 0.001",
    ),
    (
        dict(sweep__lr={"start": 1e-4, "low": 1e-4, "high": 1e-3, "num": 3}),
        r"sweep.lr.low: set beside start/stop \(their old names\); write \{low, high\} only",
    ),
    (dict(sweep__lr={"low": 1e-4, "high": 1e-3, "nun": 3}), r"sweep.lr.nun: unknown field"),
    (dict(experiment_name=""), r"experiment_name: got ''"),
    (dict(extra_key=1), r"config.extra_key: unknown field"),
    (dict(runs__max_runs_per_chunk=0), r"runs.max_runs_per_chunk: got 0"),
    (dict(env__params__gravity="high"), r"env.params.gravity: got 'high'; must be a float"),
]


@pytest.mark.parametrize("changes,message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_value_is_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        parse_experiment(_with(**changes))


BAD_PREPARE = [
    (dict(env__id="CartPole-v9"), r"env.id: got 'CartPole-v9'; allowed: CartPole-v1"),
    (dict(env__params__pole_length=1.0), r"env.params.pole_length: not a field of CartPole-v1"),
    (dict(env__params__total_mass=2.0), r"env.params.total_mass: .*derived"),
    (dict(env__variants__mass=[1.0]), r"env.variants.mass: not a field of CartPole-v1"),
    (dict(train__total_timesteps=1000), r"train.total_timesteps: got 1000; .* at least 12800"),
    (dict(runs__num_devices=64), r"runs.num_devices: got 64; only \d+ cpu device"),
]


@pytest.mark.parametrize(
    "changes,message", BAD_PREPARE, ids=[m.split(":")[0] for _, m in BAD_PREPARE]
)
def test_bad_value_is_named_before_compiling(changes, message):
    with pytest.raises(ConfigError, match=message):
        prepare(parse_experiment(_with(**changes)))


# ------------------------------------------------------------ a transfer's phases, derived

TRANSFERS = [
    name
    for name in sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
    if (compose_raw(f"experiment={name}").get("transfer") or {}).get("source")
]


def _edited_before(raw: dict, phase: str) -> dict:
    """How source/ and scratch/ configs were made before 2026-12-03: by editing the raw
    transfer config. Run directories written then hold these; they must parse to the
    configs derive_phase gives, so that they reproduce."""
    name = f"{raw.get('experiment_name', 'transfer')}_{phase}"
    if phase == "scratch":
        return {**raw, "experiment_name": name, "sweep": {}, "transfer": None, "pbt": None}
    source = raw["transfer"]["source"]
    env = {**raw["env"], "params": source.get("params") or {}}
    env = {**env, "variants": source.get("variants") or {}, "shift": None}
    return {
        **{k: v for k, v in raw.items() if k != "transfer"},
        "pbt": None,
        "experiment_name": name,
        "env": env,
        "sweep": {},
        "train": {**raw["train"], "total_timesteps": source["total_timesteps"]},
        "runs": {**raw["runs"], "seeds": source.get("seeds", 1)},
    }


@pytest.mark.parametrize("name", TRANSFERS)
def test_a_transfers_phases_are_the_configs_its_run_directories_kept_before(name):
    raw = compose_raw(f"experiment={name}")
    config = parse_experiment(raw)
    for phase in ("source", "scratch"):
        derived = derive_phase(config, phase)
        assert derived == parse_experiment(_edited_before(raw, phase)), (name, phase)
        assert derived == parse_experiment({**raw, "phase": phase})
        assert derived.transfer is None and derived.pbt is None and not derived.sweep
    assert derive_phase(config, "source").runs.seeds == config.transfer.source.seeds


@pytest.mark.parametrize(
    "changes, message",
    [
        (("phase=source",), "phase: got 'source'; a phase is a part of a transfer experiment"),
        (
            ("experiment=transfer_cartpole_ppo", "phase=sauce"),
            "phase: got 'sauce'; must be one of 'source', 'scratch'",
        ),
        (
            ("experiment=transfer_cartpole_ppo", "+transfer.checkpoint=/some/where"),
            "phase: got 'source'; this transfer loads transfer.checkpoint, it pretrains nothing",
        ),
    ],
)
def test_a_bad_phase_is_named(changes, message):
    raw = compose_raw(*(c for c in changes if not c.startswith("phase=")))
    phase = next((c.split("=")[1] for c in changes if c.startswith("phase=")), "source")
    with pytest.raises(ConfigError, match=message):
        parse_experiment({**raw, "phase": phase})
