"""Both directions of a bidirectional layer in one scan (perceptron1_jax.layers.fused_forward /
fused_backward, p1.set_fused_directions): the forward and the explicit backward (loss, every
gradient, every dL/dh_t, dZ, dL/dx, dL/dh0) equal to one scan per direction in float64 at rtol 1e-10
over a grid (cells mixed, lengths, dropout, tokens, both heads and losses, T = 1, batch = 1, a user
cell, with the wavefront on too), jax.grad through the fused forward at rtol 1e-6, and what stays
unfused (lean mode, the associative scan)."""

import jax
import numpy as np
import pytest
from helpers import assert_trees_close, loop_form, model_everything, random_model, user_tanh_cell

import perceptron1_jax as p1
from perceptron1_jax.layers import fused_directions_enabled, fuses
from perceptron1_jax.wavefront import set_wavefront


def fused(enabled):
    return loop_form(p1.set_fused_directions, enabled)


@pytest.fixture(scope="module", autouse=True)
def registered():
    with user_tanh_cell("fused_tanh"):
        yield


GRID = [  # (layers as (cell, size, bidirectional), many_to_many, loss, lengths, dropout, tokens, batch, time)
    ((("lstm", 5, True),), False, "cross_entropy", True, 0.0, False, 3, 7),
    ((("gru", 4, True), ("elman", 3, True)), True, "mse", True, 0.3, False, 2, 9),
    ((("elman", 3, False), ("lstm", 4, True)), True, "cross_entropy", False, 0.0, True, 3, 6),
    ((("mingru", 3, True), ("fused_tanh", 2, True)), False, "mse", True, 0.0, False, 1, 1),
    ((("lstm", 3, False), ("gru", 2, False), ("minlstm", 4, True)), True, "cross_entropy", True, 0.25, False, 2, 12),
]


def grid_case(case):
    layers, many_to_many, loss, with_lengths, dropout, tokens, batch, time = GRID[case]
    extra = {"vocab_size": 7, "embed_size": 3} if tokens else {"input_size": 2}
    spec = p1.ModelSpec([p1.LayerSpec(c, h, bidirectional=bi) for c, h, bi in layers], num_outputs=3, loss=loss,
                        many_to_many=many_to_many, dropout=dropout, **extra)
    params, xs, targets, lengths = random_model(10 + case, spec, batch, time, with_lengths=with_lengths)
    return spec, params, xs, targets, lengths, jax.random.key(case) if dropout else None


@pytest.mark.parametrize("case", range(len(GRID)))
def test_one_scan_for_both_directions_equals_one_per_direction(x64, case):
    spec, params, xs, targets, lengths, key = grid_case(case)
    with fused(False):
        reference = model_everything(spec, params, xs, targets, lengths, key)
    with fused(True), loop_form(set_wavefront, case == 4):  # the last case: the wavefront below it too
        assert any(fuses(layer) for layer in spec.layers)
        both = model_everything(spec, params, xs, targets, lengths, key)
        autodiff = jax.grad(p1.model_loss)(params, xs, targets, spec, lengths, key)  # through the vmap-ed scan
    assert_trees_close(both, reference, rtol=1e-10, atol=1e-14)
    assert_trees_close(autodiff, reference[2], rtol=1e-6, atol=1e-12)


def test_what_runs_fused_and_the_switch():
    layer = p1.LayerSpec("gru", 3, bidirectional=True)
    with fused(True):
        assert fuses(layer) and not fuses(layer, lean=4) and not fuses(p1.LayerSpec("gru", 3))
        assert not fuses(p1.LayerSpec("mingru", 3, bidirectional=True, scan="associative"))
    with fused(False):
        assert not fuses(layer)
    with fused(None):
        assert fused_directions_enabled() == (jax.default_backend() != "cpu")
    with pytest.raises(ValueError, match=r"enabled: expected True, False or None, got 1"):
        p1.set_fused_directions(1)


def test_lean_mode_and_gradient_flow_with_fused_directions(x64):
    spec, params, xs, targets, lengths, _ = grid_case(1)
    results = {}
    for enabled in (False, True):
        with fused(enabled):
            flows = p1.model_gradient_flow(params, xs, targets, spec, lengths)
            lean = p1.model_bptt(params, xs, targets, spec, lengths, lean=3)
            results[enabled] = ([{d: f.dh_norm for d, f in layer.items()} for layer in flows], lean)
    assert_trees_close(results[True], results[False], rtol=1e-10, atol=1e-14)
    assert np.all(np.isfinite(results[True][0][0]["bwd"])) and np.max(results[True][0][0]["bwd"]) > 0
