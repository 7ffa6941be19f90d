"""The memory-lean (checkpoint-and-recompute) explicit BPTT: the same results as the full one, in
far less compiled temporary memory."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_problem, reference_value_and_grad

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS
from perceptron1_jax.lean import default_segment

# time 7: segment 3 leaves a padded last segment, 7 is exact; 1 (per step) and 20 (one segment) are edges.
CASES = list(itertools.product(sorted(CELLS), [False, True], [False, True], [3, 7]))
CASES += [("lstm", True, True, 1), ("gru", False, True, 20)]


@pytest.mark.parametrize("cell, many_to_many, with_lengths, segment", CASES)
def test_lean_equals_full_and_jax_grad(x64, cell, many_to_many, with_lengths, segment):
    params, xs, labels, lengths = random_problem(segment, cell, 3, 7, 2, 4, 3, many_to_many=many_to_many,
                                                 with_lengths=with_lengths)
    h0 = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
    h0 = (h0, 0.5 * h0) if cell == "lstm" else h0
    loss, grads, extras = p1.bptt(params, xs, labels, cell, lengths, h0, return_extras=True, lean=segment)
    full_loss, full_grads, full_extras = p1.bptt(params, xs, labels, cell, lengths, h0, return_extras=True)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-12)
    assert_trees_close(grads, full_grads, rtol=1e-9, atol=1e-14)
    assert_trees_close(extras, full_extras, rtol=1e-9, atol=1e-14)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths, h0)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-13)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_lean_segments_longer_than_a_backward_block(x64, cell):
    # Segments of 20 steps span a full WINDOW block plus a remainder inside the backward.
    from perceptron1_jax.scan import WINDOW

    segment = WINDOW + 4
    params, xs, labels, lengths = random_problem(5, cell, 2, 2 * segment + 3, 2, 3, 3, many_to_many=True,
                                                 with_lengths=True)
    loss, grads = p1.bptt(params, xs, labels, cell, lengths, lean=segment)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-13)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_lean_float32(cell):
    params, xs, labels, _ = random_problem(0, cell, 8, 64, 4, 16, 5, dtype=jnp.float32)
    loss, grads = p1.bptt(params, xs, labels, cell, lean=8)
    full_loss, full_grads = p1.bptt(params, xs, labels, cell)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
    # Same float32 arithmetic, regrouped into segments: differences at the level of rounding.
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(full_grads))
    assert_trees_close(grads, full_grads, rtol=1e-4, atol=1e-6 * scale)


def _temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_lean_uses_far_less_compiled_memory():
    cell, time = "lstm", 1024
    params, xs, labels, _ = random_problem(0, cell, 8, time, 4, 32, 5, dtype=jnp.float32)
    segment = default_segment(time)
    assert segment == 32

    def full(p, x, y):
        return p1.bptt(p, x, y, cell)

    def lean(p, x, y):
        return p1.bptt(p, x, y, cell, lean=segment)

    def autodiff(p, x, y):
        return jax.value_and_grad(p1.loss)(p, x, y, cell)

    lean_bytes = _temp_bytes(lean, params, xs, labels)
    assert lean_bytes * 8 <= _temp_bytes(autodiff, params, xs, labels)
    assert lean_bytes * 8 <= _temp_bytes(full, params, xs, labels)


def test_bad_segment():
    params, xs, labels, _ = random_problem(0, "gru", 2, 5, 2, 3, 2, dtype=jnp.float32)
    with pytest.raises(ValueError, match="lean: expected a positive int, got 0"):
        p1.bptt(params, xs, labels, "gru", lean=0)
