"""Explicit, hand-derived Backpropagation Through Time as a reverse ``lax.scan``.

Never calls ``jax.grad``/``jax.vjp``/``jax.linearize``. The algorithm, for any cell:

1. Forward (shared with the plain path, :func:`perceptron1_jax.unroll.scan_forward`): the scan
   keeps the carry *entering* each step (``h_{t-1}``, and ``c_{t-1}`` for the LSTM) and the cell's
   small per-step residuals. (The input projection ``x_t W_x + b_x`` runs inside the loop on CPU
   and as one matmul before it on accelerators: :func:`perceptron1_jax.unroll.hoist_input_projection`.)
2. Readout and loss gradient: ``dL/dlogits = w (softmax - onehot)``; for many-to-one it enters
   the backward as ``dL/dh_T``, for many-to-many as a per-step ``dL/dh_t`` injection
   ``dlogits_t W^T``.
3. Backward: ``lax.scan(reverse=True)`` carrying only ``dL/dh`` (and ``dL/dc``) and the state after
   the step. At step ``t`` the carried gradient plus the step's own output gradient is the total
   ``dL/dh_t``; the cell's ``backward_step`` turns it into the pre-activation gradients ``dZx_t``,
   ``dZh_t`` and the gradient for the previous carry. With ``lengths``, a padded step passes its
   gradient straight to the previous carry (the state was held) and contributes nothing to the
   weights.
4. Weight gradients as matmuls over blocks of ``WINDOW`` steps (``WINDOW * B`` rows), not per step:
   ``dW_x += X^T dZx``, ``dW_h += H_prev^T dZh``, ``db += sum dZ``; ``dL/dX = dZx W_x^T``.

What is kept for all ``T`` steps (per batch row, floats): the entering carries and the cell's
residuals, i.e. Elman ``H``, LSTM ``2H + 4H`` (``h``, ``c``, gates), GRU ``H + 3H + H`` (``h``,
``[r, z, n]``, ``zh_n``); ``dZ`` lives for one block (``WINDOW x G*H``).

Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H`` hidden, ``G`` gate blocks, ``C`` classes.
Inside, arrays are time-major ``(T, B, ...)``; public arrays are batch-major.
"""

from __future__ import annotations

import numbers
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax import losses, validate
from perceptron1_jax.cells import CELLS, Carry, Cell, Params
from perceptron1_jax.model import readout
from perceptron1_jax.unroll import carries_after, public_carry, scan_forward, time_mask, zero_carry

Array = jax.Array


class BPTTExtras(NamedTuple):
    """What ``bptt(..., return_extras=True)`` returns beside the loss and the gradients."""

    dhs: Array  # (batch, time, hidden): total dL/dh_t, the gradient of the loss w.r.t. each h_t
    dxs: Array  # (batch, time, input): dL/dxs
    dh0: object  # dL/d(initial carry): (batch, hidden), or a pair (dh0, dc0) for the LSTM


WINDOW = 8
"""Steps per block of the weight-gradient matmuls in :func:`backward_scan`.

Measured on the 2-core CPU (batch 64, hidden 128, T 32/128/512; ``python benchmarks/benchmark.py
--hidden 128 --time 32 128 512 --windows 8 32 64 --no-flax``): blocks of 8 were as fast as or up to
10% faster than 16 and 32 for every cell, and 64-step blocks or one matmul after the loop were
slower (up to 15%) and kept more memory.
"""


class Backward(NamedTuple):
    """What :func:`backward_scan` returns (time-major)."""

    grads: Params  # gradients of the cell params
    dxs_tm: Array  # (T, B, I) dL/dxs
    dcarry0: Carry  # gradient w.r.t. the initial carry
    dhs_tm: Array | None  # (T, B, H) total dL/dh_t, when keep_dhs
    dzx_tm: Array | None  # (T, B, G*H) input pre-activation gradients, when keep_dz
    dzh_part_tm: Array | None  # the cell's recurrent part of dZh (cell.full_dzh), when keep_dz


