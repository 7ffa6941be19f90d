"""Memory-lean explicit BPTT: checkpoint the carry every ``k`` steps, recompute segments backwards.

Gruslys et al. (2016) style. The forward pass keeps only the carry at the start of each of the
``n = ceil(T / k)`` segments. The backward pass walks the segments in reverse; for each it
recomputes the segment's forward from its checkpoint (keeping that segment's carries and
residuals), runs the same reverse scan as the full explicit BPTT (:func:`backward_scan`) from the
gradient arriving from the later segments, and adds the segment's weight-gradient matmuls.

Memory: ``n`` checkpoints plus one segment of residuals, ``O((T/k + k) B H)`` instead of
``O(T B H)``; ``k ~ sqrt(T)`` gives ``O(sqrt(T) B H)``. Time: one extra forward pass.
A time axis that ``k`` does not divide is padded at the end with steps marked invalid (the state
is held, nothing is scored), so the gradients are those of the unpadded problem.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax import losses
from perceptron1_jax.bptt import backward_scan
from perceptron1_jax.cells import CELLS
from perceptron1_jax.model import readout
from perceptron1_jax.unroll import carries_after, scan_forward, time_mask, zero_carry


def default_segment(time: int) -> int:
    """``k ~ sqrt(T)``: balances the checkpoints against one segment's residuals."""
    return max(1, int(round(time**0.5)))


@partial(jax.jit, static_argnames=("cell_name", "many_to_many", "segment", "keep_dhs"))
def lean_value_and_grad(cell_name, params, xs, labels, lengths, carry0, *, many_to_many, segment, keep_dhs=False):
    """Same results as :func:`perceptron1_jax.bptt.explicit_value_and_grad` with ``O(sqrt T)``
    memory. Returns ``(loss, grads, dxs, dhs_or_None, dcarry0)`` (``dxs``/``dhs`` batch-major)."""
    cell = CELLS[cell_name]
    cell_params, readout_params = params["cell"], params["readout"]
    batch, time, _ = xs.shape
    hidden = cell_params["W_h"].shape[0]
    dtype = xs.dtype
    if carry0 is None:
        carry0 = zero_carry(cell, batch, hidden, dtype)
    n_seg = -(-time // segment)
    padded = n_seg * segment
    valid = time_mask(lengths, time)
    if valid is None:
        valid = jnp.ones((time, batch), bool)
    pad = padded - time
    xs_tm = jnp.pad(jnp.swapaxes(xs, 0, 1), ((0, pad), (0, 0), (0, 0)))
    valid = jnp.pad(valid, ((0, pad), (0, 0)))  # padded steps hold the state
    seg_xs = xs_tm.reshape(n_seg, segment, batch, -1)
    seg_valid = valid.reshape(n_seg, segment, batch)
    needs_mask = lengths is not None or pad > 0

    if many_to_many:
        labels_tm = jnp.pad(labels.T, ((0, pad), (0, 0)))
        seg_labels = labels_tm.reshape(n_seg, segment, batch)
        weight = 1.0 / jnp.sum(valid.astype(dtype))
    else:
        seg_labels = jnp.zeros((n_seg, segment, batch), jnp.int32)  # unused

    def segment_forward(carry, seg):
        x, v = seg[0], seg[1]
        return scan_forward(cell, cell_params, x, carry, v if needs_mask else None, stack_entering=True)

    # Forward: keep only each segment's starting carry.
    def forward_body(carry, seg):
        final, _, _ = segment_forward(carry, seg)
        return final, carry

    final, starts = lax.scan(forward_body, carry0, (seg_xs, seg_valid))

    w_out = readout_params["W"]
    readout_grads = {"W": jnp.zeros_like(w_out), "b": jnp.zeros_like(readout_params["b"])}
    loss = jnp.zeros((), dtype)
    if many_to_many:  # scored segment by segment in the backward pass
        final_dcarry = tuple(jnp.zeros_like(c) for c in final)
    else:
        logits = readout(readout_params, final[0])
        loss, dlogits = losses.cross_entropy_with_grad(logits, labels)
        readout_grads = {"W": final[0].T @ dlogits, "b": jnp.sum(dlogits, axis=0)}
        final_dcarry = (dlogits @ w_out.T,) + tuple(jnp.zeros_like(c) for c in final[1:])

    zeros_cell = jax.tree.map(jnp.zeros_like, cell_params)

    # Backward: segments in reverse, each recomputed from its checkpoint.
    def backward_body(acc, seg):
        dcarry, cell_acc, readout_acc, loss = acc
        start, x, v, y = seg
        seg_final, carries_in, residuals = segment_forward(start, (x, v))
        dhs_out = None
        if many_to_many:
            hs = carries_after(carries_in[:1], seg_final[:1])[0]
            seg_loss, dlogits = losses.weighted_cross_entropy_with_grad(
                readout(readout_params, hs), y, jnp.where(v, weight, 0.0)
            )
            loss = loss + seg_loss
            readout_acc = {"W": readout_acc["W"] + jnp.einsum("tbh,tbc->hc", hs, dlogits),
                           "b": readout_acc["b"] + jnp.sum(dlogits, axis=(0, 1))}
            dhs_out = dlogits @ w_out.T
        back = backward_scan(
            cell, cell_params, x, carries_in, seg_final, residuals, dcarry, dhs_out, v if needs_mask else None,
            keep_dhs=keep_dhs,
        )
        cell_acc = jax.tree.map(jnp.add, cell_acc, back.grads)
        return (back.dcarry0, cell_acc, readout_acc, loss), (back.dxs_tm, back.dhs_tm)

    (dcarry0, cell_grads, readout_grads, loss), (dxs, dhs) = lax.scan(
        backward_body, (final_dcarry, zeros_cell, readout_grads, loss), (starts, seg_xs, seg_valid, seg_labels),
        reverse=True,
    )
    grads = {"cell": cell_grads, "readout": readout_grads}
    dxs = jnp.swapaxes(dxs.reshape(padded, batch, -1)[:time], 0, 1)
    if keep_dhs:
        dhs = jnp.swapaxes(dhs.reshape(padded, batch, hidden)[:time], 0, 1)
    return loss, grads, dxs, dhs, dcarry0
