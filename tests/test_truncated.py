"""Truncated BPTT: with k2 >= T it is full BPTT; otherwise each window's gradient equals jax.grad
of the loss with the state stopped at the window border."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model, random_problem

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS
from perceptron1_jax.losses import cross_entropy
from perceptron1_jax.model import readout
from perceptron1_jax.truncated import Window, run_windows, windows

CELL_NAMES = sorted(CELLS)


def test_window_plan():
    assert windows(6, 2) == [Window(0, 0, 2), Window(2, 2, 4), Window(4, 4, 6)]
    assert windows(6, 2, 4) == [Window(0, 0, 2), Window(0, 2, 4), Window(2, 4, 6)]
    assert windows(6, 6, 100) == [Window(0, 0, 6)]
    assert windows(6, 6, 2, many_to_one=True) == [Window(4, 5, 6)]
    with pytest.raises(ValueError, match="k2: expected k2 >= k1 = 3"):
        windows(6, 3, 2)
    with pytest.raises(ValueError, match="k1: expected a divisor of the sequence length 6, got 4"):
        windows(6, 4)
    with pytest.raises(ValueError, match="k1: expected k1 = time = 6"):
        windows(6, 3, many_to_one=True)
    with pytest.raises(ValueError, match="k1: expected a positive int, got 0"):
        windows(6, 0)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("many_to_many", [False, True])
def test_k2_covering_the_sequence_is_full_bptt(x64, cell, many_to_many):
    params, xs, labels, _ = random_problem(1, cell, 3, 6, 2, 4, 3, many_to_many=many_to_many)
    _, results, final = run_windows(params, xs, labels, cell, k1=6, k2=10)
    (window, loss, grads), = results
    ref_loss, ref_grads = p1.bptt(params, xs, labels, cell)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-13)
    assert_trees_close(grads, ref_grads, rtol=1e-12, atol=1e-15)
    assert_trees_close(final, p1.unroll(params, xs, cell)[1], rtol=1e-13)


def _stopped_window_loss(cell, params, xs, labels, window, many_to_many):
    """Reference: plain autodiff loss of one window, with the state at the window start computed
    by the plain unroll and cut off from the gradient by ``lax.stop_gradient``."""
    hs, carry = (None, None)
    if window.start > 0:
        _, carry = p1.unroll(params, xs[:, : window.start], cell)
        carry = jax.tree.map(jax.lax.stop_gradient, carry)
    hs, final = p1.unroll(params, xs[:, window.start : window.end], cell, h0=carry)
    if many_to_many:
        scored = hs[:, window.score_from - window.start :]
        return cross_entropy(readout(params["readout"], scored), labels[:, window.score_from : window.end])
    h_last = final[0] if cell == "lstm" else final
    return cross_entropy(readout(params["readout"], h_last), labels)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("many_to_many, k1, k2", [(True, 2, 2), (True, 2, 4), (True, 3, 5), (False, 8, 3)])
def test_each_window_equals_grad_of_stop_gradient_loss(x64, cell, many_to_many, k1, k2):
    time = 6 if many_to_many else 8
    params, xs, labels, _ = random_problem(2, cell, 2, time, 3, 3, 4, many_to_many=many_to_many)
    _, results, _ = run_windows(params, xs, labels, cell, k1=k1, k2=k2)
    assert len(results) == (time // k1 if many_to_many else 1)
    for window, loss, grads in results:
        ref_loss, ref_grads = jax.value_and_grad(_stopped_window_loss, argnums=1)(
            cell, params, xs, labels, window, many_to_many
        )
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-13)
    if many_to_many and k1 < k2:
        # The stop really bites: the truncated gradient differs from the untruncated window gradient.
        window, _, grads = results[-1]
        full = jax.grad(lambda q: _stopped_window_loss(cell, q, xs, labels, window._replace(start=0), True))(params)
        difference = np.max(np.abs(grads["cell"]["W_x"] - full["cell"]["W_x"]))
        assert difference > 1e-9 * np.max(np.abs(full["cell"]["W_x"])), difference


def test_online_updates_apply_between_windows(x64):
    params, xs, labels, _ = random_problem(3, "gru", 2, 6, 2, 3, 2, many_to_many=True)
    seen = []

    def update(q, loss, grads):
        seen.append(q)
        return jax.tree.map(lambda a, g: a - 0.1 * g, q, grads)

    final_params, results, _ = run_windows(params, xs, labels, "gru", k1=2, update=update)
    assert len(seen) == 3
    assert not np.allclose(seen[1]["cell"]["W_h"], seen[0]["cell"]["W_h"])
    assert not np.allclose(final_params["cell"]["W_h"], params["cell"]["W_h"])


def test_model_windows_covering_the_sequence_are_full_bptt(x64):
    # A 2-layer (mixed cells) token model: k1 = T with k2 >= T is the full explicit BPTT, and the
    # chunked scheme carries every layer's state across windows.
    spec = p1.ModelSpec([p1.LayerSpec("lstm", 3), p1.LayerSpec("gru", 2)], 3, vocab_size=5, embed_size=2,
                        many_to_many=True)
    params, ids, labels, _ = random_model(0, spec, 2, 6)
    _, results, finals = run_windows(params, ids, labels, spec, k1=6, k2=10)
    (_, loss, grads), = results
    full_loss, full_grads = p1.model_bptt(params, ids, labels, spec)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-12)
    assert_trees_close(grads, full_grads, rtol=1e-10, atol=1e-14)
    _, chunks, chunk_finals = run_windows(params, ids, labels, spec, k1=2)
    assert len(chunks) == 3
    for got, want in zip(jax.tree.leaves(chunk_finals), jax.tree.leaves(finals)):
        np.testing.assert_allclose(got, want, rtol=1e-12)  # the same forward, window by window


def test_model_windows_refuse_bidirectional_layers():
    spec = p1.ModelSpec([p1.LayerSpec("gru", 2, True)], 2, input_size=1, many_to_many=True)
    params = p1.init_model(jax.random.key(0), spec)
    with pytest.raises(ValueError, match="cell: truncated BPTT needs unidirectional layers"):
        run_windows(params, jnp.zeros((1, 4, 1)), jnp.zeros((1, 4), jnp.int32), spec, k1=2)
