"""The env wrapper keeps termination and truncation apart; variants recompute derived fields."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.config import ConfigError
from research.envs import Env, available, stack_params, variant_grid, variant_params


def _run(env, params, actions, seed=0):
    """Steps one env through `actions`, returning the list of Timesteps."""
    key = jax.random.key(seed)
    obs, state = env.reset(key, params)
    out = []
    for t, a in enumerate(actions):
        state, ts = jax.jit(env.step)(jax.random.fold_in(key, t), state, jnp.asarray(a), params)
        out.append(ts)
    return out


def test_truncation_keeps_final_observation():
    env = Env("CartPole-v1")
    params = variant_params("CartPole-v1", env.default_params, {"max_steps_in_episode": 5})
    steps = _run(env, params, [0, 1, 0, 1, 0, 1])
    assert [bool(s.truncated) for s in steps] == [False] * 4 + [True, False]
    assert not any(bool(s.terminated) for s in steps)
    fifth = steps[4]
    # s' is the continued physics, while obs is a fresh reset (all |.| <= 0.05)
    assert np.all(np.abs(fifth.obs) <= 0.05)
    assert not np.allclose(fifth.next_obs, fifth.obs)
    np.testing.assert_allclose(steps[3].obs, steps[3].next_obs)  # mid-episode: s' == next obs
    assert float(fifth.episode_return) == 5.0 and int(fifth.episode_length) == 5
    assert float(steps[5].episode_return) == 1.0  # the counter restarted


def test_termination_is_not_truncation():
    env = Env("CartPole-v1")
    # a pole that fails at once, in an episode that is also at its time limit
    params = variant_params(
        "CartPole-v1",
        env.default_params,
        {"theta_threshold_radians": 1e-9, "max_steps_in_episode": 1},
    )
    (step,) = _run(env, params, [1])
    assert bool(step.terminated) and not bool(step.truncated)
    assert int(step.episode_length) == 1


def test_cartpole_variant_recomputes_derived_fields():
    env = Env("CartPole-v1")
    params = variant_params(
        "CartPole-v1", env.default_params, {"masspole": 0.2, "length": 1.0, "masscart": 2.0}
    )
    assert params.total_mass == pytest.approx(2.2)
    assert params.polemass_length == pytest.approx(0.2)


def test_variant_errors_name_the_field():
    env = Env("CartPole-v1")
    with pytest.raises(ConfigError, match=r"env.params.total_mass: .*derived.*masscart"):
        variant_params("CartPole-v1", env.default_params, {"total_mass": 3.0})
    with pytest.raises(ConfigError, match=r"env.params.pole_length: not a field of CartPole"):
        variant_params("CartPole-v1", env.default_params, {"pole_length": 3.0})
    with pytest.raises(ConfigError, match=r"env.variants.max_steps_in_episode: got 2.5"):
        variant_grid("CartPole-v1", env.default_params, {}, {"max_steps_in_episode": [10, 2.5]})


def test_variant_grid_and_stack():
    env = Env("CartPole-v1")
    grid = variant_grid(
        "CartPole-v1",
        env.default_params,
        {"gravity": 5.0},
        {"length": [0.5, 1.0], "masspole": [0.1, 0.3]},
    )
    assert len(grid) == 4 and all(g["gravity"] == 5.0 for g in grid)
    stacked = stack_params("CartPole-v1", env.default_params, grid)
    np.testing.assert_allclose(stacked.polemass_length, [0.05, 0.15, 0.1, 0.3], rtol=1e-6)
    assert stacked.max_steps_in_episode.dtype.kind == "i"


def test_batch_of_variants_steps_in_one_jit():
    """Different gravities in one vmapped step give different dynamics."""
    env = Env("CartPole-v1")
    params = stack_params("CartPole-v1", env.default_params, [{"gravity": g} for g in (1.0, 20.0)])
    obs, state = jax.vmap(env.reset, in_axes=(None, 0))(jax.random.key(1), params)
    np.testing.assert_allclose(obs[0], obs[1])  # same start state
    step = jax.jit(jax.vmap(env.step, in_axes=(None, 0, 0, 0)))
    state, ts = step(jax.random.key(0), state, jnp.array([1, 1]), params)
    assert not np.allclose(ts.obs[0, 3], ts.obs[1, 3])  # theta_dot differs with gravity


def test_registry_has_gymnax_and_probes():
    ids = available()
    assert "CartPole-v1" in ids and "Breakout-MinAtar" in ids and "TwoStepDiscount-probe" in ids
    with pytest.raises(ConfigError, match=r"env.id: got 'NoSuchEnv-v0'; allowed: CartPole-v1"):
        Env("NoSuchEnv-v0")


def test_continuous_action_is_clipped_to_bounds():
    env = Env("Pendulum-v1")
    assert not env.spec.discrete and env.spec.action_dim == 1
    key = jax.random.key(0)
    _, state = env.reset(key, env.default_params)
    _, big = env.step(key, state, jnp.array([100.0]), env.default_params)
    _, edge = env.step(key, state, jnp.array([2.0]), env.default_params)
    np.testing.assert_allclose(big.next_obs, edge.next_obs)
    assert big.reward == edge.reward


@pytest.mark.parametrize(
    "env_id,gamma,values",
    [
        ("ConstantReward-probe", 0.9, {0.0: 1.0}),
        ("TwoStepDiscount-probe", 0.5, {0.0: 0.5, 1.0: 1.0}),
    ],
)
def test_probe_returns_are_as_documented(env_id, gamma, values):
    """Discounted return from each observation, under any policy, matches the docstring."""
    env = Env(env_id)
    steps = _run(env, env.default_params, [0, 1, 0, 1])
    obs0, _ = env.reset(jax.random.key(0), env.default_params)
    # walk one episode: returns are sums of gamma^k r_k until termination
    rewards = []
    for s in steps:
        rewards.append(float(s.reward))
        if s.terminated:
            break
    g = sum(gamma**k * r for k, r in enumerate(rewards))
    assert g == pytest.approx(values[float(obs0[0])])


def test_any_probe_is_each_probe_step_for_step_jitted_and_batched():
    """AnyProbe-probe with params.probe = i gives probe i's observations, rewards and ends for
    the same keys and actions (auto-resets included), five probes in one vmapped jit; a probe
    index outside 0-4 is refused."""
    from research.envs.probes import PROBES, AnyProbe

    envs = [cls() for cls in PROBES.values()]
    any_env = AnyProbe()
    params = jax.tree.map(
        lambda *x: jnp.stack(x),
        *[any_env.default_params.replace(probe=i) for i in range(len(envs))],
    )

    def run(env, p, key):
        def one(carry, k):
            state, _ = carry
            k_act, k_step = jax.random.split(k)
            action = jax.random.randint(k_act, (), 0, 2)
            obs, state, reward, done, *_ = env.step(k_step, state, action, p)
            return (state, 0), (obs, reward, done)

        _, state = env.reset(key, p)
        return jax.lax.scan(one, (state, 0), jax.random.split(key, 12))[1]

    keys = jax.random.split(jax.random.key(7), len(envs))
    batched = jax.jit(jax.vmap(lambda p, k: run(any_env, p, k)))(params, keys)
    for i, env in enumerate(envs):
        alone = run(env, env.default_params, keys[i])
        for got, want in zip(batched, alone, strict=True):
            np.testing.assert_array_equal(got[i], want)
    assert np.asarray(batched[2][4]).any() and not np.asarray(batched[2][4]).all()  # 2 steps
    with pytest.raises(ConfigError, match=r"env.params.probe: got 5"):
        variant_params("AnyProbe-probe", any_env.default_params, {"probe": 5})