def backward_scan(
    cell: Cell,
    cell_params: Params,
    xs_tm: Array,
    carries_in: Carry,
    final_carry: Carry,
    residuals,
    final_dcarry: Carry,
    dhs_out_tm: Array | None,
    mask_tm: Array | None,
    *,
    keep_dhs: bool = False,
    keep_dz: bool = False,
    window: int = WINDOW,
) -> Backward:
    """The reverse-time pass shared by :func:`bptt`, the lean mode and :func:`unroll_bptt`.

    Time runs in blocks of ``window`` steps (the last block takes the remainder). Within a block
    a reverse ``lax.scan`` carries ``dL/dh`` (and ``dL/dc``) and the carry *after* the current
    step, and stacks the block's ``dZx``/``dZh``; after each block its weight gradients are one
    matmul over ``window * B`` rows (``dW_x += X_blk^T dZx_blk``, ``dW_h += H_prev_blk^T dZh_blk``)
    and ``dL/dX_blk = dZx_blk W_x^T``. So the per-step pre-activation gradients live for one block
    only: what the backward keeps for all ``T`` steps is what the forward saved.

    Args:
      xs_tm: ``(T, B, I)`` inputs.
      carries_in: the carry entering each step, ``(T, B, H)`` per leaf
        (``scan_forward(..., stack_entering=True)``); ``final_carry``: the carry after the last
        step; ``residuals``: the cell's saved per-step arrays.
      final_dcarry: gradient w.r.t. the final carry (tuple like ``final_carry``).
      dhs_out_tm: ``(T, B, H)`` gradient flowing into each ``h_t`` from outside the recurrence
        (readout of every step), or None.
      mask_tm: ``(T, B)`` bool validity, or None.
      keep_dhs: also return the total ``dL/dh_t`` of every step; ``keep_dz``: also return the
        stacked ``dZx`` and the cell's recurrent part of ``dZh`` (diagnostics).
    """
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window: expected a positive int (steps per weight-gradient block), got {window!r}")
    time = xs_tm.shape[0]
    block = min(int(window), time)
    n_full, tail = divmod(time, block)
    w_x_t = cell_params["W_x"].T

    def run_block(state, start, length):
        dcarry, after, acc = state

        def take(a):
            return None if a is None else lax.dynamic_slice_in_dim(a, start, length)

        block_in = tuple(take(c) for c in carries_in)

        def step(carry, inputs):
            dcarry, after = carry
            prev_t, residuals_t, dh_out_t, valid_t = inputs
            if dh_out_t is not None:
                dcarry = (dcarry[0] + dh_out_t,) + dcarry[1:]
            dh_total = dcarry[0]
            if valid_t is None:
                dzx, dzh, dprev = cell.backward_step(cell_params, prev_t, after, residuals_t, dcarry)
            else:
                keep = valid_t[:, None]
                into_cell = tuple(jnp.where(keep, d, 0.0) for d in dcarry)
                dzx, dzh, dprev = cell.backward_step(cell_params, prev_t, after, residuals_t, into_cell)
                dprev = tuple(dp + jnp.where(keep, 0.0, d) for dp, d in zip(dprev, dcarry))
            return (dprev, prev_t), (dzx, dzh, dh_total if keep_dhs else None)

        inputs = (block_in, jax.tree.map(take, residuals), take(dhs_out_tm), take(mask_tm))
        (dcarry, after), (dzx, dzh_part, dhs) = lax.scan(step, (dcarry, after), inputs, reverse=True)
        grads = cell.param_grads(take(xs_tm), block_in[0], dzx, dzh_part)
        acc = jax.tree.map(jnp.add, acc, grads)
        kept = (dzx, dzh_part) if keep_dz else (None, None)
        return (dcarry, after, acc), (dzx @ w_x_t, dhs) + kept

    state = (final_dcarry, final_carry, jax.tree.map(jnp.zeros_like, cell_params))
    if tail:  # the remainder block at the end of time comes first in reverse
        state, tail_outs = run_block(state, n_full * block, tail)
    state, outs = lax.scan(lambda s, w: run_block(s, w * block, block), state, jnp.arange(n_full), reverse=True)
    outs = jax.tree.map(lambda a: a.reshape((n_full * block,) + a.shape[2:]), outs)
    if tail:
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, tail_outs)
    dcarry0, _, grads = state
    dxs_tm, dhs_tm, dzx_tm, dzh_part_tm = outs
    return Backward(grads, dxs_tm, dcarry0, dhs_tm, dzx_tm, dzh_part_tm)


