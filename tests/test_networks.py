"""The QR-free orthogonal initialiser, and a batched-init stress test (docs/design.md)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.rl.networks import init_params, orthogonal, orthonormal_batch, orthonormal_columns


@pytest.mark.parametrize("shape", [(4, 64), (64, 64), (64, 2), (128, 1), (3, 5, 7)])
def test_orthogonal_to_float32_precision(shape):
    w = jax.jit(orthogonal(1.0), static_argnums=1)(jax.random.key(0), shape)
    assert w.shape == shape
    m = w.reshape(-1, shape[-1])
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=2e-6)


def test_scale_and_matches_qr_with_positive_diagonal():
    a = jax.random.normal(jax.random.key(1), (32, 8))
    q = orthonormal_columns(a)
    q_ref, r_ref = np.linalg.qr(np.asarray(a, np.float64))
    q_ref = q_ref * np.sign(np.diag(r_ref))  # Haar convention: positive R diagonal
    np.testing.assert_allclose(q, q_ref, atol=1e-5)
    w = orthogonal(np.sqrt(2.0))(jax.random.key(2), (16, 16))
    np.testing.assert_allclose(np.linalg.norm(w, axis=0), np.sqrt(2.0), rtol=1e-5)


@pytest.mark.timeout(300)
def test_vmapped_init_repeatedly_does_not_hang():
    """Many vmapped inits in a row under a timeout: the QR version deadlocked on 2 cores."""
    init = jax.jit(jax.vmap(lambda k: orthogonal(1.0)(k, (64, 64))))
    for i in range(30):
        w = init(jax.random.split(jax.random.key(i), 16)).block_until_ready()
    assert bool(jnp.all(jnp.isfinite(w)))


@pytest.mark.timeout(600)
def test_batched_init_and_short_train_repeatedly_do_not_hang():
    """The docs/design.md deadlock case: Acrobot, 16 vmapped seeds, init + train, many times."""
    from research.config import parse_experiment
    from research.pipelines.train import execute, prepare
    from research.runner import run_batch
    from tests.conftest import compose_raw

    prepared = prepare(
        parse_experiment(
            compose_raw(
                "progress=false",
                "env=acrobot",
                "runs.seeds=16",
                "agent.num_steps=32",
                "train.total_timesteps=1024",
                "train.num_logs=1",
            )
        )
    )
    r = prepared.runs
    execute(prepared)
    for i in range(8):
        out = run_batch(prepared.trainer, r.seeds + 100 * (i + 1), r.hparams, r.env_params)
        assert out.metrics["env_steps"].shape == (16, 1)


def test_orthonormal_batch_is_gram_schmidt_of_each_corner():
    shapes = [(64, 4), (64, 64), (8, 2), (64, 1)]
    key = jax.random.key(5)
    batch = orthonormal_batch(key, shapes)
    draws = jax.random.normal(key, (64, sum(m for _, m in shapes)))
    start = 0
    for q, (n, m) in zip(batch, shapes):
        assert q.shape == (n, m)
        np.testing.assert_allclose(q, orthonormal_columns(draws[:n, start : start + m]), atol=1e-5)
        np.testing.assert_allclose(q.T @ q, np.eye(m), atol=2e-6)
        start += m


def test_init_params_gives_independent_scaled_orthogonal_kernels():
    from research.envs import EnvSpec
    from research.rl.networks import ActorCritic

    spec = EnvSpec(env_id="CartPole-v1", obs_shape=(4,), discrete=True, num_actions=2)
    net = ActorCritic(spec, (64, 64), "tanh")
    obs = jnp.zeros((1, 4))
    params = jax.jit(lambda k: init_params(net, k, obs))(jax.random.key(0))["params"]
    assert jax.tree.structure(params) == jax.tree.structure(
        net.init(jax.random.key(0), obs)["params"]
    )
    scales = {
        "actor_torso": np.sqrt(2.0),
        "critic_torso": np.sqrt(2.0),
        "actor_head": 0.01,
        "critic_head": 1.0,
    }
    kernels = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        names = [p.key for p in path]
        if names[-1] == "bias":
            np.testing.assert_array_equal(leaf, 0.0)
            continue
        w = np.asarray(leaf) / scales[names[0]]
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        np.testing.assert_allclose(gram, np.eye(len(gram)), atol=2e-6)
        kernels["/".join(names)] = w
    # the actor's and the critic's 64x64 layers are drawn independently
    assert not np.allclose(
        kernels["actor_torso/Dense_1/kernel"], kernels["critic_torso/Dense_1/kernel"], atol=0.1
    )
    # a vmapped batch of inits is the same as each init alone
    keys = jax.random.split(jax.random.key(1), 3)
    batched = jax.jit(jax.vmap(lambda k: init_params(net, k, obs)))(keys)
    alone = jax.jit(lambda k: init_params(net, k, obs))(keys[2])
    for b, a in zip(jax.tree.leaves(batched), jax.tree.leaves(alone)):
        np.testing.assert_allclose(b[2], a, atol=1e-5)
    w = batched["params"]["critic_torso"]["Dense_1"]["kernel"] / np.sqrt(2.0)  # [3, 64, 64]
    np.testing.assert_allclose(
        np.einsum("rij,rik->rjk", w, w), np.broadcast_to(np.eye(64), w.shape), atol=2e-6
    )
    assert not np.allclose(w[0], w[1], atol=0.1)


def test_init_params_leaves_other_initialisers_random():
    class Mixed(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(8, kernel_init=orthogonal(2.0), name="ortho")(x)
            return nn.Dense(8, name="lecun")(x)  # flax's default kernel init

    params = init_params(Mixed(), jax.random.key(0), jnp.zeros((1, 8)))["params"]
    ortho, lecun = params["ortho"]["kernel"] / 2.0, params["lecun"]["kernel"]
    np.testing.assert_allclose(ortho.T @ ortho, np.eye(8), atol=2e-6)
    assert 0.5 < float(jnp.std(lecun)) * np.sqrt(8) < 1.5  # lecun normal: std 1/sqrt(fan_in)
    assert not np.allclose(np.abs(lecun.T @ lecun), 0.0, atol=1e-3)
