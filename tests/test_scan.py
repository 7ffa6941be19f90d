"""Both branches of the forward scan, the input projection inside the loop (XLA:CPU's default)
and hoisted before it (the accelerators' default, chosen here by set_hoist_input_projection): the
explicit BPTT equals jax.grad in float64 through each, over cells, depths, directions, lengths,
tokens, lean mode and the single-layer API with h0 (T = 1 and batch = 1 among them), and the two
branches trace different programs with the same result."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, max_scale, random_model, random_problem, reference_value_and_grad

import perceptron1_jax as p1
from perceptron1_jax.scan import hoist_input_projection, set_hoist_input_projection

L = p1.LayerSpec
CASES = {  # name: (spec, batch, time, lengths, lean)
    "elman, T=1, batch 1": (p1.ModelSpec((L("elman", 3),), 4, input_size=2), 1, 1, True, None),
    "bi-lstm -> gru, tokens, many-to-many": (
        p1.ModelSpec((L("lstm", 4, True), L("gru", 3)), 5, vocab_size=7, embed_size=3, many_to_many=True), 3, 5,
        True, None),
    "gru -> lstm, MSE, lean 2": (p1.ModelSpec((L("gru", 4), L("lstm", 3)), 2, input_size=3, loss="mse"), 2, 7,
                                 False, 2),
}


@pytest.fixture(params=[False, True], ids=["in-loop", "hoisted"])
def hoisted(request):
    """The deprecated process-wide choice (the public functions fold it into the spec jit sees)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = set_hoist_input_projection(request.param)
    try:
        yield request.param
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            set_hoist_input_projection(previous)


@pytest.mark.parametrize("name", CASES)
def test_explicit_bptt_equals_jax_grad_in_both_branches(x64, hoisted, name):
    spec, batch, time, with_lengths, lean = CASES[name]
    assert hoist_input_projection() is hoisted
    params, xs, targets, lengths = random_model(len(name), spec, batch, time, with_lengths=with_lengths)
    loss, grads = p1.model_bptt(params, xs, targets, spec, lengths, lean=lean)
    ref_loss, ref_grads = jax.value_and_grad(p1.model_loss)(params, xs, targets, spec, lengths)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru"])
def test_single_layer_bptt_with_h0_equals_jax_grad_in_both_branches(x64, hoisted, cell):
    params, xs, labels, lengths = random_problem(3, cell, 2, 4, 3, 5, 4, many_to_many=True, with_lengths=True)
    rng = np.random.default_rng(4)
    h0 = tuple(jnp.asarray(rng.standard_normal((2, 5))) for _ in range(2 if cell == "lstm" else 1))
    h0 = h0 if cell == "lstm" else h0[0]
    loss, grads = p1.bptt(params, xs, labels, cell, lengths, h0)
    ref_loss, ref_grads = reference_value_and_grad(cell)(params, xs, labels, lengths, h0)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))


def _matmuls_outside_loops(fn, *args) -> int:
    """dot_general equations of ``fn``'s program, inside nested jits but not inside scans."""

    def count(jaxpr) -> int:
        total = 0
        for eqn in jaxpr.eqns:
            total += eqn.primitive.name == "dot_general"
            if eqn.primitive.name in ("pjit", "jit", "closed_call"):
                total += count(eqn.params["jaxpr"].jaxpr)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def test_the_branches_differ_in_program_not_in_result(x64):
    spec = CASES["bi-lstm -> gru, tokens, many-to-many"][0]
    params, xs, targets, lengths = random_model(1, spec, 3, 5, with_lengths=True)

    counts, outputs = [], []
    for hoist in (False, True):
        chosen = dataclasses.replace(spec, forms=p1.LoopForms(hoist=hoist))

        def apply(params, xs, lengths, chosen=chosen):
            return p1.model_apply(params, xs, chosen, lengths)

        counts.append(_matmuls_outside_loops(apply, params, xs, lengths))
        outputs.append(apply(params, xs, lengths))
    assert counts[1] == counts[0] + 3  # one projection per direction (2 + 1) moves out of the loop
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-12)
    with pytest.raises(ValueError, match="hoist: expected True, False or None, got 'yes'"):
        set_hoist_input_projection("yes")
