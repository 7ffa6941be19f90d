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
import numpy as np

from perceptron1_jax import validate
from perceptron1_jax.bptt import explicit_model
from perceptron1_jax.cells import CELLS
from perceptron1_jax.model import as_model_params, single_carries0, single_layer_spec
from perceptron1_jax.scan import reset_rows, reverse_in_time
from perceptron1_jax.spec import ModelSpec

Array = jax.Array


class GradientFlow(NamedTuple):
    loss: Array  # scalar
    dh_norm: Array  # (time,): ||dL/dh_t||
    recurrent_contribution: Array  # (time,): ||h_{t-1}^T dZh_t||


@partial(jax.jit, static_argnames=("spec",))
def _model_gradient_flow(params, xs, targets, spec, lengths, carries0=None, resets=None):
    loss, _, back = explicit_model(params, xs, targets, spec, lengths, None, carries0, keep_dhs=True, keep_dz=True,
                                   resets=resets)
    flows = []
    for layer, tapes, backs in zip(spec.layers, back.forward.tapes, back.backs):
        per_direction = {}
        for d in layer.directions:
            b = backs[d]
            h_prev = reset_rows(tapes[d].carries_in[0], tapes[d].resets_tm)  # read by each step, own time order
            if d == "bwd":
                h_prev = reverse_in_time(h_prev, lengths)
            per_direction[d] = GradientFlow(loss, jnp.sqrt(jnp.sum(b.dhs_tm**2, axis=(1, 2))),
                                            _recurrent_contribution(CELLS[layer.cell], h_prev, b))
        flows.append(per_direction)
    return flows


def _recurrent_contribution(cell, h_prev, back) -> Array:
    """``||h_{t-1}^T dZh_t||`` per step; NaN for a user cell (no ``W_h``: its parameters are not
    split into input and recurrent weights)."""
    if not cell.projects:
        return jnp.full(h_prev.shape[:1], jnp.nan, h_prev.dtype)
    per_step = jnp.einsum("tbh,tbg->thg", h_prev, cell.full_dzh(back.dzx_tm, back.dzh_part_tm))
    return jnp.sqrt(jnp.sum(per_step**2, axis=(1, 2)))


def model_gradient_flow(params, xs, targets, spec: ModelSpec, lengths=None, *, resets=None) -> list:
    """Gradient-flow profiles of every layer and direction from one explicit backward pass.

    Arguments as :func:`perceptron1_jax.model_bptt`. Returns a list over layers of
    ``{direction: GradientFlow}``, each profile ``(time,)`` in the original time order.
    """
    c = validate.check_model_inputs(params, xs, spec, targets, lengths, need_targets=True, resets=resets)
    return _model_gradient_flow(params, c.xs, c.targets, c.spec, c.lengths, None, c.resets)


def gradient_flow(params, xs, labels, cell, lengths=None, h0=None, *, resets=None):
    """Gradient-flow profiles of one explicit backward pass (arguments as :func:`bptt`).

    ``cell`` may also be a :class:`~perceptron1_jax.ModelSpec` (then ``params`` are a model's and
    the result is :func:`model_gradient_flow`'s list per layer and direction).

    Returns:
      :class:`GradientFlow` with ``dh_norm`` and ``recurrent_contribution``, each ``(time,)``.
    """
    if isinstance(cell, ModelSpec):
        if h0 is not None:
            raise ValueError("h0: expected None with a ModelSpec (models start from zero states), got an array")
        return model_gradient_flow(params, xs, labels, cell, lengths, resets=resets)
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True, resets=resets)
    spec = single_layer_spec(cell, c.sizes, c.many_to_many)
    flows = _model_gradient_flow(as_model_params(params), c.xs, c.labels, spec, c.lengths, single_carries0(c.carry0),
                                 c.resets)
    return flows[0]["fwd"]


def max_relative_error(ours, reference) -> float:
    """Largest ``max|a - b| / max|b|`` over the leaves of two pytrees (leaves of ``reference``
    that are all zero are skipped): the figure our gradient checks report."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)  # in numpy: no program per leaf shape
        scale = float(np.max(np.abs(b)))
        if scale > 0:
            worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def decay_rate(dh_norm, last: int | None = None) -> float:
    """Geometric rate ``r`` of ``||dL/dh_t|| ~ r^(T-t)`` fitted (least squares on the log) over the
    steps before the read-out: ``r < 1`` vanishing, ``r > 1`` exploding."""
    norms = np.asarray(dh_norm, np.float64)
    last = norms.size if last is None else last
    lags = np.arange(last)[::-1]
    keep = norms[:last] > 0
    if keep.sum() < 2:
        return float("nan")
    slope = np.polyfit(lags[keep], np.log(norms[:last][keep]), 1)[0]
    return float(np.exp(slope))


def set_spectral_radius(params, radius: float):
    """Params whose recurrent matrices ``W_h`` (each gate block, every layer and direction) are
    rescaled to spectral radius ``radius`` (largest eigenvalue modulus). Single-layer or model
    params. For the Elman cell, radius < 1 makes the linearized recurrence contract (gradients
    vanish) and radius > 1 lets them explode (Pascanu et al. 2013)."""
    if not radius > 0:
        raise ValueError(f"radius: expected a positive spectral radius, got {radius}")

    def rescale(cell_params):
        if "W_h" not in cell_params:
            raise ValueError("params: expected cells with a recurrent matrix W_h (elman, lstm, gru), got one "
                             f"without (keys {sorted(cell_params)}: minGRU or minLSTM, an elementwise recurrence)")
        w_h = np.asarray(cell_params["W_h"], np.float64)
        hidden = w_h.shape[0]
        blocks = []
        for k in range(w_h.shape[1] // hidden):
            block = w_h[:, k * hidden : (k + 1) * hidden]
            blocks.append(block * (radius / np.max(np.abs(np.linalg.eigvals(block)))))
        return {**cell_params, "W_h": jnp.asarray(np.concatenate(blocks, axis=1), cell_params["W_h"].dtype)}

    if "layers" in params:
        layers = [{d: rescale(p) for d, p in layer.items()} for layer in params["layers"]]
        return {**params, "layers": layers}
    return {**params, "cell": rescale(params["cell"])}
