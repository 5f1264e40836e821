"""Physical parameter ranges (issue 27, item 2): every environment refuses impossible physics
with one ConfigError naming the field path, the value and what is allowed, wherever the value
comes from (env.params, env.variants, env.shift.params, transfer.source, the held-out
variants, meta.source / variants / held_out), before anything compiles; and the variants
the experiments use (a reversed push, a stronger gravity, ...) still pass."""

import pytest

from research.config import ConfigError, parse_experiment
from research.envs import make_gymnax, registered, variant_grid
from research.envs.probes import PROBES
from research.envs.registry import COMMON_RANGES, field_range
from research.envs.variants import settable_fields
from research.pipelines import meta, transfer
from research.pipelines.train import prepare
from tests import own_env
from tests.conftest import CONFIGS, compose_raw

STEPS = "must be an int >= 1 (episodes are truncated after this many steps)"


def refused(env_id: str, fixed: dict, variants: dict | None = None) -> str:
    """The message variant_grid refuses these env params with."""
    _, default = make_gymnax(env_id)
    with pytest.raises(ConfigError) as error:
        variant_grid(env_id, default, fixed, variants or {})
    return str(error.value)


# ------------------------------------------------------------- one bad value per environment


@pytest.mark.parametrize(
    "env_id, fixed, message",
    [
        ("CartPole-v1", {"tau": 0.0}, "env.params.tau: got 0.0; must be a float > 0"),
        (
            "CartPole-v1",
            {"theta_threshold_radians": -0.2},
            "env.params.theta_threshold_radians: got -0.2; must be a float > 0",
        ),
        (
            "MountainCar-v0",
            {"gravity": -0.0025},
            "env.params.gravity: got -0.0025; must be a float >= 0",
        ),
        (
            "MountainCar-v0",
            {"goal_position": 0.7},
            "env.params.goal_position: got 0.7; must be a float <= max_position = 0.6",
        ),
        (
            "MountainCar-v0",
            {"min_position": -0.5},
            "env.params.min_position: got -0.5; must be a float <= -0.6 "
            "(episodes start at a position in [-0.6, -0.4])",
        ),
        (
            "MountainCarContinuous-v0",
            {"min_action": 1.0},
            "env.params.min_action: got 1.0; must be a float < max_action = 1.0",
        ),
        (
            "MountainCarContinuous-v0",
            {"max_speed": 0.0},
            "env.params.max_speed: got 0.0; must be a float > 0",
        ),
        ("Acrobot-v1", {"dt": 0.0}, "env.params.dt: got 0.0; must be a float > 0"),
        (
            "Acrobot-v1",
            {"link_length_1": 0.25},
            "env.params.link_com_pos_1: got 0.5; must be a float <= link_length_1 = 0.25",
        ),
        (
            "Acrobot-v1",
            {"torque_noise_max": -0.1},
            "env.params.torque_noise_max: got -0.1; must be a float >= 0",
        ),
        ("Pendulum-v1", {"m": 0.0}, "env.params.m: got 0.0; must be a float > 0"),
        ("Pendulum-v1", {"l": -1.0}, "env.params.l: got -1.0; must be a float > 0"),
        (
            "FrozenLake-misc",
            {"max_steps_in_episode": 0},
            f"env.params.max_steps_in_episode: got 0; {STEPS}",
        ),
        (
            "FourRooms-tabular",
            {"fail_prob": 0.8},
            "env.params.fail_prob: got 0.8; must be a float with 0 <= x <= 0.75 "
            "(the chance a move goes another way; at 0.75 all moves are random)",
        ),
        (
            "DeepSea-tabular",
            {"max_steps_in_episode": -1},
            f"env.params.max_steps_in_episode: got -1; {STEPS}",
        ),
        (
            "GridWorld-tabular",
            {"size": 11},
            "env.params.size: got 11; must be an int with 2 <= x <= 10 "
            "(the table holds 10 x 10 cells)",
        ),
        (
            "GridWorld-tabular",
            {"max_steps_in_episode": 0},
            f"env.params.max_steps_in_episode: got 0; {STEPS}",
        ),
        ("ArmReach-v0", {"friction": -0.1}, "env.params.friction: got -0.1; must be a float >= 0"),
        ("ArmReachDiscrete-v0", {"dt": 0.0}, "env.params.dt: got 0.0; must be a float > 0"),
        (
            "ArmReach-v0",
            {"max_steps_in_episode": 0},
            f"env.params.max_steps_in_episode: got 0; {STEPS}",
        ),
        ("Trading-v0", {"vol_calm": -0.01}, "env.params.vol_calm: got -0.01; must be a float >= 0"),
        (
            "Trading-v0",
            {"p_volatile_to_calm": 1.5},
            "env.params.p_volatile_to_calm: got 1.5; must be a float with 0 <= x <= 1",
        ),
        (
            own_env.ENV_ID,
            {"max_steps_in_episode": 0},
            f"env.params.max_steps_in_episode: got 0; {STEPS}",
        ),
        # an id nobody registered still truncates at max_steps_in_episode (gymnax's rule)
        (
            "Catch-bsuite",
            {"max_steps_in_episode": 0},
            f"env.params.max_steps_in_episode: got 0; {STEPS}",
        ),
    ],
)
def test_each_environment_refuses_a_bad_value(env_id, fixed, message):
    assert refused(env_id, fixed) == message


