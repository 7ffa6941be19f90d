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
from perceptron1_jax.bptt import explicit_model
from perceptron1_jax.cells import CELLS
from perceptron1_jax.model import as_model_params, forward, from_model_params, single_layer_spec
from perceptron1_jax.scan import carries_after, public_carry, zero_carry
from perceptron1_jax.spec import ModelSpec

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


@partial(jax.jit, static_argnames=("spec", "score_from"))
def _window_value_and_grad(params, xs, labels, spec, carries0, score_from, resets=None):
    loss_mask = None
    if spec.many_to_many:
        steps = jnp.arange(xs.shape[1])
        loss_mask = jnp.broadcast_to(steps[None, :] >= score_from, labels.shape)
    loss, grads, back = explicit_model(params, xs, labels, spec, None, None, carries0, loss_mask=loss_mask,
                                       resets=resets)
    # The carry after every step of every layer: where later windows start.
    after = tuple(carries_after(tapes["fwd"].carries_in, tapes["fwd"].final) for tapes in back.forward.tapes)
    return loss, grads, after


@partial(jax.jit, static_argnames=("spec",))
def _advance(params, xs, spec, carries0, resets=None):
    """Every layer's carry after a plain forward over ``xs`` from ``carries0``."""
    return tuple(finals["fwd"] for finals in forward(params, xs, spec, None, None, carries0, resets=resets).finals)


def _cut(resets, start, stop):
    return None if resets is None else resets[:, start:stop]


def _as_carries0(state):
    return tuple({"fwd": carry} for carry in state)


def run_windows(
    params,
    xs,
    labels,
    cell,
    k1: int,
    k2: int | None = None,
    h0=None,
    update: Callable | None = None,
    *,
    resets=None,
):
    """Run TBPTT(k1, k2) over one batch of sequences.

    Args:
      params, xs, labels, cell, h0: as for :func:`perceptron1_jax.bptt` (no ``lengths``); or
        ``cell`` a :class:`~perceptron1_jax.ModelSpec` of unidirectional layers, with a model's
        params, inputs and targets (``h0`` None: every layer starts from zeros).
      k1: steps forward per update (a divisor of ``time``); ``k2``: steps backpropagated per update
        (``>= k1``, default ``k1``).
      update: ``update(params, loss, grads) -> params`` applied after each window (e.g. an optax
        step: the online scheme); None keeps the params fixed (all windows see the same params).
      resets: ``(batch, time)`` bool or None: segment starts (as :func:`perceptron1_jax.unroll`'s);
        the carry passed into a window is zeroed where its first step is a reset.

    Returns:
      ``(params, results, final_carry)``: the params after the last update, a list of
      ``(window, loss, grads)`` per window that scores at least one label, and the carry after
      the last step (``(batch, hidden)``, or ``(h, c)`` for the LSTM; for a spec a list per layer).
    """
    if isinstance(cell, ModelSpec):
        c = validate.check_model_inputs(params, xs, cell, labels, need_targets=True, resets=resets)
        if any(layer.bidirectional for layer in c.spec.layers):
            raise ValueError("cell: truncated BPTT needs unidirectional layers (a backward direction reads the "
                             "whole future), got a bidirectional layer")
        if h0 is not None:
            raise ValueError("h0: expected None with a ModelSpec (every layer starts from zeros), got an array")
        spec, xs, labels, carry0 = c.spec, c.xs, c.targets, None
        to_model, from_model = (lambda p: p), (lambda p: p)
    else:
        c = validate.check_inputs(params, xs, cell, labels, None, h0, need_labels=True, resets=resets)
        spec, xs, labels, carry0 = single_layer_spec(cell, c.sizes, c.many_to_many), c.xs, c.labels, c.carry0
        to_model, from_model = as_model_params, from_model_params
    batch, time = xs.shape[:2]
    plan = windows(time, k1, k2, many_to_one=not spec.many_to_many)
    dtype = to_model(params)["head"]["W"].dtype
    start_state = tuple(
        carry0 if k == 0 and carry0 is not None else zero_carry(CELLS[layer.cell], batch, layer.hidden_size, dtype)
        for k, layer in enumerate(spec.layers)
    )
    states = {0: start_state}  # every layer's carry at each step boundary that a later window starts from
    results = []
    for window in plan:
        if window.start not in states:  # first window of a many-to-one plan: forward only
            start = max(s for s in states if s <= window.start)
            states[window.start] = _advance(to_model(params), xs[:, start : window.start], spec,
                                            _as_carries0(states[start]), _cut(c.resets, start, window.start))
        ys = labels[:, window.start : window.end] if spec.many_to_many else labels
        loss, grads, after = _window_value_and_grad(
            to_model(params), xs[:, window.start : window.end], ys, spec, _as_carries0(states[window.start]),
            window.score_from - window.start, _cut(c.resets, window.start, window.end),
        )
        for step in range(window.start + 1, window.end + 1):
            states[step] = tuple(tuple(leaf[step - window.start - 1] for leaf in layer) for layer in after)
        grads = from_model(grads)
        results.append((window, loss, grads))
        if update is not None:
            params = update(params, loss, grads)
    finals = [public_carry(CELLS[layer.cell], carry) for layer, carry in zip(spec.layers, states[time])]
    return params, results, finals if isinstance(cell, ModelSpec) else finals[0]
