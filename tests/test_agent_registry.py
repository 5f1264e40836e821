"""The agent registry: one entry per agent module, its capabilities, and the agent YAMLs
(configs/agent/<name>.yaml), which must hold exactly the dataclass defaults."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import jax
import pytest
from omegaconf import OmegaConf

from research import bench
from research.agents import AGENTS, AgentEntry, agent_of_state, check_env, make_agent
from research.agents.ppo import PPOConfig, PPOHParams, PPOState, make
from research.config import ConfigError, parse_experiment
from research.envs import Env, EnvSpec
from research.rl.optim import OptState
from tests.conftest import compose_raw

ROOT = Path(__file__).resolve().parents[1]
AGENT_YAMLS = ROOT / "configs" / "agent"
NAMES = list(AGENTS)

DISCRETE = EnvSpec("hand", (3,), True, num_actions=2)
CONTINUOUS = EnvSpec(
    "hand-continuous", (3,), False, action_dim=1, action_low=(-1.0,), action_high=(1.0,)
)
STATES = EnvSpec("hand-states", (), True, num_actions=2, num_states=5)


def _fields(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _yaml(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(AGENT_YAMLS / f"{name}.yaml"))


# --------------------------------------------------------------------------- YAML drift


def test_every_agent_yaml_is_a_registered_agent_and_back():
    assert sorted(p.stem for p in AGENT_YAMLS.glob("*.yaml")) == sorted(NAMES)


def yaml_drift(entry: AgentEntry, raw: dict) -> list[str]:
    """How an agent YAML differs from the entry's dataclass defaults ([] = not at all)."""
    static, traced = _fields(entry.config), _fields(entry.hparams)
    defaults = {**static, **traced}
    problems = [f"both static and traced: {k}" for k in sorted(static.keys() & traced.keys())]
    problems += [f"top-level key {k}" for k in sorted(set(raw) - {"agent", "sweep"})]
    agent = dict(raw.get("agent") or {})
    if agent.pop("name", None) != entry.name:
        problems.append("agent.name is not the entry's name")
    problems += [f"agent.{k}: not a field" for k in sorted(agent.keys() - defaults.keys())]
    problems += [f"agent.{k}: missing" for k in sorted(defaults.keys() - agent.keys())]
    for key in sorted(agent.keys() & defaults.keys()):
        value, want = agent[key], defaults[key]
        want = list(want) if isinstance(want, tuple) else want
        if value != want or isinstance(value, bool) != isinstance(want, bool):
            problems.append(f"agent.{key}: YAML {value!r}, default {want!r}")
    # sweep: one null placeholder per hyperparameter, none for static settings
    sweep = raw.get("sweep") or {}
    if sorted(sweep) != sorted(traced):
        problems.append(f"sweep keys {sorted(sweep)}, hyperparameters {sorted(traced)}")
    problems += [f"sweep.{k}: {v!r}, not null" for k, v in sweep.items() if v is not None]
    return problems


@pytest.mark.parametrize("name", NAMES)
def test_agent_yaml_holds_exactly_the_dataclass_defaults(name):
    assert yaml_drift(AGENTS[name], _yaml(name)) == []