@pytest.mark.parametrize("env_id", list(PROBES))
def test_probes_refuse_an_empty_episode(env_id):
    message = f"env.params.max_steps_in_episode: got 0; {STEPS}"
    assert refused(env_id, {"max_steps_in_episode": 0}) == message


def test_every_range_names_a_settable_field_and_allows_the_defaults():
    """A range on a misspelt field would check nothing; defaults must be legitimate."""
    for e in registered():
        _, default = make_gymnax(e.env_id)
        fields = settable_fields(e.env_id, default)
        assert set(e.ranges) <= set(fields), (e.env_id, set(e.ranges) - set(fields))
        for name, value in fields.items():
            allowed = field_range(e.env_id, name)
            assert allowed is None or allowed.allows(value), (e.env_id, name, value)
        assert e.check is None or e.check(default) is None, e.env_id
        assert "max_steps_in_episode" in fields, e.env_id  # COMMON_RANGES applies to all
    assert set(COMMON_RANGES) == {"max_steps_in_episode"}


@pytest.mark.parametrize(
    "env_id, fixed",
    [
        ("CartPole-v1", {"force_mag": -10.0}),  # reversed pushes: transfer and meta targets
        ("CartPole-v1", {"force_mag": 0.0}),  # no control at all, still well defined
        ("CartPole-v1", {"gravity": -9.8}),  # the upright pole is stable: an easy variant
        ("Pendulum-v1", {"g": -10.0}),
        ("MountainCar-v0", {"force": -0.001, "gravity": 0.0}),  # reversed engine, flat road
        ("MountainCarContinuous-v0", {"power": -0.0015}),
        ("Acrobot-v1", {"link_length_1": 0.5, "link_com_pos_1": 0.5}),  # the mass at the tip
        ("Trading-v0", {"drift_calm": -1e-3, "jump_mean": 0.05}),  # falling / rising markets
        ("DeepSea-tabular", {"unscaled_move_cost": -0.01}),  # moving right pays
        ("GridWorld-tabular", {"step_reward": -1.0, "max_steps_in_episode": 1}),
    ],
)
def test_legitimate_variants_are_allowed(env_id, fixed):
    _, default = make_gymnax(env_id)
    assert variant_grid(env_id, default, fixed, {}) == [fixed]


# ------------------------------------------------------- the issue's cases, from the config


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.params.masspole=-1", "env.params.masspole: got -1.0; must be a float > 0"),
        ("env.params.length=0", "env.params.length: got 0.0; must be a float > 0"),
        ("env.params.max_steps_in_episode=0", f"env.params.max_steps_in_episode: got 0; {STEPS}"),
    ],
)
def test_the_issue_cases_are_refused_before_anything_is_built(override, message):
    with pytest.raises(ConfigError) as error:
        prepare(parse_experiment(compose_raw(override)))
    assert str(error.value) == message


# ------------------------------------------------- each config path reports its own name


