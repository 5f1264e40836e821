"""Plasticity interventions (research/rl/plasticity.py) on the agents' own (params, opt_state):
each changes exactly what it should (checked entry by entry, bit for bit), is the identity
when off, and runs jitted and vmapped over runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.agents import make_agent
from research.config import DQNConfig, DQNHParams, PPOConfig, PPOHParams
from research.envs import EnvSpec
from research.rl import diagnostics as dg
from research.rl import plasticity as pl
from research.rl.networks import QNetwork
from research.rl.optim import Optimizer

SPEC = EnvSpec("test", (4,), True, num_actions=3)
CONTINUOUS = EnvSpec("test", (3,), False, action_dim=2)
OPT = Optimizer()


def bits(x):
    return np.asarray(x).view(np.uint32)


def assert_bit_equal(a, b):
    """Same structure, every leaf the same bits (so -0.0 != 0.0 and NaN == NaN)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(bits(x), bits(y))


def trained(params, opt_state, key, steps=3):
    """A few Adam steps on random gradients: moments that are non-zero everywhere."""
    for k in jax.random.split(key, steps):
        leaves, tree = jax.tree.flatten(params)
        noise = [
            jax.random.normal(kk, x.shape)
            for kk, x in zip(jax.random.split(k, len(leaves)), leaves)
        ]
        params, opt_state, _ = OPT.step(opt_state, params, tree.unflatten(noise), 1e-2, 1e9)
    return params, opt_state


def dqn_state(layer_norm, seed=0):
    config = DQNConfig(hidden_sizes=(8, 6), layer_norm=layer_norm)
    agent = make_agent("dqn", config, SPEC, total_updates=10)
    state = agent.init(jax.random.key(seed), DQNHParams())
    fresh = agent.init(jax.random.key(seed + 100), DQNHParams()).params
    params, opt_state = trained(state.params, state.opt_state, jax.random.key(seed + 1))
    return params, opt_state, fresh


def ppo_state(seed=0):
    agent = make_agent("ppo", PPOConfig(hidden_sizes=(8, 6)), CONTINUOUS, total_updates=10)
    state = agent.init(jax.random.key(seed), PPOHParams())
    fresh = agent.init(jax.random.key(seed + 100), PPOHParams()).params
    params, opt_state = trained(state.params, state.opt_state, jax.random.key(seed + 1))
    return params, opt_state, fresh


