"""research.bench.op_counts finds each loop body of a compiled program and counts its thunks."""

import jax
import jax.numpy as jnp

from research.bench.op_counts import body_counts, computations


def test_a_loop_with_one_dot_per_iteration_counts_one_dot_in_its_body():
    def program(x, w):  # x [4, 8], w [8, 8]: 5 iterations of x @ w then tanh
        return jax.lax.fori_loop(0, 5, lambda i, x: jnp.tanh(x @ w), x)

    x, w = jnp.ones((4, 8)), jnp.eye(8)
    text = jax.jit(program).lower(x, w).compile().as_text()
    rows = body_counts(text)
    bodies = [r for r in rows if r["library"]]
    assert len(bodies) == 1, rows  # the loop body, and only it, holds the matrix product
    entry = [r for r in rows if r["while"]]
    assert len(entry) == 1 and entry[0] is not bodies[0]  # the entry runs the one loop
    # the product, the tanh and the counter: three thunks an iteration, one a library call
    assert (bodies[0]["thunks"], bodies[0]["library"], bodies[0]["while"]) == (3, 1, 0)
    assert sum(c["dot"] for c in computations(text).values()) == 1  # inside the call
