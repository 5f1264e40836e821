"""Plasticity diagnostics (research/rl/diagnostics.py) and the KL of research/rl/distributions.py:
hand-computed values on small arrays, numpy's LAPACK as the reference for the eigenvalue and
rank code, and every function under jit and vmap."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.envs import EnvSpec
from research.rl import diagnostics as dg
from research.rl.distributions import Categorical, DiagGaussian, kl
from research.rl.networks import ActorCritic, QNetwork, init_params

SPEC = EnvSpec("test", (4,), True, num_actions=3)
CONTINUOUS = EnvSpec("test", (3,), False, action_dim=2)


def numpy_mlp(layers, x, activation, layer_norm):
    """The torso's forward pass by hand: [post-activation of each hidden layer]."""
    out = []
    for i in range(len([k for k in layers if k.startswith("Dense_")])):
        x = x @ np.asarray(layers[f"Dense_{i}"]["kernel"]) + np.asarray(
            layers[f"Dense_{i}"]["bias"]
        )
        if layer_norm:
            ln = layers[f"LayerNorm_{i}"]
            x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
            x = x * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
        x = np.maximum(x, 0.0) if activation == "relu" else np.tanh(x)
        out.append(x)
    return out


# --- hidden activations ------------------------------------------------------------------


@pytest.mark.parametrize("layer_norm", [False, True])
def test_hidden_activations_of_a_q_network_are_each_layers_post_activation(layer_norm):
    net = QNetwork(SPEC, (8, 6, 5), "relu", layer_norm)
    obs = jax.random.normal(jax.random.key(1), (7, 4))
    params = init_params(net, jax.random.key(0), obs[:1])
    acts = jax.jit(lambda p, o: dg.hidden_activations(net, p, o))(params, obs)
    want = numpy_mlp(params["params"]["torso"], np.asarray(obs), "relu", layer_norm)
    assert [a.shape for a in acts] == [(7, 8), (7, 6), (7, 5)]
    for got, expected in zip(acts, want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_hidden_activations_of_each_torso_of_an_actor_critic():
    net = ActorCritic(CONTINUOUS, (8, 4), "tanh")
    obs = jax.random.normal(jax.random.key(1), (5, 3))
    params = init_params(net, jax.random.key(0), obs[:1])
    for torso in ("actor_torso", "critic_torso"):
        acts = dg.hidden_activations(net, params, obs, torso)
        want = numpy_mlp(params["params"][torso], np.asarray(obs), "tanh", False)
        assert len(acts) == 2
        for got, expected in zip(acts, want):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="torso"):
        dg.hidden_activations(net, params, obs, "torso")


def test_hidden_activations_vmapped_over_runs_match_each_run():
    net = QNetwork(SPEC, (8, 8), "relu", True)
    keys = jax.random.split(jax.random.key(0), 3)
    params = jax.vmap(lambda k: init_params(net, k, jnp.zeros((1, 4))))(keys)
    obs = jax.random.normal(jax.random.key(1), (3, 6, 4))
    batched = jax.jit(jax.vmap(lambda p, o: dg.hidden_activations(net, p, o)))(params, obs)
    for r in range(3):
        alone = dg.hidden_activations(net, jax.tree.map(lambda x, r=r: x[r], params), obs[r])
        for b, a in zip(batched, alone):
            np.testing.assert_allclose(b[r], a, rtol=1e-6, atol=1e-6)


# --- dormant units -------------------------------------------------------------------------


H = np.array([[0.0, 1.0, 2.0, 0.1], [0.0, -1.0, -2.0, 0.1]], np.float32)  # E|h| = 0, 1, 2, .1


def test_dormant_scores_and_fractions_by_hand():
    # s = E|h_i| / mean_k E|h_k| = [0, 1, 2, 0.1] / 0.775
    np.testing.assert_allclose(dg.dormant_scores(H), np.array([0, 1, 2, 0.1]) / 0.775, rtol=1e-6)
    assert dg.dormant_mask(H, 0.0).tolist() == [True, False, False, False]
    assert float(dg.dormant_fraction(H, 0.0)) == 0.25  # exactly the dead unit
    assert float(dg.dormant_fraction(H, 0.1)) == 0.25  # 0.1 / 0.775 = 0.129 > 0.1
    assert dg.dormant_mask(H, 0.2).tolist() == [True, False, False, True]
    assert float(dg.dormant_fraction(H, 1.5)) == 0.75  # 2 / 0.775 = 2.58 only stays
    dead = np.zeros((3, 5), np.float32)
    assert float(dg.dormant_fraction(dead, 0.0)) == 1.0  # 0 / 0: every unit dormant
    assert dg.dormant_mask(dead, 0.1).all()


