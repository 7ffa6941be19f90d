"""Gradient-flow profiles against independent oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_problem

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS, project_inputs
from perceptron1_jax.diagnostics import decay_rate, gradient_flow, set_spectral_radius
from perceptron1_jax.losses import cross_entropy
from perceptron1_jax.model import readout


def _loss_with_per_step_recurrent_weights(w_hs, cell, params, xs, labels):
    """Step t uses its own copy W_h[t]; the gradient w.r.t. W_h[t] is step t's term of dL/dW_h."""
    spec = CELLS[cell]
    carry = tuple(jnp.zeros((xs.shape[0], w_hs.shape[1]), xs.dtype) for _ in range(spec.carry_size))
    for t in range(xs.shape[1]):
        step_params = {**params["cell"], "W_h": w_hs[t]}
        carry, _ = spec.step(step_params, carry, project_inputs(spec, step_params, xs[:, t]))
    return cross_entropy(readout(params["readout"], carry[0]), labels)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_profiles_equal_oracles(x64, cell):
    params, xs, labels, _ = random_problem(0, cell, 3, 7, 2, 4, 3)
    flow = gradient_flow(params, xs, labels, cell)
    _, _, extras = p1.bptt(params, xs, labels, cell, return_extras=True)
    np.testing.assert_allclose(flow.dh_norm, np.linalg.norm(np.asarray(extras.dhs), axis=(0, 2)), rtol=1e-12)
    if "W_h" not in params["cell"]:  # minGRU, minLSTM: no recurrent matrix, no contribution to learn it
        np.testing.assert_array_equal(flow.recurrent_contribution, 0.0)
        np.testing.assert_allclose(flow.loss, p1.loss(params, xs, labels, cell), rtol=1e-12)
        return
    w_hs = jnp.stack([params["cell"]["W_h"]] * 7)
    per_step = jax.grad(_loss_with_per_step_recurrent_weights)(w_hs, cell, params, xs, labels)
    np.testing.assert_allclose(flow.recurrent_contribution, np.linalg.norm(np.asarray(per_step), axis=(1, 2)),
                               rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(flow.loss, p1.loss(params, xs, labels, cell), rtol=1e-12)


def test_spectral_radius_and_decay_rate(x64):
    params, xs, labels, _ = random_problem(1, "elman", 8, 30, 3, 16, 3)
    for radius in (0.5, 1.7):
        scaled = set_spectral_radius(params, radius)
        eig = np.linalg.eigvals(np.asarray(scaled["cell"]["W_h"]))
        np.testing.assert_allclose(np.max(np.abs(eig)), radius, rtol=1e-10)
    small = gradient_flow(set_spectral_radius(params, 0.5), xs, labels, "elman")
    assert decay_rate(small.dh_norm) < 0.6  # the tanh derivative only shrinks it further
    assert decay_rate(0.9 ** np.arange(20)[::-1]) == pytest.approx(0.9)
    assert decay_rate(1.1 ** np.arange(20)[::-1]) == pytest.approx(1.1)
    with pytest.raises(ValueError, match="radius: expected a positive spectral radius, got 0"):
        set_spectral_radius(params, 0)
