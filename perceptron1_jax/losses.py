"""The heads' losses, each beside its hand-derived gradient, with an optional validity mask.

* Softmax cross-entropy: ``logits: (..., classes)``, ``labels: (...)`` integer class indices,
  ``mask: (...)`` bool or None. The mean of the per-position losses over the valid positions: over
  the batch for many-to-one, over all valid (sequence, step) pairs for many-to-many (the token
  mean, as PyTorch's ``CrossEntropyLoss`` with ignored padding).
* Mean squared error: ``preds, targets: (..., outputs)``, ``mask: (...)``. The mean over every
  valid element, as ``torch.nn.MSELoss()`` over the valid rows.

:data:`LOSSES` maps a loss name to its ``(value, value_and_grad)`` pair: the value is what the
autodiff reference differentiates, the pair's second function is what the explicit backward uses.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def position_weights(labels: Array, mask: Array | None, dtype) -> Array:
    """Per-position weight ``mask / count`` (or ``1 / count``), so the loss is a weighted sum. The
    count is an integer and the division runs in at least float32: in float16 a sum past 65,504
    valid positions would overflow to inf and zero every weight."""
    if mask is None:
        return jnp.full(labels.shape, 1.0 / labels.size, dtype)
    wide = dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32
    count = jnp.sum(mask, dtype=jnp.int32).astype(wide)
    return (mask.astype(wide) / count).astype(dtype)


def cross_entropy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Mean softmax cross-entropy ``-log softmax(logits)[label]`` over valid positions.

    Uses ``log_softmax`` (``logits - logsumexp``), so logits of magnitude 1e4 give finite values.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(position_weights(labels, mask, logits.dtype) * picked)


def cross_entropy_with_grad(logits: Array, labels: Array, mask: Array | None = None) -> tuple[Array, Array]:
    """The loss of :func:`cross_entropy` and its hand-derived gradient.

    ``dL/dlogits = w * (softmax(logits) - onehot(labels))`` with ``w`` the per-position weight
    (``1/count`` on valid positions, 0 on padding). Shape of the gradient: that of ``logits``.
    """
    return weighted_cross_entropy_with_grad(logits, labels, position_weights(labels, mask, logits.dtype))


def weighted_cross_entropy_with_grad(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """``sum(weights * -log softmax(logits)[label])`` and its gradient ``weights * (softmax - onehot)``.

    ``weights: (...)`` per position. The lean mode scores one segment at a time with the weights of
    the whole sequence (``1/count`` over all valid steps), so its segment losses add up to the loss.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
    dlogits = weights[..., None] * (jnp.exp(log_probs) - onehot)
    return -jnp.sum(weights * picked), dlogits


def accuracy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Fraction of valid positions whose arg-max logit equals the label: counted in integers and
    divided once, so it is exactly 1 when every position is right and never above."""
    correct = jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels
    valid = jnp.ones(labels.shape, bool) if mask is None else mask.astype(bool)
    right = jnp.sum(correct & valid, dtype=jnp.int32).astype(logits.dtype)
    return right / jnp.sum(valid, dtype=jnp.int32).astype(logits.dtype)


def mean_squared_error(preds: Array, targets: Array, mask: Array | None = None) -> Array:
    """Mean of ``(preds - targets)^2`` over every valid element (``mask`` marks valid rows)."""
    return mean_squared_error_with_grad(preds, targets, mask)[0]


def mean_squared_error_with_grad(preds: Array, targets: Array, mask: Array | None = None) -> tuple[Array, Array]:
    """The loss of :func:`mean_squared_error` and its gradient ``2 w (preds - targets)``, with
    ``w = 1 / (valid rows * outputs)`` on valid rows and 0 on padding."""
    return weighted_squared_error_with_grad(preds, targets, position_weights(preds[..., 0], mask, preds.dtype))


def weighted_squared_error_with_grad(preds: Array, targets: Array, weights: Array) -> tuple[Array, Array]:
    """``sum(weights * mean over outputs of (preds - targets)^2)`` and its gradient ``2 w (preds -
    targets)`` with ``w = weights / outputs``; ``weights: (...)`` per row (the online gradients
    score one step at a time with the weights of the whole sequence)."""
    diff = preds - targets
    weighted = (weights / preds.shape[-1])[..., None] * diff
    return jnp.sum(weighted * diff), 2.0 * weighted


LOSSES = {
    "cross_entropy": (cross_entropy, cross_entropy_with_grad),
    "mse": (mean_squared_error, mean_squared_error_with_grad),
}
# Each head's loss of given per-position weights and its gradient (a step or a segment at a time).
WEIGHTED = {"cross_entropy": weighted_cross_entropy_with_grad, "mse": weighted_squared_error_with_grad}