def test_dormant_fraction_jitted_and_vmapped_over_runs_and_thresholds():
    h = np.stack([H, H * 3.0, np.zeros_like(H)])  # scores are scale-free; the last all dead
    tau = jnp.array([0.0, 0.2, 0.0])
    got = jax.jit(jax.vmap(dg.dormant_fraction))(h, tau)
    assert got.tolist() == [0.25, 0.5, 1.0]
    masks = jax.jit(jax.vmap(dg.dormant_mask))(h, tau)
    assert masks.shape == (3, 4) and masks[1].tolist() == [True, False, False, True]


def test_dead_units_of_a_relu_network_are_found_dormant():
    net = QNetwork(SPEC, (8, 8), "relu")
    params = init_params(net, jax.random.key(0), jnp.zeros((1, 4)))
    layer = params["params"]["torso"]["Dense_0"]
    dead = np.zeros(8, bool)
    dead[[1, 4, 6]] = True  # no input reaches them, and the bias keeps them below 0
    layer["kernel"] = jnp.where(dead, 0.0, layer["kernel"])
    layer["bias"] = jnp.where(dead, -1.0, 0.1)
    obs = jax.random.normal(jax.random.key(2), (64, 4))
    first = dg.hidden_activations(net, params, obs)[0]
    assert dg.dormant_mask(first, 0.0).tolist() == dead.tolist()
    assert float(dg.dormant_fraction(first, 0.0)) == 3 / 8


# --- eigenvalues, singular values, ranks ---------------------------------------------------------


def random_symmetric(rng, n):
    a = rng.normal(size=(n, n))
    return ((a + a.T) / 2).astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 33])
def test_symmetric_eigenvalues_match_numpy(n):
    a = random_symmetric(np.random.default_rng(n), n)
    got = jax.jit(dg.symmetric_eigenvalues)(a)
    want = np.linalg.eigvalsh(a.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=2e-6 * np.abs(want).max())


def test_symmetric_eigenvalues_of_repeated_and_known_spectra():
    np.testing.assert_allclose(dg.symmetric_eigenvalues(jnp.eye(6) * 2.5), np.full(6, 2.5))
    q = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0]
    spectrum = np.array([-3.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 5.0])
    a = ((q * spectrum) @ q.T).astype(np.float32)
    np.testing.assert_allclose(dg.symmetric_eigenvalues(a), spectrum, atol=1e-5)
    assert (np.diff(np.asarray(dg.symmetric_eigenvalues(a))) >= 0).all()  # ascending


def test_symmetric_eigenvalues_vmapped_over_8_matrices_match_numpy():
    rng = np.random.default_rng(0)
    a = np.stack([random_symmetric(rng, 12) for _ in range(8)])
    got = jax.jit(jax.vmap(dg.symmetric_eigenvalues))(a)
    want = np.linalg.eigvalsh(a.astype(np.float64))
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("shape", [(40, 16), (10, 16), (64, 64)])
def test_singular_values_match_numpy(shape):
    f = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 30.0
    got = jax.jit(dg.singular_values)(f)
    want = np.linalg.svd(f.astype(np.float64), compute_uv=False)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * want.max())


def low_rank(rng, b, d, sigmas):
    """[b, d] with exactly these singular values (the rest 0)."""
    u = np.linalg.qr(rng.normal(size=(b, len(sigmas))))[0]
    v = np.linalg.qr(rng.normal(size=(d, len(sigmas))))[0]
    return ((u * np.asarray(sigmas)) @ v.T).astype(np.float32)


def numpy_ranks(f, delta=0.01):
    s = np.linalg.svd(f.astype(np.float64), compute_uv=False)
    s = np.where(s > 1e-6 * s.max(), s, 0.0)  # what is rounding in float32 input
    p = s[s > 0] / s.sum()
    erank = math.exp(-np.sum(p * np.log(p)))
    srank = int(np.argmax(np.cumsum(s) >= (1 - delta) * s.sum())) + 1
    return erank, srank


# One program per input shape: erank, then srank at deltas 0.01, 0.12, 0.15, 0.35.
_RANKS = jax.jit(
    lambda f: (dg.effective_rank(f), *(dg.srank(f, d) for d in (0.01, 0.12, 0.15, 0.35)))
)


