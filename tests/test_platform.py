import jax
import numpy as np
import pytest

from research.platform import straight_line_threefry

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu",
                                reason="the rolled threefry is the CPU lowering")


def lowered(key):
    """A fresh program of random draws, lowered (a new function: jax caches lowerings)."""
    return jax.jit(lambda k: (jax.random.normal(k, (5,)),
                              jax.random.key_data(jax.random.split(k, 3)))).lower(key)


def test_straight_line_threefry_drops_the_loop_and_keeps_the_bits():
    key = jax.random.key(3)
    rolled = lowered(key)
    with straight_line_threefry() as took_effect:
        straight = lowered(key)
    assert took_effect
    assert "stablehlo.while" in rolled.as_text()
    assert "stablehlo.while" not in straight.as_text()
    assert "stablehlo.while" in lowered(key).as_text()  # jax's CPU rule is back
    for a, b in zip(rolled.compile()(key), straight.compile()(key)):
        np.testing.assert_array_equal(a, b)
