"""Numerically stable softmax cross-entropy and accuracy, with an optional validity mask.

``logits: (..., classes)``, ``labels: (...)`` integer class indices, ``mask: (...)`` bool or None.
The loss is the mean of the per-position losses over the valid positions: over the batch for
many-to-one, over all valid (sequence, step) pairs for many-to-many (the token mean, as PyTorch's
``CrossEntropyLoss`` with ignored padding).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def _weights(labels: Array, mask: Array | None, dtype) -> Array:
    """Per-position weight ``mask / count`` (or ``1 / count``), so the loss is a weighted sum."""
    if mask is None:
        return jnp.full(labels.shape, 1.0 / labels.size, dtype)
    mask = mask.astype(dtype)
    return mask / jnp.sum(mask)


def cross_entropy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Mean softmax cross-entropy ``-log softmax(logits)[label]`` over valid positions.

    Uses ``log_softmax`` (``logits - logsumexp``), so logits of magnitude 1e4 give finite values.
    """
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    return -jnp.sum(_weights(labels, mask, logits.dtype) * picked)


def cross_entropy_with_grad(logits: Array, labels: Array, mask: Array | None = None) -> tuple[Array, Array]:
    """The loss of :func:`cross_entropy` and its hand-derived gradient.

    ``dL/dlogits = w * (softmax(logits) - onehot(labels))`` with ``w`` the per-position weight
    (``1/count`` on valid positions, 0 on padding). Shape of the gradient: that of ``logits``.
    """
    return weighted_cross_entropy_with_grad(logits, labels, _weights(labels, mask, logits.dtype))


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
    """Fraction of valid positions whose arg-max logit equals the label."""
    correct = (jnp.argmax(logits, axis=-1).astype(labels.dtype) == labels).astype(logits.dtype)
    return jnp.sum(_weights(labels, mask, logits.dtype) * correct)