def test_effective_rank_and_srank_by_hand():
    f = np.zeros((6, 4), np.float32)
    f[[0, 1, 2, 3], [0, 1, 2, 3]] = [4.0, 3.0, 2.0, 1.0]  # singular values 4, 3, 2, 1
    p = np.array([0.4, 0.3, 0.2, 0.1])
    erank, *srank = _RANKS(f)
    assert float(erank) == pytest.approx(math.exp(-np.sum(p * np.log(p))), 1e-5)
    # 0.01: 9 < 9.9, all four needed; 0.12: 4 + 3 + 2 = 9 >= 8.8; 0.15: 9 >= 8.5;
    # 0.35: 4 + 3 = 7 >= 6.5 (no delta where a partial sum meets the bar exactly)
    assert [int(k) for k in srank] == [4, 3, 3, 2]
    erank, *srank = _RANKS(np.eye(16, dtype=np.float32) * 0.3)  # 16 equal singular values
    assert float(erank) == pytest.approx(16.0, 1e-5)
    assert [int(k) for k in srank] == [16, 15, 14, 11]  # ceil(16 (1 - delta)): 15.84, 14.08, ...
    erank, *srank = _RANKS(np.zeros((8, 5), np.float32))
    assert float(erank) == 0.0 and [int(k) for k in srank] == [0, 0, 0, 0]


@pytest.mark.parametrize(
    ("b", "d", "sigmas"),
    [
        (32, 16, [3.0, 2.0, 1.0]),
        (64, 64, [5.0] * 7),
        (100, 48, [10.0, 1.0, 0.5, 0.1]),
        (8, 16, [1.0] * 2),
    ],
)
def test_ranks_of_known_rank_features_match_numpy(b, d, sigmas):
    f = low_rank(np.random.default_rng(b + d), b, d, sigmas)
    erank, srank = numpy_ranks(f)
    assert float(jax.jit(dg.effective_rank)(f)) == pytest.approx(erank, rel=1e-4)
    assert int(jax.jit(dg.srank)(f)) == srank
    if len(set(sigmas)) == 1:  # r equal singular values: both ranks are r
        assert erank == pytest.approx(len(sigmas), 1e-6) and srank == len(sigmas)


def test_ranks_vmapped_over_8_random_matrices_match_numpy():
    rng = np.random.default_rng(3)
    # Random matrices of different ranks (a fifth of the columns of some repeated).
    fs = rng.normal(size=(8, 48, 24)).astype(np.float32)
    fs[::2, :, 18:] = fs[::2, :, :6]
    got_e = jax.jit(jax.vmap(dg.effective_rank))(fs)
    got_s = jax.jit(jax.vmap(lambda f: dg.srank(f, 0.05)))(fs)
    for i, f in enumerate(fs):
        erank, srank = numpy_ranks(f, 0.05)
        assert float(got_e[i]) == pytest.approx(erank, rel=1e-4)
        assert int(got_s[i]) == srank


@pytest.mark.timeout(120)
def test_ranks_vmapped_over_64_runs_of_width_256_finish_and_call_no_lapack():
    """The deadlock-prone case (vmapped linear algebra in a jitted CPU program): 64 runs of
    256 features, with no custom call (LAPACK) in the program."""
    rng = np.random.default_rng(0)
    fs = jnp.asarray(np.maximum(rng.normal(size=(64, 256, 256)), 0.0).astype(np.float32))
    fn = jax.jit(jax.vmap(lambda f: (dg.effective_rank(f), dg.srank(f))))
    assert "custom_call" not in fn.lower(fs).as_text()
    erank, srank = jax.block_until_ready(fn(fs))
    assert erank.shape == srank.shape == (64,)
    for r in (0, 63):
        want_e, want_s = numpy_ranks(np.asarray(fs[r]))
        # Square: a few singular values fall below what the Gram matrix resolves (7e-4 of
        # the largest) and read as 0 (singular_values' docstring), so rel 5e-4, not 1e-4.
        assert float(erank[r]) == pytest.approx(want_e, rel=5e-4)
        assert int(srank[r]) == want_s


# --- parameters -----------------------------------------------------------------------------------


