"""The QR-free orthogonal initialiser, and a batched-init stress test (see DESIGN.md deadlock)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.rl.networks import orthogonal, orthonormal_columns


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
    """The DESIGN.md deadlock case: Acrobot, 16 vmapped seeds, init + train, many times."""
    from research.config import parse_experiment
    from research.pipelines.train import execute, prepare
    from research.runner import run_batch
    from tests.conftest import compose_raw

    prepared = prepare(parse_experiment(compose_raw(
        "progress=false", "env=acrobot", "runs.seeds=16", "agent.num_steps=32",
        "train.total_timesteps=1024", "train.num_logs=1")))
    r = prepared.runs
    execute(prepared)
    for i in range(8):
        out = run_batch(prepared.trainer, r.seeds + 100 * (i + 1), r.hparams, r.env_params)
        assert out.metrics["env_steps"].shape == (16, 1)