def check(*overrides: str) -> None:
    """Everything the config's pipeline checks before it compiles (no training)."""
    raw = compose_raw(*overrides)
    config = parse_experiment(raw)
    if config.transfer is not None:
        transfer.plan(config, raw)
    elif config.meta is not None:
        meta.plan(config)
    else:
        prepare(config)


TRANSFER = ("experiment=transfer_cartpole_ppo",)
META = ("experiment=meta_reptile_cartpole",)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("env.variants.length=[0.5,0.0]",),
            "env.variants.length: got 0.0; must be a float > 0",
        ),
        (
            ("+env.shift.params.masspole=-0.1", "+env.shift.at=0.5"),
            "env.shift.params.masspole: got -0.1; must be a float > 0",
        ),
        (
            (*TRANSFER, "+transfer.source.params.masspole=-1"),
            "transfer.source.params.masspole: got -1.0; must be a float > 0",
        ),
        (
            (*TRANSFER, "+transfer.source.variants.length=[1.0,0.0]"),
            "transfer.source.variants.length: got 0.0; must be a float > 0",
        ),
        (
            (*TRANSFER, "transfer.evaluation.held_out.length=[1.0,-2.0]"),
            "transfer.evaluation.held_out.length: got -2.0; must be a float > 0",
        ),
        (
            (*META, "+meta.source.masspole=-1"),
            "meta.source.masspole: got -1.0; must be a float > 0",
        ),
        (
            (*META, "meta.variants.length.low=0.0"),
            "meta.variants.length.low: got 0.0; must be a float > 0",
        ),
        (
            (*META, "+meta.variants.masspole={low: -0.1, high: 0.1}"),
            "meta.variants.masspole.low: got -0.1; must be a float > 0",
        ),
        (
            (
                "agent=ppo",
                "env=trading",
                "+meta.method=reptile",
                "+meta.variants.p_calm_to_volatile={low: 0.5, high: 1.5}",
                "+meta.held_out.p_calm_to_volatile=[0.1]",
            ),
            "meta.variants.p_calm_to_volatile.high: got 1.5; must be a float with 0 <= x <= 1",
        ),
        (
            (*META, "+meta.variants.tau=[0.02,0.0]"),
            "meta.variants.tau: got 0.0; must be a float > 0",
        ),
        (
            (*META, "meta.held_out.length=[2.0,0.0]"),
            "meta.held_out.length: got 0.0; must be a float > 0",
        ),
    ],
)
def test_a_bad_value_is_reported_under_its_own_path(overrides, message):
    with pytest.raises(ConfigError) as error:
        check(*overrides)
    assert str(error.value) == message


def test_an_unknown_source_field_is_reported_as_transfer_source_params():
    """The bug of issue 27: it was reported as env.params.gravty."""
    with pytest.raises(ConfigError) as error:
        check(*TRANSFER, "+transfer.source.params.gravty=3")
    assert str(error.value).startswith(
        "transfer.source.params.gravty: not a field of CartPole-v1's EnvParams; settable: "
    )


def test_combinations_are_checked_under_the_path_that_varies_them():
    """A range's corners stand for its draws; a held-out value against the fixed params."""
    mountain_car = ("agent=ppo", "env=mountain_car", "+meta.method=reptile")
    with pytest.raises(ConfigError) as error:
        check(
            *mountain_car,
            "+meta.variants.goal_position={low: 0.3, high: 0.7}",
            "+meta.held_out.goal_position=[0.5]",
        )
    assert str(error.value) == (
        "meta.variants.goal_position: got 0.7; must be a float <= max_position = 0.6"
    )
    assert (
        refused("Acrobot-v1", {"link_length_2": 0.4}, {"link_com_pos_2": [0.2, 0.45]})
        == "env.variants.link_com_pos_2: got 0.45; must be a float <= link_length_2 = 0.4"
    )


# ------------------------------------------------- the experiments' own variants still pass

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_passes_its_env_checks(name):
    """Reversed pushes, long poles, heavy links, volatile markets: all legitimate."""
    check(f"experiment={name}")


def test_the_experiments_are_found():
    assert len(EXPERIMENTS) >= 20  # a wrong glob would leave the test above with no cases
