"""The forward pass through time: a ``lax.scan`` over a cell, with optional sequence lengths.

Layout: public arrays are batch-major, ``xs: (batch, time, input)`` and
``hs: (batch, time, hidden)``; inside, the scan runs time-major (``(time, batch, ...)``) because
``lax.scan`` walks the leading axis. The scan body has the signature
``(carry, x) -> (carry, y)`` everywhere in this package.

Variable lengths: with ``lengths: (batch,)`` a sequence's state is frozen after its last valid
step (``carry_t = carry_{t-1}`` for ``t >= length``), so the final carry is the state at the last
valid step and the many-to-one readout reads it directly.

``unroll`` here is plain: ``jax.grad`` differentiates it by autodiff, which is what makes it an
independent reference for the explicit backward in :mod:`perceptron1_jax.bptt`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax import validate
from perceptron1_jax.cells import Carry, Cell, Params, project_inputs

Array = jax.Array


def time_mask(lengths: Array | None, time: int) -> Array | None:
    """``(time, batch)`` bool, True where step ``t`` is valid (``t < lengths[b]``); None if no lengths."""
    if lengths is None:
        return None
    return jnp.arange(time, dtype=lengths.dtype)[:, None] < lengths[None, :]


def zero_carry(cell: Cell, batch: int, hidden: int, dtype) -> Carry:
    """The default initial carry: zeros, ``(h,)`` or ``(h, c)``, each ``(batch, hidden)``."""
    return tuple(jnp.zeros((batch, hidden), dtype) for _ in range(cell.carry_size))


def hoist_input_projection() -> bool:
    """Whether the forward computes ``x W_x + b`` for all steps before the loop.

    On accelerators, yes (one big matmul). On XLA:CPU, no: measured on 2 cores (float32, batch 64,
    input 32, hidden 128, time 128), projecting inside the loop made the LSTM training step 1.55x
    faster (90 -> 58 ms) and the GRU 1.24x (62 -> 50 ms), for both the explicit and the autodiff
    backward. In the hoisted form XLA:CPU fuses the slice of the precomputed projection into every
    gate nonlinearity of the step, and those fusions ran ~8x slower than when the step's gates read
    two matmul outputs (measured per XLA thunk with ``jax.profiler``: 79 against 9 us per step for
    the LSTM gates; see the README's Performance section).
    """
    return jax.default_backend() != "cpu"


def scan_forward(
    cell: Cell, cell_params: Params, xs_tm: Array, carry0: Carry, mask_tm: Array | None,
    *, stack_entering: bool = False,
) -> tuple[Carry, Carry, object]:
    """Run the cell over time.

    Args:
      xs_tm: ``(time, batch, input)`` inputs, time-major.
      carry0: initial carry tuple, each ``(batch, hidden)``.
      mask_tm: ``(time, batch)`` bool validity mask or None.
      stack_entering: stack the carry *entering* each step (``carry0, ..., carry_{T-2}``) instead
        of the carry after it. The explicit backward wants this one: it is the ``H_prev`` operand
        of ``dW_h`` as is, and the reverse scan carries the "after" state itself.

    Returns:
      ``(final_carry, carries, residuals)``: ``carries`` stacks every carry leaf over time
      (``(time, batch, hidden)`` each, the state *after* step t, or entering it with
      ``stack_entering``); ``residuals`` stacks the cell's per-step residuals (used only by the
      explicit backward; dead code otherwise).
    """
    hoist = hoist_input_projection()
    # Hoisted: one (T*B, I) x (I, G*H) matmul before the loop, the loop slices its rows.
    inputs_tm = project_inputs(cell, cell_params, xs_tm) if hoist else xs_tm

    def body(carry, inputs):
        input_t, valid_t = inputs
        zx_t = input_t if hoist else project_inputs(cell, cell_params, input_t)
        new_carry, residuals = cell.step(cell_params, carry, zx_t)
        if valid_t is not None:
            keep = valid_t[:, None]
            new_carry = tuple(jnp.where(keep, new, old) for new, old in zip(new_carry, carry))
        return new_carry, (carry if stack_entering else new_carry, residuals)

    final_carry, (carries, residuals) = lax.scan(body, carry0, (inputs_tm, mask_tm))
    return final_carry, carries, residuals


def carries_after(carries_in: Carry, final: Carry) -> Carry:
    """Entering-carry stacks (``stack_entering=True``) -> the stacks of the carry after each step."""
    return tuple(jnp.concatenate([c[1:], f[None]], axis=0) for c, f in zip(carries_in, final))


def public_carry(cell: Cell, carry: Carry):
    """Carry tuple -> what users see: ``h`` for Elman/GRU, ``(h, c)`` for the LSTM."""
    return carry if cell.carry_size > 1 else carry[0]


@partial(jax.jit, static_argnames=("cell_name",))
def _unroll(cell_name: str, cell_params, xs, lengths, carry0):
    cell = validate.get_cell(cell_name)
    batch, time, _ = xs.shape
    if carry0 is None:
        carry0 = zero_carry(cell, batch, cell_params["W_h"].shape[0], xs.dtype)
    final, carries, _ = scan_forward(cell, cell_params, jnp.swapaxes(xs, 0, 1), carry0, time_mask(lengths, time))
    return jnp.swapaxes(carries[0], 0, 1), final


def unroll(params, xs, cell: str, lengths=None, h0=None):
    """Run a recurrent cell over a batch of sequences (plain autodiff path).

    Args:
      params: ``{"cell": {...}, "readout": {...}}`` from :func:`init_params` (readout optional).
      xs: ``(batch, time, input_size)`` floating inputs, same dtype as the params.
      cell: ``"elman"``, ``"lstm"`` or ``"gru"``.
      lengths: optional ``(batch,)`` ints in ``[1, time]``; steps past a sequence's length leave
        its state unchanged.
      h0: optional initial carry, ``(batch, hidden)``; for the LSTM a pair ``(h, c)``. Zeros if None.

    Returns:
      ``(hs, final_carry)``: ``hs`` is ``(batch, time, hidden)``, the hidden state after every step
      (held constant past a sequence's length); ``final_carry`` is ``(batch, hidden)`` (Elman, GRU)
      or ``(h, c)`` (LSTM), the state at each sequence's last valid step.
    """
    c = validate.check_inputs(params, xs, cell, lengths=lengths, h0=h0)
    hs, final = _unroll(cell, params["cell"], c.xs, c.lengths, c.carry0)
    return hs, public_carry(c.cell, final)
