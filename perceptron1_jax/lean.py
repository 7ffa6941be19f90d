"""Memory-lean explicit BPTT for one direction: checkpoint the carry every ``k`` steps, recompute
each segment in the backward pass.

Gruslys et al. (2016) style. :func:`lean_forward` keeps only the carry at the start of each of the
``n = ceil(T / k)`` segments (and the layer's outputs, which the next layer or the head reads
anyway). :func:`lean_backward` walks the segments in reverse; for each it recomputes the segment's
forward from its checkpoint (keeping that segment's carries and residuals), runs the same reverse
scan as the full explicit BPTT (:func:`perceptron1_jax.scan.backward_scan`) from the gradient
arriving from the later segments, and adds the segment's weight-gradient matmuls.

Memory: ``n`` checkpoints plus one segment of residuals, ``O((T/k + k) B H)`` instead of the full
mode's ``O(T B G H)`` residuals; ``k ~ sqrt(T)`` gives ``O(sqrt(T) B H)``. Time: one extra forward
pass. A time axis that ``k`` does not divide is padded at the end with steps marked invalid (the
state is held, nothing is scored), so the gradients are those of the unpadded problem.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax.cells import Carry, Cell, Params
from perceptron1_jax.scan import WINDOW, Backward, backward_scan, scan_forward, zero_grads

Array = jax.Array


def default_segment(time: int) -> int:
    """``k ~ sqrt(T)``: balances the checkpoints against one segment's residuals."""
    return max(1, int(round(time**0.5)))


class LeanTape(NamedTuple):
    """What the lean forward keeps for the backward pass."""

    seg_xs: Array  # (n_seg, k, B, I): the inputs, padded to n_seg * k steps
    seg_valid: Array | None  # (n_seg, k, B) bool, None when every step is valid
    starts: Carry  # (n_seg, B, H) per leaf: the carry entering each segment
    time: int  # the unpadded number of steps
    seg_resets: Array | None = None  # (n_seg, k, B) bool: the steps that read the zero carry, or None


def _segments(a_tm: Array, segment: int, pad: int, fill=0):
    a = jnp.pad(a_tm, ((0, pad),) + ((0, 0),) * (a_tm.ndim - 1), constant_values=fill)
    return a.reshape((-1, segment) + a.shape[1:])


def lean_forward(cell: Cell, cell_params: Params, xs_tm: Array, carry0: Carry, mask_tm: Array | None,
                 segment: int, resets_tm: Array | None = None, *,
                 hoist: bool | None = None) -> tuple[Array, Carry, LeanTape]:
    """Forward over ``xs_tm: (T, B, I)`` in segments of ``segment`` steps (``resets_tm: (T, B)`` the
    steps that read the zero carry, or None; ``hoist`` as :func:`~perceptron1_jax.scan.scan_forward`'s).

    Returns ``(hs_tm, final, tape)``: ``hs_tm: (T, B, H)`` the state after every step (dead code
    when nothing reads it), ``final`` the carry after the last step.
    """
    time, batch = xs_tm.shape[:2]
    pad = -time % segment
    seg_xs = _segments(xs_tm, segment, pad)
    if mask_tm is None and pad:
        mask_tm = jnp.ones((time, batch), bool)
    seg_valid = None if mask_tm is None else _segments(mask_tm, segment, pad, fill=False)
    seg_resets = None if resets_tm is None else _segments(resets_tm, segment, pad, fill=False)

    def body(carry, seg):
        x, v, r = seg
        final, hs, _ = scan_forward(cell, cell_params, x, carry, v, r, hoist=hoist)
        return final, (carry, hs[0])

    final, (starts, hs) = lax.scan(body, carry0, (seg_xs, seg_valid, seg_resets))
    hs_tm = hs.reshape((-1,) + hs.shape[2:])[:time]
    return hs_tm, final, LeanTape(seg_xs, seg_valid, starts, time, seg_resets)


def lean_backward(cell: Cell, cell_params: Params, tape: LeanTape, dhs_out_tm: Array | None, final_dcarry: Carry,
                  *, keep_dhs: bool = False, window: int = WINDOW, hoist: bool | None = None) -> Backward:
    """The explicit backward of :func:`lean_forward`: segments in reverse, each recomputed from its
    checkpoint and run through :func:`backward_scan`. Same results as the full mode."""
    n_seg, segment = tape.seg_xs.shape[:2]
    pad = n_seg * segment - tape.time
    seg_dhs = None if dhs_out_tm is None else _segments(dhs_out_tm, segment, pad)

    def body(acc, seg):
        dcarry, grads = acc
        start, x, v, r, dh_out = seg
        final, carries_in, residuals = scan_forward(cell, cell_params, x, start, v, r, stack_entering=True,
                                                    hoist=hoist)
        back = backward_scan(cell, cell_params, x, carries_in, final, residuals, dcarry, dh_out, v, r,
                             keep_dhs=keep_dhs, window=window)
        return (back.dcarry0, jax.tree.map(jnp.add, grads, back.grads)), (back.dxs_tm, back.dhs_tm)

    zeros = zero_grads(cell_params)  # the segments' weight gradients add up as backward_scan's do
    (dcarry0, grads), (dxs, dhs) = lax.scan(
        body, (final_dcarry, zeros), (tape.starts, tape.seg_xs, tape.seg_valid, tape.seg_resets, seg_dhs),
        reverse=True
    )

    def unsegment(a):
        return None if a is None else a.reshape((-1,) + a.shape[2:])[: tape.time]

    return Backward(grads, unsegment(dxs), dcarry0, unsegment(dhs), None, None)