class Aux(NamedTuple):
    """Side outputs of :func:`explicit_value_and_grad` (time-major where noted)."""

    logits: Array  # (B, C) many-to-one, (B, T, C) many-to-many
    carries_in: Carry  # every carry leaf entering each step, (T, B, H) each
    final: Carry  # the carry after the last step
    dhs_tm: Array | None  # (T, B, H) total dL/dh_t, when keep_dhs
    dxs_tm: Array  # (T, B, I) dL/dxs
    dcarry0: Carry  # gradient w.r.t. the initial carry
    dzx_tm: Array | None  # (T, B, G*H) input pre-activation gradients (keep_dz): dW_x = sum_t x_t^T dzx_t
    dzh_part_tm: Array | None  # the cell's recurrent part (keep_dz); cell.full_dzh(dzx, part) = dZh


def explicit_value_and_grad(
    cell_name, params, xs, labels, lengths=None, carry0=None, *, many_to_many, keep_dhs=False, keep_dz=False,
    loss_mask=None, window=WINDOW,
):
    """Unchecked, traceable core of :func:`bptt` (call it inside your own jit).

    ``loss_mask: (B, T)`` bool (many-to-many only) restricts which steps are scored, on top of
    ``lengths`` (truncated BPTT scores only the last ``k1`` steps of a window). ``window``: steps
    per weight-gradient block (:func:`backward_scan`).

    Returns:
      ``(loss, grads, aux)`` with ``aux`` an :class:`Aux`.
    """
    cell = CELLS[cell_name]
    cell_params, readout_params = params["cell"], params["readout"]
    batch, time, _ = xs.shape
    hidden = cell_params["W_h"].shape[0]
    if carry0 is None:
        carry0 = zero_carry(cell, batch, hidden, xs.dtype)
    xs_tm = jnp.swapaxes(xs, 0, 1)
    mask_tm = time_mask(lengths, time)
    final, carries_in, residuals = scan_forward(cell, cell_params, xs_tm, carry0, mask_tm, stack_entering=True)

    w_out = readout_params["W"]
    if many_to_many:
        hs_tm = carries_after(carries_in[:1], final[:1])[0]
        logits = readout(readout_params, hs_tm)  # (T, B, C)
        scored = mask_tm
        if loss_mask is not None:
            scored = loss_mask.T if scored is None else scored & loss_mask.T
        loss, dlogits = losses.cross_entropy_with_grad(logits, labels.T, scored)
        readout_grads = {"W": jnp.einsum("tbh,tbc->hc", hs_tm, dlogits), "b": jnp.sum(dlogits, axis=(0, 1))}
        dhs_out_tm = dlogits @ w_out.T
        final_dcarry = tuple(jnp.zeros_like(c) for c in final)
        logits = jnp.swapaxes(logits, 0, 1)
    else:
        h_last = final[0]
        logits = readout(readout_params, h_last)  # (B, C)
        loss, dlogits = losses.cross_entropy_with_grad(logits, labels)
        readout_grads = {"W": h_last.T @ dlogits, "b": jnp.sum(dlogits, axis=0)}
        dhs_out_tm = None
        final_dcarry = (dlogits @ w_out.T,) + tuple(jnp.zeros_like(c) for c in final[1:])

    back = backward_scan(
        cell, cell_params, xs_tm, carries_in, final, residuals, final_dcarry, dhs_out_tm, mask_tm,
        keep_dhs=keep_dhs, keep_dz=keep_dz, window=window,
    )
    grads = {"cell": back.grads, "readout": readout_grads}
    return loss, grads, Aux(
        logits, carries_in, final, back.dhs_tm, back.dxs_tm, back.dcarry0, back.dzx_tm, back.dzh_part_tm
    )


@partial(jax.jit, static_argnames=("cell_name", "many_to_many", "return_extras"))
def _bptt(cell_name, params, xs, labels, lengths, carry0, many_to_many, return_extras):
    loss, grads, aux = explicit_value_and_grad(
        cell_name, params, xs, labels, lengths, carry0, many_to_many=many_to_many, keep_dhs=return_extras
    )
    if not return_extras:
        return loss, grads
    extras = BPTTExtras(
        dhs=jnp.swapaxes(aux.dhs_tm, 0, 1),
        dxs=jnp.swapaxes(aux.dxs_tm, 0, 1),
        dh0=public_carry(CELLS[cell_name], aux.dcarry0),
    )
    return loss, grads, extras


