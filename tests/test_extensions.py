"""The loop's extension points (research.runner.extension) and the extensions built on them."""

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents import Agent
from research.config import PPOHParams, parse_experiment
from research.envs import Env
from research.extensions import L2Init, RewardShaping, l2_penalty
from research.extensions.env_shift import shift_weight
from research.pipelines.train import prepare, run_experiment
from research.runner import Extension, make_train
from tests.conftest import compose_raw, train

TINY_PPO = (
    "progress=false",
    "plot=false",
    "agent=ppo",
    "agent.num_envs=2",
    "agent.num_steps=8",
    "agent.num_minibatches=2",
    "agent.num_epochs=1",
    "agent.hidden_sizes=[8]",
    "train.total_timesteps=64",
    "train.num_logs=2",
    "runs.seeds=2",
)


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ------------------------------------------------------------------ hand-computed values


def test_l2_penalty_is_half_the_weighted_squared_distance():
    params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([[3.0]])}
    anchor = {"a": jnp.array([0.0, 1.0]), "b": jnp.array([[1.0]])}
    # (1 + 1 + 4) * 2 / 2
    assert float(jax.jit(l2_penalty)(params, anchor, 2.0)) == pytest.approx(6.0)
    grads = jax.grad(l2_penalty)(params, anchor, 2.0)
    np.testing.assert_allclose(grads["a"], [2.0, 2.0])
    np.testing.assert_allclose(grads["b"], [[4.0]])
    weights = jnp.array([0.0, 1.0, 2.0])
    batched = jax.vmap(l2_penalty, in_axes=(None, None, 0))(params, anchor, weights)
    np.testing.assert_allclose(batched, [0.0, 3.0, 6.0])


@pytest.mark.parametrize(
    "first, last, updates, expected",
    [
        (2, 6, [0, 1, 2, 4, 6, 9], [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]),
        (3, 3, [0, 2, 3, 4], [0.0, 0.0, 1.0, 1.0]),  # a step change
    ],
)
def test_shift_weight(first, last, updates, expected):
    got = jax.jit(jax.vmap(lambda u: shift_weight(u, first, last)))(jnp.asarray(updates))
    np.testing.assert_allclose(got, expected)


# ------------------------------------------------------------------ hooks in the loop


def _counting_agent(num_steps, num_envs):
    """State: the last batch's reward sum, the number of updates and the first batch's
    actions [T, N]; acts at random."""

    def update(state, batch, key, hp, penalty=None):
        first = jnp.where(state["updates"] == 0, batch.action, state["first_actions"])
        new = {"reward_sum": batch.reward.sum(), "updates": state["updates"] + 1}
        return {**new, "first_actions": first}, {"loss": jnp.zeros(())}

    return Agent(
        init=lambda key, hp: {
            "reward_sum": jnp.zeros(()),
            "updates": jnp.zeros((), jnp.int32),
            "first_actions": jnp.zeros((num_steps, num_envs), jnp.int32),
        },
        act=lambda state, obs, key, hp, explore: (jax.random.randint(key, (num_envs,), 0, 2), {}),
        update=update,
        value=None,
    )


@dataclass(frozen=True)
class _PushRightAtFirst(Extension):
    """Acts 1 in the first 2 steps of every episode (as a guide policy's roll-in would)."""

    name: str = "push_right"

    def act(self, act, state, step):
        def forced(obs, key, env_state):
            action, aux = act(obs, key, env_state)
            return jnp.where(env_state.episode_length < 2, 1, action), aux

        return forced


def test_act_hook_sees_each_envs_episode_step():
    env = Env("CartPole-v1")
    agent = _counting_agent(8, 4)
    key, hp = jax.random.key(1), PPOHParams()
    plain, _ = jax.jit(make_train(agent, env, 4, 8, 2, 1).train)(key, hp, env.default_params)
    forced, _ = jax.jit(make_train(agent, env, 4, 8, 2, 1, [_PushRightAtFirst()]).train)(
        key, hp, env.default_params
    )
    first = np.asarray(forced["first_actions"])
    assert (first[:2] == 1).all()  # every env's episode starts at the first rollout step
    np.testing.assert_array_equal(first[2:], np.asarray(plain["first_actions"])[2:])
    assert not (np.asarray(plain["first_actions"])[:2] == 1).all()