def test_yaml_drift_is_caught():
    raw = _yaml("ppo")
    raw["agent"].update(lr=1e-3, hidden_sizes=[32], normalize_obs=0, depth=3)
    del raw["agent"]["gamma"]
    raw["sweep"]["num_envs"] = None
    raw["sweep"]["lr"] = [1e-3]
    assert yaml_drift(AGENTS["ppo"], raw) == [
        "agent.depth: not a field",
        "agent.gamma: missing",
        "agent.hidden_sizes: YAML [32], default [64, 64]",
        "agent.lr: YAML 0.001, default 0.00025",
        "agent.normalize_obs: YAML 0, default False",
        "sweep keys ['clip_eps', 'ent_coef', 'gae_lambda', 'gamma', 'init_log_std', 'l2_init', "
        "'lr', 'max_grad_norm', 'num_envs', 'reward_scale', 'vf_coef', 'weight_decay'], "
        "hyperparameters ['clip_eps', 'ent_coef', 'gae_lambda', 'gamma', 'init_log_std', "
        "'l2_init', 'lr', 'max_grad_norm', 'reward_scale', 'vf_coef', 'weight_decay']",
        "sweep.lr: [0.001], not null",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_composed_agent_config_parses_to_the_defaults(name):
    agent = parse_experiment(compose_raw(f"agent={name}")).agent
    assert agent.name == name
    assert agent.config == AGENTS[name].config()
    assert agent.hparams == AGENTS[name].hparams()


# --------------------------------------------------------------------------- the registry


def test_each_agent_module_owns_its_entry_settings_and_state():
    for name, entry in AGENTS.items():
        module = sys.modules[entry.make.__module__]
        assert module.__name__ == f"research.agents.{name}" and module.ENTRY is entry
        for cls in (entry.config, entry.hparams, entry.state):
            assert cls.__module__ == module.__name__


def test_settings_classes_are_still_importable_from_config():
    from research import config

    assert config.PPOConfig is PPOConfig and config.PPOHParams is PPOHParams
    for entry in AGENTS.values():
        assert getattr(config, entry.hparams.__name__) is entry.hparams
    with pytest.raises(AttributeError):
        config.NoSuchConfig  # noqa: B018


def test_capabilities():
    table = {
        name: (e.discrete_actions, e.continuous_actions, e.state_indices, e.gradient_based)
        for name, e in AGENTS.items()
    }
    assert table == {
        "ppo": (True, True, False, True),
        "q_learning": (True, False, True, False),
        "dqn": (True, False, False, True),
        "reinforce": (True, True, False, True),
    }


def test_checkpoint_network_fields_are_those_checkpoints_were_written_with():
    # Checkpoints of format 1 record these settings; a change would make old ones misfit.
    assert {n: e.network_fields for n, e in AGENTS.items()} == {
        "ppo": ("hidden_sizes", "activation", "normalize_obs"),
        "q_learning": (),
        "dqn": ("mode", "hidden_sizes", "activation", "layer_norm"),
        "reinforce": ("hidden_sizes", "activation", "normalize_obs"),
    }


def _spec_for(entry: AgentEntry) -> EnvSpec:
    return STATES if entry.state_indices else DISCRETE


@pytest.mark.parametrize("name", NAMES)
def test_state_declares_what_finetuning_adopts(name):
    entry = AGENTS[name]
    agent = make_agent(name, entry.config(), _spec_for(entry), 10)
    state = jax.eval_shape(agent.init, jax.random.key(0), entry.hparams())
    assert isinstance(state, entry.state) and agent_of_state(state) is entry
    if entry.gradient_based:
        assert isinstance(state.opt_state, OptState)
    for field in (*entry.loaded_fields, *entry.param_copies):
        assert hasattr(state, field)


def test_agent_of_an_unknown_state_is_an_error():
    with pytest.raises(TypeError, match="the state of no registered agent"):
        agent_of_state(object())


def test_env_checks_follow_the_capabilities():
    for name, entry in AGENTS.items():
        spec = _spec_for(entry)
        check_env(entry, spec)
        if entry.continuous_actions:
            check_env(entry, CONTINUOUS)
        else:
            with pytest.raises(
                ConfigError,
                match=rf"agent.name: '{name}' needs discrete actions; env.id 'hand-continuous' "
                r"has continuous actions \(use ppo or reinforce\)",
            ):
                check_env(entry, CONTINUOUS)
    with pytest.raises(ConfigError, match="agent.name: 'q_learning' is tabular and needs discrete"):
        check_env(AGENTS["q_learning"], DISCRETE)


def test_a_malformed_entry_is_refused():
    good = dict(
        name="x",
        make=make,
        config=PPOConfig,
        hparams=PPOHParams,
        state=PPOState,
        discrete_actions=True,
        continuous_actions=True,
    )
    AgentEntry(**good)
    bad = [
        (
            dict(network_fields=("depth",)),
            r"network_fields \['depth'\] are not fields of PPOConfig",
        ),
        (dict(loaded_fields=("q",)), r"PPOState has no fields \['q'\]"),
        (dict(hparams=AGENTS["q_learning"].hparams), "gradient-based, but QLearningHParams has"),
        (dict(discrete_actions=False, continuous_actions=False), "neither discrete nor"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            AgentEntry(**{**good, **change})


def test_shared_code_names_no_agent():
    shared = [
        "research/config/__init__.py",
        "research/config/rules.py",
        "research/config/schema.py",
        "research/config/parse.py",
        "research/checkpoint.py",
        "research/agents/__init__.py",
        "research/extensions/finetune.py",
        "research/pipelines/train.py",
    ]
    for path in shared:
        text = (ROOT / path).read_text()
        assert "hasattr(" not in text, path
        for name in NAMES:
            assert f'"{name}"' not in text and f"'{name}'" not in text, (path, name)


# --------------------------------------------------------------------------- benchmark


@pytest.mark.parametrize("key", list(bench.AGENTS))
def test_benchmark_agents_are_registered_with_a_default_env_they_can_act_in(key):
    config = parse_experiment(compose_raw(*bench.agent_overrides(key, None, [])))
    env = Env(config.env.id, config.env.discretize)
    check_env(AGENTS[config.agent.name], env.spec)


def test_benchmark_measures_every_registered_agent_under_its_name():
    for name in NAMES:
        assert name in bench.AGENTS
        assert parse_experiment(compose_raw(*bench.AGENTS[name][0])).agent.name == name


def test_importing_the_benchmark_does_not_import_jax():
    # Why research.bench keeps its own agent table instead of importing the registry.
    code = "import sys, research.bench.agents; assert 'jax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
