"""Stacked forward-only layers as a wavefront (perceptron1_jax.wavefront): which layers join, and the
forward, the explicit backward (loss, every gradient, every dL/dh_t, dL/dx, dL/dh0, dZ) equal to the
layer-by-layer path in float64 at rtol 1e-10 over a grid (cells mixed, a bidirectional layer in the
middle, lengths, dropout, tokens, both heads and losses, T = 1, batch = 1, a user cell), jax.grad
through the wavefront forward at rtol 1e-6, truncated BPTT and gradient flow."""

import jax
import pytest
from helpers import assert_trees_close, loop_form, model_everything, random_model, user_tanh_cell

import perceptron1_jax as p1
from perceptron1_jax.truncated import run_windows
from perceptron1_jax.wavefront import set_wavefront, wave_groups, wavefront_enabled


def wavefront(enabled):
    return loop_form(set_wavefront, enabled)


@pytest.fixture(scope="module", autouse=True)
def registered():
    """A user cell with a derived backward (its dZx is dL/dx itself), for this module only."""
    with user_tanh_cell("wave_tanh"):
        yield


GRID = [  # (layers as (cell, size, bidirectional), many_to_many, loss, lengths, dropout, tokens, batch, time)
    ((("lstm", 5, False), ("lstm", 4, False)), False, "cross_entropy", False, 0.0, False, 3, 7),
    ((("gru", 4, False), ("elman", 3, False), ("lstm", 5, False)), True, "cross_entropy", True, 0.0, False, 3, 9),
    ((("elman", 3, False), ("gru", 4, False)), True, "mse", True, 0.3, False, 2, 6),
    ((("lstm", 3, False), ("gru", 4, False), ("lstm", 3, True), ("elman", 4, False), ("mingru", 2, False)),
     False, "cross_entropy", True, 0.25, False, 3, 8),
    ((("gru", 3, False), ("lstm", 2, False)), False, "mse", False, 0.0, True, 1, 1),
    ((("wave_tanh", 3, False), ("lstm", 4, False), ("wave_tanh", 2, False)), True, "cross_entropy", True, 0.0,
     False, 1, 5),
    ((("minlstm", 4, False), ("gru", 3, False)), True, "cross_entropy", False, 0.0, True, 2, 12),
]


def grid_case(case):
    layers, many_to_many, loss, with_lengths, dropout, tokens, batch, time = GRID[case]
    extra = {"vocab_size": 7, "embed_size": 3} if tokens else {"input_size": 2}
    spec = p1.ModelSpec([p1.LayerSpec(c, h, bidirectional=bi) for c, h, bi in layers], num_outputs=3, loss=loss,
                        many_to_many=many_to_many, dropout=dropout, **extra)
    params, xs, targets, lengths = random_model(case, spec, batch, time, with_lengths=with_lengths)
    key = jax.random.key(case) if dropout else None
    return spec, params, xs, targets, lengths, key


@pytest.mark.parametrize("case", range(len(GRID)))
def test_the_wavefront_equals_the_layers_one_after_the_other(x64, case):
    spec, params, xs, targets, lengths, key = grid_case(case)
    with wavefront(False):
        reference = model_everything(spec, params, xs, targets, lengths, key)
    with wavefront(True):
        assert any(stop - start > 1 for start, stop in wave_groups(spec))
        waved = model_everything(spec, params, xs, targets, lengths, key)
        autodiff = jax.grad(p1.model_loss)(params, xs, targets, spec, lengths, key)  # through the wavefront
    assert_trees_close(waved, reference, rtol=1e-10, atol=1e-14)
    assert_trees_close(autodiff, reference[2], rtol=1e-6, atol=1e-12)


def test_which_layers_join_a_wavefront():
    spec = p1.ModelSpec([p1.LayerSpec("lstm", 3), p1.LayerSpec("gru", 3), p1.LayerSpec("lstm", 3, bidirectional=True),
                         p1.LayerSpec("elman", 2), p1.LayerSpec("mingru", 2, scan="associative"),
                         p1.LayerSpec("gru", 2), p1.LayerSpec("gru", 2), p1.LayerSpec("gru", 2)],
                        num_outputs=2, input_size=1)
    with wavefront(True):
        assert wave_groups(spec) == ((0, 2), (2, 3), (3, 4), (4, 5), (5, 8))
        assert wave_groups(spec, lean=4) == tuple((k, k + 1) for k in range(8))  # lean mode: layer by layer
    with wavefront(False):
        assert wave_groups(spec) == tuple((k, k + 1) for k in range(8))
    with wavefront(None):
        assert wavefront_enabled() == (jax.default_backend() != "cpu")
    with pytest.raises(ValueError, match=r"enabled: expected True, False or None, got 'yes'"):
        set_wavefront("yes")


def test_truncated_bptt_gradient_flow_and_lean_mode_through_the_wavefront(x64):
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3), p1.LayerSpec("lstm", 4), p1.LayerSpec("elman", 3)],
                        num_outputs=3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(11, spec, 2, 12)
    results = {}
    for enabled in (False, True):
        with wavefront(enabled):  # windows start from the carries the last one left: carries0 in the wave
            _, windows, _ = run_windows(params, xs, targets, spec, k1=4, k2=6)
            flows = p1.model_gradient_flow(params, xs, targets, spec)
            lean = p1.model_bptt(params, xs, targets, spec, lean=3)
            results[enabled] = ([w[1:] for w in windows], [f["fwd"].dh_norm for f in flows], lean)
    assert_trees_close(results[True], results[False], rtol=1e-10, atol=1e-14)
