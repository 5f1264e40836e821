"""GAE and discounted returns against hand-computed values, termination vs truncation."""

import chex
import jax.numpy as jnp
import numpy as np

from research.rl.returns import discounted_returns, gae

REWARDS = jnp.array([1.0, 2.0, 3.0])
VALUES = jnp.array([0.5, 1.0, 1.5])
NEXT_VALUES = jnp.array([1.0, 1.5, 2.0])  # V(s'_t)
NO = jnp.array([False, False, False])
AT_1 = jnp.array([False, True, False])

# gamma = 0.9, lambda = 0.8; deltas without cuts: 1.4, 2.35, 3.3
GAE_CASES = {
    # A2 = 3.3; A1 = 2.35 + .72 * 3.3; A0 = 1.4 + .72 * A1
    "no_end": (NO, NO, [4.80272, 4.726, 3.3]),
    # terminated at 1: delta1 = 2 - 1 = 1 (no bootstrap), trace cut after it
    "terminated": (AT_1, NO, [2.12, 1.0, 3.3]),
    # truncated at 1: delta1 bootstraps from V(final obs) = 1.5, trace still cut
    "truncated": (NO, AT_1, [3.092, 2.35, 3.3]),
}


class GaeTest(chex.TestCase):
    @chex.all_variants(with_pmap=False)
    def test_cases(self):
        for name, (terminated, truncated, expected) in GAE_CASES.items():
            adv, targets = self.variant(gae)(
                REWARDS, VALUES, NEXT_VALUES, terminated, truncated, 0.9, 0.8
            )
            np.testing.assert_allclose(adv, expected, rtol=1e-6, err_msg=name)
            np.testing.assert_allclose(targets, np.array(expected) + VALUES, rtol=1e-6)

    @chex.all_variants(with_pmap=False)
    def test_lambda_one_equals_discounted_returns(self):
        for terminated, truncated, _ in GAE_CASES.values():
            _, targets = self.variant(gae)(
                REWARDS, VALUES, NEXT_VALUES, terminated, truncated, 0.9, 1.0
            )
            returns = discounted_returns(REWARDS, terminated, truncated, NEXT_VALUES, 0.9)
            np.testing.assert_allclose(targets, returns, rtol=1e-6)

    @chex.all_variants(with_pmap=False)
    def test_batch_dims(self):
        """[T, N] gives per-column results equal to the [T] computation."""
        terms = jnp.stack([NO, AT_1], axis=1)
        truncs = jnp.stack([AT_1, NO], axis=1)
        tile = lambda x: jnp.stack([x, x], axis=1)
        adv, _ = self.variant(gae)(
            tile(REWARDS), tile(VALUES), tile(NEXT_VALUES), terms, truncs, 0.9, 0.8
        )
        np.testing.assert_allclose(adv[:, 0], GAE_CASES["truncated"][2], rtol=1e-6)
        np.testing.assert_allclose(adv[:, 1], GAE_CASES["terminated"][2], rtol=1e-6)


BOOT = jnp.array([10.0, 20.0, 30.0])
RETURN_CASES = {
    "no_end": (NO, NO, [27.1, 29.0, 30.0]),  # G2 = 3 + .9 * 30
    "terminated_at_1": (AT_1, NO, [2.8, 2.0, 30.0]),
    "truncated_at_1": (NO, AT_1, [19.0, 20.0, 30.0]),  # G1 = 2 + .9 * 20
    "terminated_at_end": (jnp.array([False, False, True]), NO, [5.23, 4.7, 3.0]),
}


class ReturnsTest(chex.TestCase):
    @chex.all_variants(with_pmap=False)
    def test_cases(self):
        for name, (terminated, truncated, expected) in RETURN_CASES.items():
            got = self.variant(discounted_returns)(REWARDS, terminated, truncated, BOOT, 0.9)
            np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=name)

    def test_monte_carlo_without_bootstrap(self):
        got = discounted_returns(REWARDS, NO, NO, jnp.zeros(3), 0.5)
        np.testing.assert_allclose(got, [1 + 0.5 * 2 + 0.25 * 3, 2 + 0.5 * 3, 3.0], rtol=1e-6)