def test_param_norm_and_distance_by_hand():
    params = {"a": jnp.array([3.0, 4.0]), "b": {"c": jnp.array([[12.0]])}}
    anchor = {"a": jnp.array([3.0, 1.0]), "b": {"c": jnp.array([[8.0]])}}
    assert float(dg.param_norm(params)) == 13.0
    assert float(dg.param_distance(params, anchor)) == 5.0  # |(0, 3, 4)|
    assert float(dg.param_distance(params, params)) == 0.0
    batched = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), params)
    assert jax.jit(jax.vmap(dg.param_norm))(batched).tolist() == [13.0, 26.0]
    assert float(dg.tree_norm(params)) == 13.0


# --- KL and churn ------------------------------------------------------------------------------


def test_categorical_kl_by_hand():
    p = Categorical(jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8]])))
    q = Categorical(jnp.log(jnp.array([[0.25, 0.75], [0.2, 0.8]])) + 3.0)  # logits, unnormalised
    np.testing.assert_allclose(kl(p, q), [0.5 * math.log(4 / 3), 0.0], atol=1e-6)
    assert float(dg.policy_kl(p, q)) == pytest.approx(0.25 * math.log(4 / 3), abs=1e-6)


def test_categorical_kl_with_an_impossible_action_is_finite_with_finite_gradients():
    p = Categorical(jnp.array([0.0, -jnp.inf]))  # p = (1, 0)
    q_logits = jnp.zeros(2)  # q = (1/2, 1/2)
    assert float(kl(p, Categorical(q_logits))) == pytest.approx(math.log(2), abs=1e-6)
    grad = jax.grad(lambda z: kl(p, Categorical(z)))(q_logits)
    np.testing.assert_allclose(grad, [-0.5, 0.5], atol=1e-6)  # d/dz of -log softmax(z)_0


def test_gaussian_kl_by_hand_and_against_samples():
    p = DiagGaussian(jnp.array([[0.0, 1.0]]), jnp.array([0.0, math.log(0.5)]))
    q = DiagGaussian(jnp.array([[1.0, 1.0]]), jnp.array([math.log(2.0), math.log(0.5)]))
    # dim 0: log 2 + (1 + 1) / 8 - 1/2; dim 1: the same Gaussian, 0
    np.testing.assert_allclose(kl(p, q), [math.log(2.0) - 0.25], rtol=1e-6)
    assert float(kl(p, p)[0]) == 0.0
    # E_p[log p - log q] by Monte Carlo, through the classes' own log_prob
    p1 = DiagGaussian(jnp.zeros((200_000, 2)) + p.mean, p.log_std)
    x = p1.sample(jax.random.key(0))
    q1 = DiagGaussian(jnp.zeros((200_000, 2)) + q.mean, q.log_std)
    estimate = jnp.mean(p1.log_prob(x) - q1.log_prob(x))
    assert float(estimate) == pytest.approx(float(kl(p, q)[0]), abs=0.01)


def test_kl_refuses_mixed_distributions():
    with pytest.raises(TypeError, match="no KL"):
        kl(Categorical(jnp.zeros(2)), DiagGaussian(jnp.zeros(2), jnp.zeros(2)))


def test_policy_kl_vmapped_over_runs():
    logits = jax.random.normal(jax.random.key(0), (4, 6, 3))
    before = Categorical(logits)
    after = Categorical(logits.at[1:].add(jax.random.normal(jax.random.key(1), (3, 6, 3))))
    got = jax.jit(jax.vmap(dg.policy_kl))(before, after)
    p = jax.nn.softmax(logits, -1)
    want = np.sum(p * (jax.nn.log_softmax(logits) - jax.nn.log_softmax(after.logits)), -1).mean(-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert float(got[0]) == 0.0 and (got[1:] > 0).all()
    gauss = DiagGaussian(jnp.zeros((4, 6, 2)), jnp.zeros((4, 2)))
    moved = DiagGaussian(jnp.ones((4, 6, 2)), jnp.zeros((4, 2)))
    np.testing.assert_allclose(jax.vmap(dg.policy_kl)(gauss, moved), np.full(4, 1.0))  # 2 x 1/2


def test_greedy_changed_by_hand_and_vmapped():
    before = jnp.array([[1.0, 2.0], [3.0, 1.0], [0.0, 5.0]])
    after = jnp.array([[2.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    assert float(dg.greedy_changed(before, after)) == pytest.approx(1 / 3)
    assert float(dg.greedy_changed(before, before)) == 0.0
    runs = jax.jit(jax.vmap(dg.greedy_changed))(
        jnp.stack([before, before]), jnp.stack([after, -before])
    )
    np.testing.assert_allclose(runs, [1 / 3, 1.0])