@dataclass(frozen=True)
class _PlusOne(Extension):
    """Adds 1 to every reward, counts its calls in its own state, and after each update
    doubles the agent's update counter's increment (a state transform)."""

    name: str = "plus_one"

    def start(self, s):
        return s.agent_state, jnp.zeros((), jnp.int32)

    def on_batch(self, batch, calls, step):
        return batch._replace(reward=batch.reward + 1.0), calls + 1, {"calls": calls + 1}

    def after_update(self, agent_state, calls, step, previous):
        assert previous["updates"].shape == ()  # the state before the update
        return {**agent_state, "updates": agent_state["updates"] + step.update + 1}, calls

    def on_segment(self, agent_state, calls, metrics, step):
        return agent_state, calls, {"calls": metrics["calls"][-1], "at": step.update}


def test_hooks_change_what_the_agent_learns_from_and_its_state():
    env = Env("CartPole-v1")
    num_steps, num_envs = 4, 2
    agent = _counting_agent(num_steps, num_envs)
    plain = make_train(agent, env, num_envs, num_steps, num_updates=4, num_logs=2)
    hooked = make_train(agent, env, num_envs, num_steps, 4, 2, [_PlusOne()])
    key, hp = jax.random.key(0), PPOHParams()
    state0, m0 = jax.jit(plain.train)(key, hp, env.default_params)
    state1, m1 = jax.jit(hooked.train)(key, hp, env.default_params)
    # CartPole pays 1 a step: the agent saw 8 rewards of 2 instead of 1 in its last batch.
    assert float(state0["reward_sum"]) == num_steps * num_envs
    assert float(state1["reward_sum"]) == 2 * num_steps * num_envs
    # Each update adds 1 (agent) + update index + 1 (extension): 1+2+3+4 + 4.
    assert int(state0["updates"]) == 4 and int(state1["updates"]) == 14
    np.testing.assert_array_equal(m1["calls"], [2, 4])
    np.testing.assert_array_equal(m1["at"], [2, 4])
    np.testing.assert_array_equal(m0["episode_return"], m1["episode_return"])  # env's own


def test_duplicate_extension_names_are_refused():
    env = Env("CartPole-v1")
    with pytest.raises(ValueError, match=r"extensions named \['plus_one'\] more than once"):
        make_train(_counting_agent(4, 2), env, 2, 4, 4, 2, [_PlusOne(), _PlusOne()])


# ------------------------------------------------------------------ off switches, bit for bit


@pytest.fixture(scope="module")
def tiny_ppo():
    return prepare(parse_experiment(compose_raw(*TINY_PPO)))


def test_a_do_nothing_extension_trains_bit_for_bit_as_the_plain_loop(tiny_ppo):
    args, key, hp, env_params = _plain_args(tiny_ppo)
    plain = jax.jit(make_train(*args).train)(key, hp, env_params)
    _assert_trees_equal(plain, jax.jit(make_train(*args, [Extension()]).train)(key, hp, env_params))