def np_tree(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def test_the_adam_moments_are_found_and_mirror_the_params():
    params, opt_state, _ = dqn_state(True)
    moments = pl.adam_moments(opt_state)
    assert moments is opt_state.adam.inner_state[0]  # optax.adam = chain(scale_by_adam, lr)
    assert jax.tree.structure(moments.mu) == jax.tree.structure(params)
    assert int(moments.count) == 3
    assert all(np.abs(x).min() > 0 for x in jax.tree.leaves(moments.nu))


# --- ReDo ------------------------------------------------------------------------------------

MASK_0 = np.isin(np.arange(8), [1, 5])  # dormant units of hidden layer 0 (8 units)
MASK_1 = np.isin(np.arange(6), [0, 3])  # and of hidden layer 1 (6 units)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_redo_recycles_exactly_the_dormant_units_and_their_moments(layer_norm):
    params, opt_state, fresh = dqn_state(layer_norm)
    new_params, new_opt = jax.jit(pl.redo)(params, opt_state, fresh, [MASK_0, MASK_1])

    want, f = np_tree(params)["params"], np_tree(fresh)["params"]
    d0, d1, head = want["torso"]["Dense_0"], want["torso"]["Dense_1"], want["head"]
    d0["kernel"][:, MASK_0] = f["torso"]["Dense_0"]["kernel"][:, MASK_0]  # incoming
    d0["bias"][MASK_0] = f["torso"]["Dense_0"]["bias"][MASK_0]
    d1["kernel"][:, MASK_1] = f["torso"]["Dense_1"]["kernel"][:, MASK_1]
    d1["bias"][MASK_1] = f["torso"]["Dense_1"]["bias"][MASK_1]
    d1["kernel"][MASK_0, :] = 0.0  # outgoing (after the incoming: the zero wins)
    head["kernel"][MASK_1, :] = 0.0
    assert_bit_equal(new_params, {"params": want})  # LayerNorms and the head bias untouched

    old = pl.adam_moments(opt_state)
    for name in ("mu", "nu"):
        want = np_tree(getattr(old, name))["params"]
        t = want["torso"]
        t["Dense_0"]["kernel"][:, MASK_0] = t["Dense_0"]["bias"][MASK_0] = 0.0
        t["Dense_1"]["kernel"][:, MASK_1] = t["Dense_1"]["bias"][MASK_1] = 0.0
        t["Dense_1"]["kernel"][MASK_0, :] = want["head"]["kernel"][MASK_1, :] = 0.0
        assert_bit_equal(getattr(pl.adam_moments(new_opt), name), {"params": want})
    # the step count, the hyperparameters and the L2 anchor are the optimiser's own
    assert_bit_equal(pl.adam_moments(new_opt).count, old.count)
    assert_bit_equal(new_opt.adam.hyperparams, opt_state.adam.hyperparams)
    assert_bit_equal(new_opt.anchor, opt_state.anchor)


def test_redo_without_dormant_units_is_the_identity():
    params, opt_state, fresh = dqn_state(True)
    none = [np.zeros(8, bool), np.zeros(6, bool)]
    assert_bit_equal(jax.jit(pl.redo)(params, opt_state, fresh, none), (params, opt_state))


def test_redo_on_the_actor_torso_of_ppo_leaves_the_critic_alone():
    params, opt_state, fresh = ppo_state()
    new_params, new_opt = pl.redo(params, opt_state, fresh, [MASK_0, MASK_1], torso="actor_torso")
    p, q = new_params["params"], params["params"]
    for name in ("critic_torso", "critic_head", "log_std"):
        assert_bit_equal(p[name], q[name])
        assert_bit_equal(
            pl.adam_moments(new_opt).mu["params"][name],
            pl.adam_moments(opt_state).mu["params"][name],
        )
    assert (np.asarray(p["actor_head"]["kernel"])[MASK_1] == 0).all()  # the actor's head
    np.testing.assert_array_equal(
        p["actor_torso"]["Dense_0"]["kernel"][:, MASK_0],
        fresh["params"]["actor_torso"]["Dense_0"]["kernel"][:, MASK_0],
    )
    with pytest.raises(ValueError, match="masks"):
        pl.redo(params, opt_state, fresh, [MASK_0], torso="actor_torso")


def test_redo_revives_the_dead_units_that_dormant_mask_finds_keeping_the_q_values():
    params, opt_state, fresh = dqn_state(False)
    net = QNetwork(SPEC, (8, 6), "relu", False)
    layer = params["params"]["torso"]["Dense_0"]
    layer["kernel"] = jnp.where(MASK_0, 0.0, layer["kernel"])
    layer["bias"] = jnp.where(MASK_0, -1.0, layer["bias"])
    obs = jax.random.normal(jax.random.key(4), (256, 4))
    masks = [dg.dormant_mask(h, 0.0) for h in dg.hidden_activations(net, params, obs)]
    assert masks[0].tolist() == MASK_0.tolist()
    new_params, _ = pl.redo(params, opt_state, fresh, masks)
    after = dg.hidden_activations(net, new_params, obs)[0]
    assert not dg.dormant_mask(after, 0.0)[MASK_0].any()  # fresh incoming weights: alive
    # Their outgoing weights are zero, so the Q-values are those of before: dead units
    # contributed nothing, and the revived ones contribute nothing yet.
    np.testing.assert_allclose(
        net.apply(new_params, obs), net.apply(params, obs), rtol=1e-6, atol=1e-6
    )


def test_redo_jitted_and_vmapped_over_runs_matches_each_run():
    runs = [dqn_state(True, seed) for seed in range(3)]
    params, opt_state, fresh = jax.tree.map(lambda *x: jnp.stack(x), *runs)
    masks = [
        np.stack([MASK_0, ~MASK_0, np.zeros(8, bool)]),
        np.stack([MASK_1, MASK_1, np.zeros(6, bool)]),
    ]
    batched = jax.jit(jax.vmap(pl.redo))(params, opt_state, fresh, masks)
    for r, (p, o, f) in enumerate(runs):
        alone = pl.redo(p, o, f, [masks[0][r], masks[1][r]])
        assert_bit_equal(jax.tree.map(lambda x, r=r: x[r], batched), alone)
    assert_bit_equal(jax.tree.map(lambda x: x[2], batched), runs[2][:2])  # no dormant units


# --- shrink and perturb -----------------------------------------------------------------------


def test_shrink_perturb_by_hand():
    params = {"params": {"a": jnp.array([1.0, -2.0]), "b": jnp.array([[0.5]])}}
    fresh = {"params": {"a": jnp.array([10.0, 20.0]), "b": jnp.array([[-4.0]])}}
    got = jax.jit(pl.shrink_perturb)(params, fresh, 0.5, 0.25)
    # 0.5 * 1 + 0.25 * 10 = 3; 0.5 * -2 + 0.25 * 20 = 4; 0.5 * 0.5 + 0.25 * -4 = -0.75
    assert_bit_equal(got, {"params": {"a": jnp.array([3.0, 4.0]), "b": jnp.array([[-0.75]])}})


def test_shrink_perturb_off_is_the_identity_even_for_negative_zeros_and_non_finite_noise():
    params = {"params": {"a": jnp.array([-0.0, 1.5, -3.0])}}
    fresh = {"params": {"a": jnp.array([2.0, jnp.inf, jnp.nan])}}
    assert_bit_equal(jax.jit(pl.shrink_perturb)(params, fresh, 1.0, 0.0), params)
    params, _, fresh = ppo_state()
    assert_bit_equal(pl.shrink_perturb(params, fresh, jnp.float32(1.0), jnp.float32(0.0)), params)


def test_shrink_perturb_vmapped_over_runs_with_traced_strengths():
    runs = [dqn_state(True, seed) for seed in range(3)]
    params, _, fresh = jax.tree.map(lambda *x: jnp.stack(x), *runs)
    alpha, sigma = jnp.array([1.0, 0.8, 0.0]), jnp.array([0.0, 0.1, 1.0])
    got = jax.jit(jax.vmap(pl.shrink_perturb))(params, fresh, alpha, sigma)
    assert_bit_equal(jax.tree.map(lambda x: x[0], got), runs[0][0])  # off
    assert_bit_equal(jax.tree.map(lambda x: x[2], got), runs[2][2])  # all fresh
    want = jax.tree.map(lambda x, f: 0.8 * x + 0.1 * f, runs[1][0], runs[1][2])
    for x, y in zip(jax.tree.leaves(jax.tree.map(lambda x: x[1], got)), jax.tree.leaves(want)):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)


