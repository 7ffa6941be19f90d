"""The classifier as plain functions: parameter init, logits, loss and accuracy.

``params = {"cell": {...}, "readout": {"W": (hidden, classes), "b": (classes,)}}``.
Many-to-one reads the class from the final carry (the last valid step); many-to-many reads a class
at every step. Everything here is plain autodiff: ``jax.grad(loss)`` is the reference that the
explicit backward in :mod:`perceptron1_jax.bptt` is tested against.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from perceptron1_jax import losses, validate
from perceptron1_jax.unroll import _unroll, time_mask

Array = jax.Array


def init_params(key, cell: str, input_size: int, hidden_size: int, num_classes: int, dtype=jnp.float32):
    """Fresh parameters for a ``cell`` network with a softmax readout.

    Defaults: input weights ``W_x`` LeCun normal, recurrent weights ``W_h`` orthogonal per gate
    block (as Flax's recurrent cells), biases zero except the gates that keep the memory: the LSTM
    forget gate and the GRU update gate start at 1; readout ``W`` LeCun normal, ``b`` zero.

    Returns:
      ``{"cell": {...}, "readout": {"W": (hidden_size, num_classes), "b": (num_classes,)}}``.
    """
    spec = validate.get_cell(cell)
    key = validate.check_key(key)
    input_size = validate.check_positive_int("input_size", input_size)
    hidden_size = validate.check_positive_int("hidden_size", hidden_size)
    num_classes = validate.check_positive_int("num_classes", num_classes)
    dtype = validate.check_float_dtype("dtype", dtype)
    k_cell, k_out = jax.random.split(key)
    readout_w = jax.nn.initializers.lecun_normal()(k_out, (hidden_size, num_classes), dtype)
    return {
        "cell": spec.init(k_cell, input_size, hidden_size, dtype),
        "readout": {"W": readout_w, "b": jnp.zeros((num_classes,), dtype)},
    }


def readout(readout_params, hidden: Array) -> Array:
    """Logits ``hidden W + b``: ``(..., hidden) -> (..., classes)``."""
    return hidden @ readout_params["W"] + readout_params["b"]


def _logits_and_mask(cell_name, params, xs, lengths, carry0, many_to_many):
    hs, final = _unroll(cell_name, params["cell"], xs, lengths, carry0)
    if not many_to_many:
        return readout(params["readout"], final[0]), None
    mask = None if lengths is None else time_mask(lengths, xs.shape[1]).T
    return readout(params["readout"], hs), mask


_predict = jax.jit(lambda cell_name, params, xs, lengths, carry0: _logits_and_mask(
    cell_name, params, xs, lengths, carry0, False)[0], static_argnums=0)


@partial(jax.jit, static_argnames=("cell_name", "many_to_many"))
def _loss_and_accuracy(cell_name, params, xs, labels, lengths, carry0, many_to_many):
    logits, mask = _logits_and_mask(cell_name, params, xs, lengths, carry0, many_to_many)
    return losses.cross_entropy(logits, labels, mask), losses.accuracy(logits, labels, mask)


def predict(params, xs, cell: str, lengths=None, h0=None) -> Array:
    """Many-to-one logits ``(batch, classes)``, read at each sequence's last valid step.

    ``xs: (batch, time, input_size)``; ``lengths: (batch,)`` or None; ``h0`` as in :func:`unroll`.
    """
    c = validate.check_inputs(params, xs, cell, lengths=lengths, h0=h0)
    if c.sizes.num_classes is None:
        raise ValueError("params: expected a 'readout' entry to compute logits, got none")
    return _predict(cell, params, c.xs, c.lengths, c.carry0)


def loss(params, xs, labels, cell: str, lengths=None, h0=None) -> Array:
    """Mean softmax cross-entropy of the network (plain autodiff reference).

    Args:
      params: from :func:`init_params`.
      xs: ``(batch, time, input_size)``.
      labels: ints in ``[0, classes)``: ``(batch,)`` many-to-one (mean over the batch) or
        ``(batch, time)`` many-to-many (mean over the valid (sequence, step) pairs).
      cell: ``"elman"``, ``"lstm"`` or ``"gru"``.
      lengths: optional ``(batch,)`` in ``[1, time]``.
      h0: optional initial carry as in :func:`unroll`.

    Returns:
      A scalar of the params' dtype.
    """
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True)
    return _loss_and_accuracy(cell, params, c.xs, c.labels, c.lengths, c.carry0, c.many_to_many)[0]


def accuracy(params, xs, labels, cell: str, lengths=None, h0=None) -> Array:
    """Fraction of correct arg-max predictions, with the label and mask rules of :func:`loss`."""
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True)
    return _loss_and_accuracy(cell, params, c.xs, c.labels, c.lengths, c.carry0, c.many_to_many)[1]
