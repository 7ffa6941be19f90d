"""Truncated BPTT, the k1/k2 scheme of Williams & Peng (1990).

Walk a batch of sequences ``xs: (batch, time, input)`` forward ``k1`` steps per update; each
update backpropagates ``k2 >= k1`` steps. Update ``j`` ends at ``e_j = j*k1`` (``j = 1..time/k1``),
runs the explicit BPTT over the window ``[max(0, e_j - k2), e_j)`` starting from the carried state
at the window start, which is a constant (the gradient is stopped at the window border), and
scores the labels of the last ``k1`` steps ``[e_j - k1, e_j)`` (many-to-many: their token mean).
For many-to-one labels (one class read after the last step) there is one update per sequence
(``k1 = time``) and ``k2`` may be anything: the gradient of the final loss flows back ``k2`` steps.

Two limits check the implementation: ``k1 = time, k2 >= time`` is full BPTT; ``k1 = k2 = k`` is
the common "chunked" truncation (state carried across chunks of ``k`` steps, gradient stopped
at every chunk border).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from perceptron1_jax import validate
from perceptron1_jax.bptt import explicit_value_and_grad
from perceptron1_jax.scan import carries_after, public_carry, zero_carry
from perceptron1_jax.unroll import _unroll

Array = jax.Array


class Window(NamedTuple):
    start: int  # first step of the unrolled window (the gradient stops at its initial state)
    score_from: int  # first scored step (end - k1)
    end: int  # one past the last step


def windows(time: int, k1: int, k2: int | None = None, many_to_one: bool = False) -> list[Window]:
    """The update windows of TBPTT(k1, k2) over ``time`` steps (``k2`` defaults to ``k1``)."""
    k1 = validate.check_positive_int("k1", k1)
    k2 = k1 if k2 is None else validate.check_positive_int("k2", k2)
    if many_to_one:
        if k1 != time:
            raise ValueError(
                f"k1: expected k1 = time = {time} for many-to-one labels (only the last step is scored), got {k1}"
            )
        return [Window(max(0, time - k2), time - 1, time)]
    if k2 < k1:
        raise ValueError(f"k2: expected k2 >= k1 = {k1} (each update backpropagates at least k1 steps), got {k2}")
    if time % k1:
        raise ValueError(f"k1: expected a divisor of the sequence length {time}, got {k1}")
    return [Window(max(0, end - k2), end - k1, end) for end in range(k1, time + 1, k1)]


@partial(jax.jit, static_argnames=("cell_name", "many_to_many", "score_from"))
def _window_value_and_grad(cell_name, params, xs, labels, carry0, many_to_many, score_from):
    loss_mask = None
    if many_to_many:
        steps = jnp.arange(xs.shape[1])
        loss_mask = jnp.broadcast_to(steps[None, :] >= score_from, labels.shape)
    loss, grads, aux = explicit_value_and_grad(
        cell_name, params, xs, labels, None, carry0, many_to_many=many_to_many, loss_mask=loss_mask
    )
    return loss, grads, carries_after(aux.carries_in, aux.final)


def run_windows(
    params,
    xs,
    labels,
    cell: str,
    k1: int,
    k2: int | None = None,
    h0=None,
    update: Callable | None = None,
):
    """Run TBPTT(k1, k2) over one batch of sequences.

    Args:
      params, xs, labels, cell, h0: as for :func:`perceptron1_jax.bptt` (no ``lengths``).
      k1: steps forward per update (a divisor of ``time``); ``k2``: steps backpropagated per update
        (``>= k1``, default ``k1``).
      update: ``update(params, loss, grads) -> params`` applied after each window (e.g. an optax
        step: the online scheme); None keeps the params fixed (all windows see the same params).

    Returns:
      ``(params, results, final_carry)``: the params after the last update, a list of
      ``(window, loss, grads)`` per window that scores at least one label, and the carry after
      the last step (``(batch, hidden)``, or ``(h, c)`` for the LSTM).
    """
    c = validate.check_inputs(params, xs, cell, labels, None, h0, need_labels=True)
    time = c.xs.shape[1]
    plan = windows(time, k1, k2, many_to_one=not c.many_to_many)
    carry0 = c.carry0
    if carry0 is None:
        carry0 = zero_carry(c.cell, c.xs.shape[0], c.sizes.hidden_size, c.sizes.dtype)
    states = {0: carry0}  # carry at each step boundary that a later window starts from
    results = []
    for window in plan:
        if window.start not in states:  # first window of a many-to-one plan: forward only
            states[window.start] = _advance(cell, params, c.xs, states, window.start)
        ys = c.labels[:, window.start : window.end] if c.many_to_many else c.labels
        loss, grads, carries = _window_value_and_grad(
            cell, params, c.xs[:, window.start : window.end], ys, states[window.start],
            c.many_to_many, window.score_from - window.start,
        )
        for step in range(window.start + 1, window.end + 1):
            states[step] = tuple(leaf[step - window.start - 1] for leaf in carries)
        results.append((window, loss, grads))
        if update is not None:
            params = update(params, loss, grads)
    return params, results, public_carry(c.cell, states[time])


def _advance(cell, params, xs, states, target):
    """Carry at step ``target`` by a plain forward from the latest known earlier state."""
    start = max(s for s in states if s <= target)
    if start == target:
        return states[start]
    _, final = _unroll(cell, params["cell"], xs[:, start:target], None, states[start])
    return final