# --- resetting layers -----------------------------------------------------------------------


def check_reset(old, new, fresh, reset):
    """Params and Adam moments: `reset` module paths fresh / zero, all else bit-equal."""
    (params, opt_state), (new_params, new_opt) = old, new
    moments, new_moments = pl.adam_moments(opt_state), pl.adam_moments(new_opt)
    flat = lambda t: {pl._names(p): x for p, x in jax.tree_util.tree_flatten_with_path(t)[0]}
    seen = set()
    for path, x in flat(new_params).items():
        is_reset = any(path[1 : 1 + len(m)] == m for m in reset)
        seen |= {m for m in reset if path[1 : 1 + len(m)] == m}
        np.testing.assert_array_equal(
            bits(x), bits((flat(fresh) if is_reset else flat(params))[path])
        )
        for name in ("mu", "nu"):
            m = flat(getattr(new_moments, name))[path]
            want = np.zeros_like(m) if is_reset else flat(getattr(moments, name))[path]
            np.testing.assert_array_equal(bits(m), bits(want))
    assert seen == set(reset)  # every named module exists
    assert_bit_equal(new_moments.count, moments.count)
    assert_bit_equal(new_opt.anchor, opt_state.anchor)


def test_reset_the_head_group_of_a_q_network():
    params, opt_state, fresh = dqn_state(True)
    new = jax.jit(pl.reset_params, static_argnums=3)(params, opt_state, fresh, pl.in_groups("head"))
    check_reset((params, opt_state), new, fresh, {("head",)})


def test_reset_the_heads_of_an_actor_critic_takes_log_std_with_them():
    params, opt_state, fresh = ppo_state()
    new = pl.reset_params(params, opt_state, fresh, pl.in_groups("head"))
    check_reset((params, opt_state), new, fresh, {("actor_head",), ("critic_head",), ("log_std",)})
    assert_bit_equal(new, pl.reset_params(params, opt_state, fresh, pl.last_layers(params, 1)))


def test_reset_the_last_two_layers_with_their_layer_norm():
    params, opt_state, fresh = dqn_state(True)
    new = pl.reset_params(params, opt_state, fresh, pl.last_layers(params, 2))
    reset = {("head",), ("torso", "Dense_1"), ("torso", "LayerNorm_1")}
    check_reset((params, opt_state), new, fresh, reset)
    everything = pl.reset_params(params, opt_state, fresh, pl.last_layers(params, 5))
    assert_bit_equal(everything[0], fresh)
    ppo, ppo_opt, ppo_fresh = ppo_state()
    new = pl.reset_params(ppo, ppo_opt, ppo_fresh, pl.last_layers(ppo, 2))
    reset = {("actor_head",), ("critic_head",), ("log_std",)}
    reset |= {("actor_torso", "Dense_1"), ("critic_torso", "Dense_1")}
    check_reset((ppo, ppo_opt), new, ppo_fresh, reset)


def test_reset_nothing_is_the_identity():
    params, opt_state, fresh = dqn_state(True)
    assert_bit_equal(
        pl.reset_params(params, opt_state, fresh, pl.last_layers(params, 0)), (params, opt_state)
    )
    assert_bit_equal(pl.reset_params(params, opt_state, fresh, pl.in_groups()), (params, opt_state))
    with pytest.raises(ValueError, match="k = -1"):
        pl.last_layers(params, -1)


def test_reset_jitted_and_vmapped_over_runs_matches_each_run():
    runs = [dqn_state(True, seed) for seed in range(3)]
    params, opt_state, fresh = jax.tree.map(lambda *x: jnp.stack(x), *runs)
    pick = pl.last_layers(runs[0][0], 2)
    batched = jax.jit(jax.vmap(lambda p, o, f: pl.reset_params(p, o, f, pick)))(
        params, opt_state, fresh
    )
    for r, (p, o, f) in enumerate(runs):
        assert_bit_equal(jax.tree.map(lambda x, r=r: x[r], batched), pl.reset_params(p, o, f, pick))
