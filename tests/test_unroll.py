"""The scanned unroll against a plain Python loop over the cell step; lengths and h0 semantics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_problem

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS, cell_step, hidden_size_of

CELL_NAMES = sorted(CELLS)


def python_loop_unroll(cell, params, xs, lengths=None, carry=None):
    """Reference: step the cell one time step at a time in Python (haiku's static_unroll)."""
    spec = CELLS[cell]
    batch, time, _ = xs.shape
    hidden = hidden_size_of(spec, params["cell"])
    if carry is None:
        carry = tuple(jnp.zeros((batch, hidden), xs.dtype) for _ in range(spec.carry_size))
    hs = []
    for t in range(time):
        new = cell_step(spec, params["cell"], carry, xs[:, t])
        if lengths is not None:
            valid = np.asarray(lengths)[:, None] > t
            new = tuple(jnp.where(valid, n, o) for n, o in zip(new, carry))
        carry = new
        hs.append(carry[0])
    return jnp.stack(hs, axis=1), (carry if spec.carry_size > 1 else carry[0])


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("batch, time", [(1, 1), (3, 1), (1, 6), (4, 9)])
def test_scan_equals_python_loop(x64, cell, with_lengths, batch, time):
    params, xs, _, lengths = random_problem(batch + time, cell, batch, time, 3, 4, 2, with_lengths=with_lengths)
    hs, final = p1.unroll(params, xs, cell, lengths)
    ref_hs, ref_final = python_loop_unroll(cell, params, xs, lengths)
    assert hs.shape == (batch, time, 4) and hs.dtype == jnp.float64
    np.testing.assert_allclose(hs, ref_hs, rtol=1e-13, atol=1e-15)
    assert_trees_close(final, ref_final, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_lengths_freeze_state_and_final_carry_is_last_valid_step(x64, cell):
    params, xs, _, _ = random_problem(0, cell, 3, 6, 2, 4, 2)
    lengths = jnp.array([1, 6, 3], jnp.int32)
    hs, final = p1.unroll(params, xs, cell, lengths)
    h_final = final[0] if cell == "lstm" else final
    for b, n in enumerate([1, 6, 3]):
        np.testing.assert_array_equal(hs[b, n - 1 :], jnp.broadcast_to(hs[b, n - 1], hs[b, n - 1 :].shape))
        np.testing.assert_array_equal(h_final[b], hs[b, n - 1])
        # The valid prefix equals an unroll of the truncated sequence alone.
        short_hs, _ = p1.unroll(params, xs[b : b + 1, :n], cell)
        np.testing.assert_allclose(hs[b : b + 1, :n], short_hs, rtol=1e-13)
    # Full lengths are the same as no lengths.
    full, _ = p1.unroll(params, xs, cell, jnp.full((3,), 6, jnp.int32))
    np.testing.assert_allclose(full, p1.unroll(params, xs, cell)[0], rtol=1e-13)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_h0_continues_a_split_sequence(x64, cell):
    params, xs, _, _ = random_problem(5, cell, 2, 8, 3, 4, 2)
    hs, final = p1.unroll(params, xs, cell)
    first, carry = p1.unroll(params, xs[:, :3], cell)
    second, final_split = p1.unroll(params, xs[:, 3:], cell, h0=carry)
    np.testing.assert_allclose(jnp.concatenate([first, second], 1), hs, rtol=1e-13)
    assert_trees_close(final_split, final, rtol=1e-13)
    h0 = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4)))
    h0 = (h0, 0.5 * h0) if cell == "lstm" else h0
    with_h0, _ = p1.unroll(params, xs, cell, h0=h0)
    np.testing.assert_allclose(with_h0, python_loop_unroll(cell, params, xs, carry=tuple(jax.tree.leaves(h0)))[0],
                               rtol=1e-13)


def test_float32_stays_float32():
    params = p1.init_params(jax.random.key(0), "lstm", 2, 3, 4)
    xs = jnp.ones((2, 5, 2), jnp.float32)
    hs, (h, c) = p1.unroll(params, xs, "lstm")
    assert hs.dtype == h.dtype == c.dtype == jnp.float32
