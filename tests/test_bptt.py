"""The explicit BPTT against oracles: jax.grad of the plain loss, finite differences, jax.grad with
respect to hidden states and inputs; and the custom_vjp entry point against autodiff."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import enable_x64
from helpers import assert_trees_close, max_scale, random_problem, reference_value_and_grad
from hypothesis import given, settings
from hypothesis import strategies as st

import perceptron1_jax as p1
from perceptron1_jax.bptt import explicit_value_and_grad
from perceptron1_jax.cells import CELLS, cell_step, hidden_size_of
from perceptron1_jax.losses import cross_entropy
from perceptron1_jax.model import readout
from perceptron1_jax.scan import public_carry

CELL_NAMES = sorted(CELLS)
# (batch, time, input, hidden, classes): edges T=1, batch=1, hidden=1, input=1.
SHAPES = [(1, 1, 1, 1, 2), (1, 6, 3, 4, 3), (5, 1, 2, 3, 4), (3, 9, 2, 1, 2), (4, 7, 3, 5, 3), (2, 4, 1, 6, 5)]


# Every cell and shape, many-to-one and many-to-many; lengths on alternate shapes, so that each cell
# meets each (readout, lengths) pair on three shapes.
GRID = [(cell, shape, many_to_many, (i % 2 == 1) != many_to_many)
        for cell, (i, shape), many_to_many in itertools.product(CELL_NAMES, enumerate(SHAPES), [False, True])]


@pytest.mark.parametrize("seed, cell, shape, many_to_many, with_lengths", [(i, *case) for i, case in enumerate(GRID)])
def test_bptt_equals_jax_grad_float64(x64, seed, cell, shape, many_to_many, with_lengths):
    params, xs, labels, lengths = random_problem(
        seed, cell, *shape, many_to_many=many_to_many, with_lengths=with_lengths
    )
    loss, grads = p1.bptt(params, xs, labels, cell, lengths)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("many_to_many", [False, True])
def test_bptt_equals_jax_grad_float32(cell, many_to_many):
    # Both sides compute in float32 (eps 1.2e-7) with different summation orders: the explicit
    # backward sums dW in matmuls over blocks of 8 steps' (time, batch) rows, autodiff accumulates per step.
    # Over T=32 steps with hidden 16 the observed difference is ~1e-6 relative to the gradient's
    # scale; rtol 1e-4 plus an absolute 1e-5 of the scale leaves room for BLAS order changes while
    # still catching any missing or wrong term (those give O(1) relative errors).
    params, xs, labels, lengths = random_problem(
        7, cell, 8, 32, 6, 16, 5, dtype=jnp.float32, many_to_many=many_to_many, with_lengths=True
    )
    loss, grads = p1.bptt(params, xs, labels, cell, lengths)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    assert_trees_close(grads, ref_grads, rtol=1e-4, atol=1e-5 * max_scale(ref_grads))


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("many_to_many", [False, True])
def test_bptt_matches_central_finite_differences(x64, cell, many_to_many):
    params, xs, labels, lengths = random_problem(
        3, cell, 2, 3, 2, 2, 3, many_to_many=many_to_many, with_lengths=True
    )
    _, grads = p1.bptt(params, xs, labels, cell, lengths)
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    eps = 1e-6
    for index, (leaf, grad_leaf) in enumerate(zip(leaves, grad_leaves)):
        numeric = np.zeros(leaf.shape)
        for pos in np.ndindex(*leaf.shape):
            def shifted(delta, pos=pos, index=index, leaf=leaf):
                moved = list(leaves)
                moved[index] = leaf.at[pos].add(delta)
                return float(p1.loss(jax.tree.unflatten(treedef, moved), xs, labels, cell, lengths))
            numeric[pos] = (shifted(eps) - shifted(-eps)) / (2 * eps)
        # Central differences have O(eps^2) truncation and O(1e-16/eps) rounding error: ~1e-10.
        np.testing.assert_allclose(grad_leaf, numeric, rtol=1e-6, atol=1e-9)


def _loss_with_hidden_perturbation(cell, params, xs, labels, lengths, eps, many_to_many):
    """Python-loop reference in which ``eps[:, t]`` is added to ``h_t`` after step ``t``; its
    gradient in ``eps`` is the total dL/dh_t."""
    spec = CELLS[cell]
    batch, time, _ = xs.shape
    hidden = hidden_size_of(spec, params["cell"])
    carry = tuple(jnp.zeros((batch, hidden), xs.dtype) for _ in range(spec.carry_size))
    hs = []
    for t in range(time):
        new = cell_step(spec, params["cell"], carry, xs[:, t])
        if lengths is not None:
            valid = (t < lengths)[:, None]
            new = tuple(jnp.where(valid, n, o) for n, o in zip(new, carry))
        carry = (new[0] + eps[:, t],) + new[1:]
        hs.append(carry[0])
    if many_to_many:
        mask = None if lengths is None else jnp.arange(time, dtype=lengths.dtype)[None, :] < lengths[:, None]
        return cross_entropy(readout(params["readout"], jnp.stack(hs, 1)), labels, mask)
    return cross_entropy(readout(params["readout"], carry[0]), labels)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("many_to_many, with_lengths", [(False, False), (False, True), (True, False), (True, True)])
def test_dhs_dxs_dh0_equal_jax_grad(x64, cell, many_to_many, with_lengths):
    params, xs, labels, lengths = random_problem(
        11, cell, 3, 6, 2, 4, 3, many_to_many=many_to_many, with_lengths=with_lengths
    )
    _, _, extras = p1.bptt(params, xs, labels, cell, lengths, return_extras=True)
    eps = jnp.zeros(xs.shape[:2] + (4,), xs.dtype)
    ref_dhs = jax.jit(jax.grad(_loss_with_hidden_perturbation, argnums=5), static_argnums=(0, 6))(
        cell, params, xs, labels, lengths, eps, many_to_many
    )
    np.testing.assert_allclose(extras.dhs, ref_dhs, rtol=1e-6, atol=1e-13)
    ref_dxs = jax.jit(jax.grad(p1.loss, argnums=1), static_argnums=3)(params, xs, labels, cell, lengths)
    np.testing.assert_allclose(extras.dxs, ref_dxs, rtol=1e-6, atol=1e-13)
    h0 = jax.random.normal(jax.random.key(5), (3, 4), xs.dtype)
    h0 = (h0, -0.5 * h0) if cell == "lstm" else h0
    _, _, extras_h0 = p1.bptt(params, xs, labels, cell, lengths, h0, return_extras=True)
    ref_dh0 = jax.jit(jax.grad(p1.loss, argnums=5), static_argnums=3)(params, xs, labels, cell, lengths, h0)
    assert_trees_close(extras_h0.dh0, ref_dh0, rtol=1e-6, atol=1e-13)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("many_to_many, with_lengths", [(False, False), (True, True)])
def test_blocked_backward_equals_jax_grad(x64, cell, window, many_to_many, with_lengths):
    # T = 7 in blocks of 1, 3 (full blocks plus a remainder) and 8 (one block): the
    # block boundaries must not change the loss, the gradients or any per-step output.
    params, xs, labels, lengths = random_problem(
        21 + window, cell, 3, 7, 2, 4, 3, many_to_many=many_to_many, with_lengths=with_lengths
    )
    h0 = jax.random.normal(jax.random.key(window), (3, 4), xs.dtype)
    carry0 = (h0, -0.5 * h0) if cell == "lstm" else (h0,)

    @jax.jit
    def blocked(q, x, y, n, c0):
        return explicit_value_and_grad(cell, q, x, y, n, c0, many_to_many=many_to_many, keep_dhs=True,
                                       keep_dz=True, window=window)

    loss, grads, aux = blocked(params, xs, labels, lengths, carry0)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths, public_carry(CELLS[cell], carry0))
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))
    _, _, whole = jax.jit(
        lambda q, x, y, n, c0: explicit_value_and_grad(cell, q, x, y, n, c0, many_to_many=many_to_many,
                                                       keep_dhs=True, keep_dz=True, window=7)
    )(params, xs, labels, lengths, carry0)
    for name in ("dhs_tm", "dxs_tm", "dcarry0", "dzx_tm", "dzh_part_tm"):
        assert_trees_close(getattr(aux, name), getattr(whole, name), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("window", [0, -3, 2.5, True])
def test_backward_block_size_must_be_a_positive_int(window):
    params, xs, labels, _ = random_problem(0, "gru", 2, 3, 2, 3, 2, dtype=jnp.float32)
    with pytest.raises(ValueError, match="window: expected a positive int"):
        explicit_value_and_grad("gru", params, xs, labels, many_to_many=False, window=window)


def test_dhs_show_vanishing_profile_for_many_to_one(x64):
    # Many-to-one: only the last step is read, so dL/dh_t at earlier steps comes purely through
    # the recurrence; with small recurrent weights it must shrink geometrically backwards in time.
    params, xs, labels, _ = random_problem(2, "elman", 4, 20, 3, 8, 3)
    params["cell"]["W_h"] = 0.2 * params["cell"]["W_h"]
    _, _, extras = p1.bptt(params, xs, labels, "elman", return_extras=True)
    norms = np.linalg.norm(np.asarray(extras.dhs), axis=(0, 2))
    assert norms[-1] > 1e3 * norms[0]


@settings(max_examples=12, deadline=None)
@given(
    cell=st.sampled_from(CELL_NAMES),
    batch=st.integers(1, 4),
    time=st.integers(1, 8),
    input_size=st.integers(1, 4),
    hidden=st.integers(1, 5),
    classes=st.integers(1, 4),
    many_to_many=st.booleans(),
    with_lengths=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bptt_property_random_shapes(cell, batch, time, input_size, hidden, classes, many_to_many,
                                     with_lengths, seed):
    with enable_x64():
        params, xs, labels, lengths = random_problem(
            seed, cell, batch, time, input_size, hidden, classes,
            many_to_many=many_to_many, with_lengths=with_lengths,
        )
        loss, grads = p1.bptt(params, xs, labels, cell, lengths)
        ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-15)
        assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max(max_scale(ref_grads), 1e-300))


# --------------------------------------------------------------------------- custom_vjp entry


def _user_loss(unroll_fn, cell):
    """A loss that uses every output of the unroll: all hidden states and the final carry."""
    def user_loss(params, xs, lengths, h0):
        hs, final = unroll_fn(params, xs, cell, lengths, h0)
        final_terms = sum(jnp.sum(jnp.cos(leaf)) for leaf in jax.tree.leaves(final))
        return jnp.sum(jnp.sin(hs) * jnp.arange(1, hs.shape[1] + 1, dtype=hs.dtype)[None, :, None]) + final_terms
    return user_loss


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_unroll_bptt_gradient_equals_autodiff(x64, cell, with_lengths):
    params, xs, _, lengths = random_problem(4, cell, 3, 5, 2, 4, 2, with_lengths=with_lengths)
    h0 = jax.random.normal(jax.random.key(9), (3, 4), xs.dtype)
    h0 = (h0, 0.3 * h0) if cell == "lstm" else h0
    explicit = _user_loss(p1.unroll_bptt, cell)
    plain = _user_loss(p1.unroll, cell)
    outputs = p1.unroll_bptt(params, xs, cell, lengths, h0)
    assert_trees_close(outputs, p1.unroll(params, xs, cell, lengths, h0), rtol=1e-14, atol=1e-15)
    got = jax.grad(explicit, argnums=(0, 1, 3))(params, xs, lengths, h0)
    want = jax.grad(plain, argnums=(0, 1, 3))(params, xs, lengths, h0)
    # The readout is unused by the unroll: its gradient is zero on both sides.
    assert_trees_close(got, want, rtol=1e-6, atol=1e-12)
    jitted = jax.jit(jax.grad(explicit, argnums=(0, 1, 3)))(params, xs, lengths, h0)
    assert_trees_close(jitted, want, rtol=1e-6, atol=1e-12)


def test_unroll_bptt_runs_the_explicit_backward(x64, monkeypatch):
    # jax.grad through unroll_bptt must call the hand-written backward, not autodiff of the scan.
    import importlib

    bptt_module = importlib.import_module("perceptron1_jax.layers")

    calls = []
    original = bptt_module.backward_scan

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(bptt_module, "backward_scan", counting)
    params, xs, _, _ = random_problem(4, "gru", 2, 3, 2, 3, 2)
    jax.grad(lambda q: jnp.sum(p1.unroll_bptt(q, xs, "gru")[0]))(params)
    assert calls


def test_unroll_bptt_composes_with_vmap_and_grad_of_grad(x64):
    cell = "lstm"
    params, xs, _, _ = random_problem(8, cell, 2, 4, 3, 3, 2)
    stacked_xs = jnp.stack([xs, 2.0 * xs, -xs])  # (3 problems, batch, time, input)
    explicit = _user_loss(p1.unroll_bptt, cell)
    plain = _user_loss(p1.unroll, cell)
    per_problem = jax.vmap(jax.grad(explicit), in_axes=(None, 0, None, None))(params, stacked_xs, None, None)
    reference = jax.vmap(jax.grad(plain), in_axes=(None, 0, None, None))(params, stacked_xs, None, None)
    assert_trees_close(per_problem, reference, rtol=1e-6, atol=1e-12)

    # Reverse over reverse: the explicit backward is itself differentiable jnp code.
    def grad_norm(fn, q):
        return sum(jnp.sum(g**2) for g in jax.tree.leaves(jax.grad(fn)(q, xs, None, None)["cell"]))

    second = jax.grad(lambda q: grad_norm(explicit, q))(params)
    second_ref = jax.grad(lambda q: grad_norm(plain, q))(params)
    assert_trees_close(second, second_ref, rtol=1e-6, atol=1e-11)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_bptt_under_jit_and_vmap(x64, cell):
    params, xs, labels, lengths = random_problem(6, cell, 3, 5, 2, 3, 4, with_lengths=True)
    eager = p1.bptt(params, xs, labels, cell, lengths)
    jitted = jax.jit(lambda q, x, y, n: p1.bptt(q, x, y, cell, n))(params, xs, labels, lengths)
    assert_trees_close(jitted, eager, rtol=1e-12, atol=1e-15)

    ensemble = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
    losses, grads = jax.vmap(lambda q: p1.bptt(q, xs, labels, cell, lengths))(ensemble)
    for member in range(2):
        one = jax.tree.map(lambda a, m=member: a[m], ensemble)
        ref_loss, ref_grads = jax.value_and_grad(p1.loss)(one, xs, labels, cell, lengths)
        np.testing.assert_allclose(losses[member], ref_loss, rtol=1e-12)
        assert_trees_close(jax.tree.map(lambda a, m=member: a[m], grads), ref_grads, rtol=1e-6, atol=1e-12)


# Mixed precision. Documented tolerance: the bfloat16-compute gradients are within 2% of the
# float32 ones in relative global norm, the loss within 1% (measured on these cases: at most 1.1%
# and 0.5%; jax.grad in bfloat16, which adds the weight gradients up in bfloat16, reached 4.7%).
BFLOAT16_GRAD_RTOL, BFLOAT16_LOSS_RTOL = 2e-2, 1e-2


def _relative_norm(actual, expected) -> float:
    num = sum(float(jnp.sum((a - e) ** 2)) for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)))
    return (num / sum(float(jnp.sum(e**2)) for e in jax.tree.leaves(expected))) ** 0.5


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("depth, tokens, time", [(1, False, 16), (2, True, 48)])
def test_bfloat16_compute_gradients_match_float32(cell, depth, tokens, time):
    from helpers import random_model

    from perceptron1_jax.bptt import make_value_and_grad

    inputs = {"vocab_size": 20, "embed_size": 8} if tokens else {"input_size": 8}
    spec = p1.ModelSpec(tuple(p1.LayerSpec(cell, 32 // (k + 1), depth > 1 and k == 0) for k in range(depth)), 5,
                        many_to_many=tokens, **inputs)
    params, xs, targets, lengths = random_model(depth, spec, 8, time, dtype=jnp.float32, with_lengths=True)
    loss32, grads32, _ = jax.jit(make_value_and_grad(spec))(params, xs, targets, None, lengths)
    loss16, grads16, outputs = jax.jit(make_value_and_grad(spec, compute_dtype="bfloat16"))(
        params, xs, targets, None, lengths)
    assert loss16.dtype == outputs.dtype == jnp.float32
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads16))
    loss_error, grad_error = abs(float(loss16 - loss32)) / abs(float(loss32)), _relative_norm(grads16, grads32)
    assert loss_error < BFLOAT16_LOSS_RTOL and grad_error < BFLOAT16_GRAD_RTOL, (loss_error, grad_error)
    assert grad_error > 1e-4  # it did compute in bfloat16 (float32 rounding alone is ~1e-7)
