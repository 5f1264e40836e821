"""The compiler options every program of the project is compiled with."""

import jax
import jax.numpy as jnp
import numpy as np

from research import platform


def test_cpu_programs_compile_at_the_projects_llvm_level_and_others_keep_xla_defaults(
        monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")
    assert platform.compiler_options("cpu") == {
        "xla_backend_optimization_level": platform.CPU_BACKEND_OPTIMIZATION_LEVEL}
    assert platform.compiler_options("gpu") == {}
    assert platform.compiler_options("tpu") == {}


def test_an_optimization_level_in_xla_flags_is_left_to_xla(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert platform.compiler_options("cpu") == {}


def test_this_xla_accepts_the_options_and_the_numbers_match_the_default_build():
    # An option name XLA does not know fails at compile time: caught here, not in a sweep.
    f = lambda x: jnp.tanh(x @ x.T).sum(axis=0) * jnp.exp(-x[:, 0])
    x = jnp.linspace(-1.0, 1.0, 48, dtype=jnp.float32).reshape(8, 6)
    np.testing.assert_allclose(platform.jit(f, "cpu")(x), jax.jit(f)(x), rtol=1e-5)