def test_l2_at_weight_0_equals_the_plain_loop_to_float_rounding(tiny_ppo):
    """Not bit for bit: the zero term changes how XLA fuses the gradient step (measured: 1-2
    ulp in parameters after 4 updates). So a config whose weight is 0 in every run does
    not plug L2 in at all (next test), and that is bit for bit the plain loop."""
    args, key, hp, env_params = _plain_args(tiny_ppo)
    assert hp.l2_init == 0.0
    plain = jax.jit(make_train(*args).train)(key, hp, env_params)
    l2 = jax.jit(make_train(*args, [L2Init()]).train)(key, hp, env_params)
    for x, y in zip(jax.tree.leaves(plain), jax.tree.leaves(l2), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def _plain_args(p):
    num_envs, num_steps = p.config.agent.config.num_envs, p.config.agent.config.num_steps
    args = (p.agent, p.env, num_envs, num_steps, p.num_updates, p.config.train.num_logs)
    return args, jax.random.key(3), p.config.agent.hparams, p.env.default_params


def test_l2_init_is_plugged_only_when_some_run_can_use_it():
    def names(*overrides):
        prepared = prepare(parse_experiment(compose_raw(*TINY_PPO, *overrides)))
        return [e.name for e in prepared.trainer.extensions]

    assert names() == []
    assert names("agent.l2_init=0.5") == ["l2_init"]
    assert names("sweep.l2_init=[0.0,1.0]") == ["l2_init"]
    tabular = prepare(parse_experiment(compose_raw("agent=q_learning", "env=gridworld")))
    assert tabular.trainer.extensions == ()


# ------------------------------------------------------------------ bugs found as a new user


def test_pqn_honours_the_huber_loss():
    base = ("progress=false", "agent=dqn", "agent.mode=pqn", "train.total_timesteps=2048",
            "train.num_logs=2", "runs.seeds=1", "agent.num_envs=4")  # fmt: skip
    _, mse = train(*base)
    _, huber = train(*base, "agent.loss=huber")
    assert not np.array_equal(mse.metrics["td_loss"], huber.metrics["td_loss"])


def test_value_potential_of_a_tabular_q_checkpoint(tmp_path):
    """Shaping with the value of a Q-learning table: the loaded table must be indexable by
    traced observations (it crashed with TracerArrayConversionError)."""
    grid = ("progress=false", "plot=false", "agent=q_learning", "env=gridworld",
            "train.total_timesteps=4000", "train.num_logs=2", "runs.seeds=1")  # fmt: skip
    raw = compose_raw(*grid, "save_checkpoint=true")
    source = run_experiment(parse_experiment(raw), raw, tmp_path / "source")
    raw = compose_raw(
        *grid,
        "+shaping.kind=potential",
        "+shaping.potential=value",
        f"+shaping.checkpoint={source / 'checkpoint'}",
    )
    out = run_experiment(parse_experiment(raw), raw, tmp_path / "shaped")
    metrics = np.load(out / "metrics.npz")
    assert np.isfinite(metrics["shaped_return"]).any()


# ------------------------------------------------------------------ what the loop guarantees


@dataclass(frozen=True)
class _Probe(Extension):
    """Records its first update key, and branches with lax.cond on the update index."""

    name: str = "probe"

    def start(self, s):
        return s.agent_state, jnp.zeros((2,), jnp.uint32)

    def on_batch(self, batch, state, step):
        first = jnp.where(step.update == 0, jax.random.key_data(step.key), state)
        odd = jax.lax.cond(step.update % 2 == 1, lambda: 1.0, lambda: 0.0)
        return batch, first, {"odd": odd}


def test_extension_keys_are_apart_from_the_loops_and_updates_unbatched():
    env = Env("CartPole-v1")
    agent = _counting_agent(4, 2)
    trainer = make_train(agent, env, 2, 4, num_updates=4, num_logs=2, extensions=[_Probe()])
    key, hp = jax.random.key(5), PPOHParams()
    runner = jax.jit(trainer.train)(key, hp, env.default_params)
    # The loop's keys of the first update: (next, rollout, update), and the update's epochs.
    run_key = jax.random.split(key, 3)[2]
    loop_keys = list(jax.random.split(run_key, 3))
    loop_keys += list(jax.random.split(loop_keys[2], 8))
    seen = np.asarray(jax.jit(trainer.init)(key, hp, env.default_params).ext[0])
    recorded = np.asarray(
        jax.lax.scan(
            lambda r, i: trainer.segment(r, hp, env.default_params, i), trainer.init(
                key, hp, env.default_params), jnp.arange(1))[0].ext[0]
    )  # fmt: skip
    assert (seen == 0).all() and not (recorded == 0).all()
    for k in loop_keys:
        assert not np.array_equal(recorded, np.asarray(jax.random.key_data(k)))
    np.testing.assert_array_equal(runner[1]["odd"], [0.5, 0.5])
    # Under the batched program's vmap the update index stays unbatched: a real branch.
    batched = jax.vmap(trainer.segment, in_axes=(0, 0, 0, None))
    runners = jax.vmap(trainer.init, in_axes=(0, None, None))(
        jax.random.split(key, 3), hp, env.default_params
    )
    hps = jax.tree.map(lambda x: jnp.full((3,), x), hp)
    params = jax.tree.map(lambda x: jnp.stack([x] * 3), env.default_params)
    jaxpr = str(jax.make_jaxpr(batched)(runners, hps, params, jnp.int32(0)))
    assert "cond[" in jaxpr


@dataclass(frozen=True)
class _Clash(Extension):
    name: str = "clash"

    def on_segment(self, agent_state, state, metrics, step):
        return agent_state, state, {"episode_return": jnp.zeros(())}


@dataclass(frozen=True)
class _NoneLoss(Extension):
    name: str = "none_loss"

    def loss(self, params, obs, state, step):
        return None


def test_clear_errors_for_misused_hooks(tiny_ppo):
    args, key, hp, env_params = _plain_args(tiny_ppo)
    run = lambda extensions, params=env_params: jax.jit(make_train(*args, extensions).train)(
        key, hp, params
    )
    with pytest.raises(ValueError, match=r"'clash' logs \['episode_return'\], which are logged"):
        run([_Clash()])
    with pytest.raises(ValueError, match="'none_loss' overrides loss but returned None"):
        run([_NoneLoss()])
    with pytest.raises(ValueError, match=r"RunParams.ext: missing \['shaping'\], unknown \[\]"):
        run([RewardShaping("bonus", lambda obs, p: obs[..., 0], 2)])
