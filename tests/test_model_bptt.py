"""model_bptt (the explicit backward composed layer by layer) equals jax.grad(model_loss) in
float64 over a grid of depth, directions, lengths, readout, loss and input kind (every depth, and
any four of the five two-way options in all their combinations), with the cells mixed per layer,
with and without dropout; and the single-layer API is the one-layer case."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, max_scale, random_model, random_problem
from hypothesis import given, settings
from hypothesis import strategies as st

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS

CELL_NAMES = sorted(CELLS)


def make_spec(seed, depth, bidirectional, many_to_many, loss, tokens, dropout=0.0):
    """Cells and sizes drawn per layer (so layers mix cells), from ``seed``."""
    rng = np.random.default_rng(seed)
    layers = [p1.LayerSpec(CELL_NAMES[int(rng.integers(3))], int(rng.integers(1, 5)), bidirectional)
              for _ in range(depth)]
    inputs = {"vocab_size": 7, "embed_size": 3} if tokens else {"input_size": 2}
    return p1.ModelSpec(layers, num_outputs=3, loss=loss, many_to_many=many_to_many, dropout=dropout, **inputs)


def reference(params, xs, targets, spec, lengths, dropout_key=None):
    return jax.value_and_grad(p1.model_loss)(params, xs, targets, spec, lengths, dropout_key)


def check_against_autodiff(spec, params, xs, targets, lengths, dropout_key=None):
    loss, grads = p1.model_bptt(params, xs, targets, spec, lengths, dropout_key)
    ref_loss, ref_grads = reference(params, xs, targets, spec, lengths, dropout_key)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))


# Every depth with half of the 2^5 combinations of the five two-way options: tokens is the parity
# of the other four, so any four of the five options meet in all 16 of their combinations.
GRID = [(depth, b, lengths, m2m, loss, b ^ lengths ^ m2m ^ (loss == "mse"))
        for depth, b, lengths, m2m, loss in itertools.product([1, 2, 3], [False, True], [False, True],
                                                              [False, True], ["cross_entropy", "mse"])]


@pytest.mark.parametrize("depth, bidirectional, with_lengths, many_to_many, loss, tokens", GRID)
def test_model_bptt_equals_jax_grad(x64, depth, bidirectional, with_lengths, many_to_many, loss, tokens):
    seed = GRID.index((depth, bidirectional, with_lengths, many_to_many, loss, tokens))
    spec = make_spec(seed, depth, bidirectional, many_to_many, loss, tokens)
    batch, time = 1 + seed % 3, 1 + seed % 5  # T = 1 and batch = 1 among them
    params, xs, targets, lengths = random_model(seed, spec, batch, time, with_lengths=with_lengths)
    check_against_autodiff(spec, params, xs, targets, lengths)


# Half of the 2^4 combinations (tokens = the parity of the other three): every pair of options
# still meets in all four of its combinations.
DROPOUT_GRID = [(b, m, loss, b ^ m ^ (loss == "mse"))
                for b, m, loss in itertools.product([False, True], [False, True], ["cross_entropy", "mse"])]


@pytest.mark.parametrize("bidirectional, many_to_many, loss, tokens", DROPOUT_GRID)
def test_model_bptt_with_dropout_equals_jax_grad(x64, bidirectional, many_to_many, loss, tokens):
    spec = make_spec(7, 2, bidirectional, many_to_many, loss, tokens, dropout=0.4)
    params, xs, targets, lengths = random_model(3, spec, 3, 4, with_lengths=True)
    check_against_autodiff(spec, params, xs, targets, lengths, jax.random.key(5))


def test_dropout_masks_change_the_loss(x64):
    # The masks really drop units: a different key gives a different loss, no key none at all.
    spec = make_spec(7, 2, True, True, "cross_entropy", True, dropout=0.4)
    params, xs, targets, lengths = random_model(3, spec, 3, 4, with_lengths=True)
    with_key = p1.model_loss(params, xs, targets, spec, lengths, jax.random.key(5))
    assert with_key != p1.model_loss(params, xs, targets, spec, lengths, jax.random.key(6))
    assert with_key != p1.model_loss(params, xs, targets, spec, lengths)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10**6), depth=st.integers(1, 3), batch=st.integers(1, 4), time=st.integers(1, 6),
       bidirectional=st.booleans(), many_to_many=st.booleans(), mse=st.booleans(), tokens=st.booleans(),
       with_lengths=st.booleans())
def test_model_bptt_random_shapes(seed, depth, batch, time, bidirectional, many_to_many, mse, tokens, with_lengths):
    from conftest import enable_x64

    with enable_x64():
        spec = make_spec(seed, depth, bidirectional, many_to_many, "mse" if mse else "cross_entropy", tokens)
        params, xs, targets, lengths = random_model(seed, spec, batch, time, with_lengths=with_lengths)
        check_against_autodiff(spec, params, xs, targets, lengths)


@pytest.mark.parametrize("lean", [1, 3])
def test_lean_model_equals_full(x64, lean):
    spec = make_spec(11, 2, True, True, "cross_entropy", True, dropout=0.3)
    params, xs, targets, lengths = random_model(4, spec, 3, 7, with_lengths=True)
    key = jax.random.key(1)
    loss, grads, extras = p1.model_bptt(params, xs, targets, spec, lengths, key, return_extras=True, lean=lean)
    full_loss, full_grads, full_extras = p1.model_bptt(params, xs, targets, spec, lengths, key, return_extras=True)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-12)
    assert_trees_close(grads, full_grads, rtol=1e-9, atol=1e-14)
    assert_trees_close(extras, full_extras, rtol=1e-9, atol=1e-14)


def test_extras_are_the_gradients_of_the_inputs_and_the_top_states(x64):
    spec = make_spec(2, 2, True, True, "mse", False)
    params, xs, targets, lengths = random_model(2, spec, 2, 5)
    _, _, extras = p1.model_bptt(params, xs, targets, spec, lengths, return_extras=True)
    # dL/dxs against autodiff of the reference loss.
    dxs = jax.grad(p1.model_loss, argnums=1)(params, xs, targets, spec, lengths)
    np.testing.assert_allclose(extras.dxs, dxs, rtol=1e-9, atol=1e-14)
    # The forward direction's last step and the backward direction's step 0 feed nothing later in
    # their own recurrence: their total dL/dh is exactly what the head sends there.
    from perceptron1_jax.model import forward, score

    def loss_of_offset(offset):
        out = forward(params, xs, spec, lengths)
        return score(spec, (out.features + offset) @ params["head"]["W"] + params["head"]["b"], targets, out.mask_tm)

    top = spec.layers[-1]
    dfeatures = jax.grad(loss_of_offset)(jnp.zeros((5, 2, top.features)))  # (T, B, 2H)
    h = top.hidden_size
    np.testing.assert_allclose(extras.dhs[-1]["fwd"][:, -1], dfeatures[-1, :, :h], rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(extras.dhs[-1]["bwd"][:, 0], dfeatures[0, :, h:], rtol=1e-10, atol=1e-15)
    assert [set(layer) for layer in extras.dhs] == [{"fwd", "bwd"}] * 2
    assert extras.dhs[0]["bwd"].shape == (2, 5, spec.layers[0].hidden_size)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_single_layer_api_is_the_one_layer_model(x64, cell):
    params, xs, labels, lengths = random_problem(3, cell, 3, 5, 2, 4, 3, many_to_many=True, with_lengths=True)
    spec = p1.ModelSpec([p1.LayerSpec(cell, 4)], 3, input_size=2, many_to_many=True)
    model_params = {"layers": [{"fwd": params["cell"]}], "head": params["readout"]}
    loss, grads = p1.bptt(params, xs, labels, cell, lengths)
    model_loss, model_grads = p1.model_bptt(model_params, xs, labels, spec, lengths)
    assert loss == model_loss
    assert_trees_close(grads, {"cell": model_grads["layers"][0]["fwd"], "readout": model_grads["head"]},
                       rtol=0, atol=0)


def test_jit_and_vmap_compose(x64):
    spec = make_spec(1, 2, True, False, "cross_entropy", False)
    params, xs, targets, lengths = random_model(1, spec, 2, 4, with_lengths=True)
    jitted = jax.jit(lambda p, x: p1.model_bptt(p, x, targets, spec, lengths))(params, xs)
    assert_trees_close(jitted, p1.model_bptt(params, xs, targets, spec, lengths), rtol=1e-12, atol=1e-15)
    stacked = jnp.stack([xs, 2.0 * xs, -xs])
    per = jax.vmap(lambda x: p1.model_bptt(params, x, targets, spec, lengths)[1])(stacked)
    for k, x in enumerate([xs, 2.0 * xs, -xs]):
        assert_trees_close(jax.tree.map(lambda a, k=k: a[k], per), p1.model_bptt(params, x, targets, spec, lengths)[1],
                           rtol=1e-10, atol=1e-14)
    outputs = jax.vmap(lambda x: p1.model_apply(params, x, spec, lengths))(stacked)
    assert outputs.shape == (3, 2, 3)
