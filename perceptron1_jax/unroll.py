"""The plain forward pass of one recurrent cell over time (the autodiff reference of ``unroll_bptt``).

Layout: ``xs: (batch, time, input)`` and ``hs: (batch, time, hidden)``. With ``lengths: (batch,)``
a sequence's state is frozen after its last valid step, so the final carry is the state at the
last valid step. The scan itself lives in :mod:`perceptron1_jax.scan`; ``jax.grad`` differentiates
this path by autodiff, which makes it an independent reference for the explicit backward.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from perceptron1_jax import validate
from perceptron1_jax.layers import direction_forward
from perceptron1_jax.scan import (  # the unroll's input-projection branch, by the name the issues use
    hoist_input_projection,  # noqa: F401
    public_carry,
    resets_time_major,
    set_hoist_input_projection,  # noqa: F401
    time_mask,
    zero_carry,
    zero_padding,
)
from perceptron1_jax.spec import PROCESS_FORMS


@partial(jax.jit, static_argnames=("cell_name", "hidden", "hoist"))
def _unroll(cell_name: str, cell_params, xs, lengths, carry0, resets=None, hidden=None, hoist=None):
    cell = validate.get_cell(cell_name)
    batch, time, _ = xs.shape
    if carry0 is None:
        carry0 = zero_carry(cell, batch, hidden, xs.dtype)
    mask_tm = time_mask(lengths, time)
    hs_tm, final, _ = direction_forward(cell, cell_params, zero_padding(jnp.swapaxes(xs, 0, 1), mask_tm), carry0,
                                        mask_tm, lengths, reverse=False, save=False,
                                        resets_tm=resets_time_major(resets, mask_tm), hoist=hoist)
    return jnp.swapaxes(hs_tm, 0, 1), final


def unroll(params, xs, cell: str, lengths=None, h0=None, *, resets=None):
    """Run a recurrent cell over a batch of sequences (plain autodiff path).

    Args:
      params: ``{"cell": {...}, "readout": {...}}`` from :func:`init_params` (readout optional).
      xs: ``(batch, time, input_size)`` floating inputs, same dtype as the params.
      cell: ``"elman"``, ``"lstm"`` or ``"gru"``.
      lengths: optional ``(batch,)`` ints in ``[1, time]``; steps past a sequence's length leave
        its state unchanged.
      h0: optional initial carry, ``(batch, hidden)``; for the LSTM a pair ``(h, c)``. Zeros if None.
      resets: optional ``(batch, time)`` bool: ``resets[b, t]`` True starts a new segment at step
        ``t`` of row ``b``: the zero carry enters that step (not ``h0``, not the previous state),
        so each segment gives what it gives run alone. ``h0`` feeds only each row's first segment
        (when ``resets[b, 0]`` is False). Resets past a row's length change nothing.

    Returns:
      ``(hs, final_carry)``: ``hs`` is ``(batch, time, hidden)``, the hidden state after every step
      (held constant past a sequence's length); ``final_carry`` is ``(batch, hidden)`` (Elman, GRU)
      or ``(h, c)`` (LSTM), the state at each sequence's last valid step.
    """
    c = validate.check_inputs(params, xs, cell, lengths=lengths, h0=h0, resets=resets)
    hs, final = _unroll(cell, params["cell"], c.xs, c.lengths, c.carry0, c.resets, c.sizes.hidden_size,
                        PROCESS_FORMS["hoist"])
    return hs, public_carry(c.cell, final)


def step(params, carry, x, cell: str, reset=None):
    """One step of a recurrent cell: ``(carry, h)``.

    ``params`` as :func:`unroll`'s; ``carry``: the format :func:`unroll` takes as ``h0`` and returns
    (``(batch, hidden)``, or ``(h, c)`` for the LSTM), or None for zeros; ``x: (batch, input)``;
    ``reset: (batch,)`` bool or None: rows where True start from the zero carry. ``h: (batch, hidden)``
    is the state after the step. Stepping ``T`` times equals :func:`unroll` (it is that scan, one step
    long). Jit-able.
    """
    x = validate.as_array("x", x)
    if x.ndim != 2:
        raise ValueError(f"x: expected shape (batch, input), got {tuple(x.shape)}")
    c = validate.check_inputs(params, x[:, None], cell, resets=validate.one_step_resets(reset))
    carry0 = validate.check_h0(carry, c.cell, x.shape[0], c.sizes, name="carry")
    hs, final = _unroll(cell, params["cell"], c.xs, None, carry0, c.resets, c.sizes.hidden_size,
                        PROCESS_FORMS["hoist"])
    return public_carry(c.cell, final), hs[:, 0]