def bptt(params, xs, labels, cell: str, lengths=None, h0=None, *, return_extras: bool = False,
         lean: int | None = None):
    """Loss and gradients by the explicit reverse-scan BPTT (JIT-compiled).

    Same arguments and label rules as :func:`perceptron1_jax.loss`: ``xs: (batch, time, input)``,
    ``labels: (batch,)`` (many-to-one) or ``(batch, time)`` (many-to-many), ``lengths: (batch,)``
    or None, ``h0`` the initial carry or None.

    Args:
      return_extras: if True, also return a :class:`BPTTExtras` with ``dhs`` (the total
        ``dL/dh_t`` for every step, ``(batch, time, hidden)``), ``dxs`` (``dL/dxs``,
        ``(batch, time, input)``) and ``dh0`` (gradient w.r.t. the initial carry).
      lean: segment length ``k`` of the memory-lean mode (:mod:`perceptron1_jax.lean`): keep the
        carry every ``k`` steps and recompute each segment in the backward pass, ``O(T/k + k)``
        memory instead of ``O(T)`` for one extra forward pass; ``k ~ sqrt(time)`` is the usual
        choice. None (default): keep every step.

    Returns:
      ``(loss, grads)``, or ``(loss, grads, extras)``; ``grads`` has the structure of ``params``.
    """
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True)
    if lean is None:
        return _bptt(cell, params, c.xs, c.labels, c.lengths, c.carry0, c.many_to_many, bool(return_extras))
    from perceptron1_jax.lean import lean_value_and_grad

    segment = validate.check_positive_int("lean", lean)
    loss, grads, dxs, dhs, dcarry0 = lean_value_and_grad(
        cell, params, c.xs, c.labels, c.lengths, c.carry0, many_to_many=c.many_to_many, segment=segment,
        keep_dhs=bool(return_extras),
    )
    if not return_extras:
        return loss, grads
    return loss, grads, BPTTExtras(dhs=dhs, dxs=dxs, dh0=public_carry(c.cell, dcarry0))


# --------------------------------------------------------------------------- custom_vjp entry


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _unroll_explicit(cell_name, cell_params, xs, lengths, carry0):
    return _unroll_fwd(cell_name, cell_params, xs, lengths, carry0)[0]


def _unroll_fwd(cell_name, cell_params, xs, lengths, carry0):
    cell = CELLS[cell_name]
    xs_tm = jnp.swapaxes(xs, 0, 1)
    mask_tm = time_mask(lengths, xs.shape[1])
    final, carries_in, residuals = scan_forward(cell, cell_params, xs_tm, carry0, mask_tm, stack_entering=True)
    hs_tm = carries_after(carries_in[:1], final[:1])[0]
    saved = (cell_params, xs_tm, lengths, carries_in, final, residuals)
    return (jnp.swapaxes(hs_tm, 0, 1), final), saved


def _unroll_bwd(cell_name, saved, cotangents):
    cell_params, xs_tm, lengths, carries_in, final, residuals = saved
    d_hs, d_final = cotangents
    back = backward_scan(
        CELLS[cell_name], cell_params, xs_tm, carries_in, final, residuals, tuple(d_final),
        jnp.swapaxes(d_hs, 0, 1), time_mask(lengths, xs_tm.shape[0]),
    )
    return back.grads, jnp.swapaxes(back.dxs_tm, 0, 1), None, back.dcarry0


_unroll_explicit.defvjp(_unroll_fwd, _unroll_bwd)


def unroll_bptt(params, xs, cell: str, lengths=None, h0=None):
    """:func:`perceptron1_jax.unroll` whose gradient is the explicit BPTT (a ``jax.custom_vjp``).

    Same arguments and results as ``unroll``. Differentiating any loss built on its outputs
    (``hs`` and/or the final carry) with ``jax.grad`` runs :func:`backward_scan`, not autodiff
    through the scan; it composes with ``jit``, ``vmap`` and ``grad``. Gradients flow to
    ``params["cell"]``, ``xs`` and ``h0`` (not to ``lengths``).
    """
    c = validate.check_inputs(params, xs, cell, lengths=lengths, h0=h0)
    carry0 = c.carry0
    if carry0 is None:
        carry0 = zero_carry(c.cell, c.xs.shape[0], c.sizes.hidden_size, c.sizes.dtype)
    hs, final = _unroll_explicit(cell, params["cell"], c.xs, c.lengths, carry0)
    return hs, public_carry(c.cell, final)
