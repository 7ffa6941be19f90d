"""Gradient flow through time, from one explicit backward pass.

BPTT's known weakness is that ``dL/dh_t`` is a product of per-step Jacobians, so its size changes
geometrically with the distance to the steps where the loss is read. The explicit backward pass
already produces ``dL/dh_t`` for every step; this module turns it into two profiles:

* ``dh_norm[t] = ||dL/dh_t||`` (Frobenius norm over batch and hidden units): the gradient-flow
  profile (Pascanu, Mikolov & Bengio 2013 plot the same quantity).
* ``recurrent_contribution[t] = ||h_{t-1}^T dZh_t||``: the size of step t's term in
  ``dL/dW_h = sum_t h_{t-1}^T dZh_t``, i.e. how much each step contributes to learning the
  recurrent weights.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from perceptron1_jax import validate
from perceptron1_jax.bptt import explicit_value_and_grad
from perceptron1_jax.unroll import zero_carry

Array = jax.Array


class GradientFlow(NamedTuple):
    loss: Array  # scalar
    dh_norm: Array  # (time,): ||dL/dh_t||
    recurrent_contribution: Array  # (time,): ||h_{t-1}^T dZh_t||


@partial(jax.jit, static_argnames=("cell_name", "many_to_many"))
def _gradient_flow(cell_name, params, xs, labels, lengths, carry0, many_to_many):
    if carry0 is None:
        carry0 = zero_carry(validate.get_cell(cell_name), xs.shape[0], params["cell"]["W_h"].shape[0], xs.dtype)
    loss, _, aux = explicit_value_and_grad(
        cell_name, params, xs, labels, lengths, carry0, many_to_many=many_to_many, keep_dhs=True, keep_dz=True
    )
    dh_norm = jnp.sqrt(jnp.sum(aux.dhs_tm**2, axis=(1, 2)))
    h_prev = aux.carries_in[0]  # (T, B, H)
    dzh = validate.get_cell(cell_name).full_dzh(aux.dzx_tm, aux.dzh_part_tm)
    per_step = jnp.einsum("tbh,tbg->thg", h_prev, dzh)
    return GradientFlow(loss, dh_norm, jnp.sqrt(jnp.sum(per_step**2, axis=(1, 2))))


def gradient_flow(params, xs, labels, cell: str, lengths=None, h0=None) -> GradientFlow:
    """Gradient-flow profiles of one explicit backward pass (arguments as :func:`bptt`).

    Returns:
      :class:`GradientFlow` with ``dh_norm`` and ``recurrent_contribution``, each ``(time,)``.
    """
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True)
    return _gradient_flow(cell, params, c.xs, c.labels, c.lengths, c.carry0, c.many_to_many)


def max_relative_error(ours, reference) -> float:
    """Largest ``max|a - b| / max|b|`` over the leaves of two pytrees (leaves of ``reference``
    that are all zero are skipped): the figure our gradient checks report."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        scale = float(jnp.max(jnp.abs(b)))
        if scale > 0:
            worst = max(worst, float(jnp.max(jnp.abs(a - b))) / scale)
    return worst


def decay_rate(dh_norm, last: int | None = None) -> float:
    """Geometric rate ``r`` of ``||dL/dh_t|| ~ r^(T-t)`` fitted (least squares on the log) over the
    steps before the read-out: ``r < 1`` vanishing, ``r > 1`` exploding."""
    import numpy as np

    norms = np.asarray(dh_norm, np.float64)
    last = norms.size if last is None else last
    lags = np.arange(last)[::-1]
    keep = norms[:last] > 0
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(lags[keep], np.log(norms[:last][keep]), 1)[0]
    return float(np.exp(slope))


def set_spectral_radius(params, radius: float):
    """Params whose recurrent matrix ``W_h`` (each gate block) is rescaled to spectral radius
    ``radius`` (largest eigenvalue modulus). For the Elman cell, radius < 1 makes the linearized
    recurrence contract (gradients vanish) and radius > 1 lets them explode (Pascanu et al. 2013)."""
    import numpy as np

    if not radius > 0:
        raise ValueError(f"radius: expected a positive spectral radius, got {radius}")
    w_h = np.asarray(params["cell"]["W_h"], np.float64)
    hidden = w_h.shape[0]
    blocks = []
    for k in range(w_h.shape[1] // hidden):
        block = w_h[:, k * hidden : (k + 1) * hidden]
        blocks.append(block * (radius / np.max(np.abs(np.linalg.eigvals(block)))))
    new_w = jnp.asarray(np.concatenate(blocks, axis=1), params["cell"]["W_h"].dtype)
    return {**params, "cell": {**params["cell"], "W_h": new_w}}
