"""One direction over time: the forward ``lax.scan`` and its explicit reverse scan.

This is the only place that walks time. Every recurrent layer, every direction and every training
mode (full, lean, truncated) runs :func:`scan_forward` forwards and :func:`backward_scan` backwards.

Layout: public arrays are batch-major, ``xs: (batch, time, input)``; inside, arrays are time-major
``(time, batch, ...)`` because ``lax.scan`` walks the leading axis. The scan body has the signature
``(carry, x) -> (carry, y)`` everywhere in this package.

Variable lengths: with ``lengths: (batch,)`` a sequence's state is frozen after its last valid
step (``carry_t = carry_{t-1}`` for ``t >= length``). The reverse direction of a bidirectional
layer reads each sequence backwards *from its own last valid step* (PyTorch's packed sequences):
:func:`reverse_in_time` flips the valid part of every sequence, the same forward scan runs over
the flipped inputs, and its outputs are flipped back (the flip is its own inverse, so the
backward pass flips gradients the same way).

Resets: with ``resets_tm: (time, batch)`` a step marked True starts a new segment: it reads the
zero carry instead of the carry before it, ``h_t = f(x_t, 0)``. Its backward uses that zero as
``H_prev`` (so nothing reaches ``dW_h`` from it) and passes no gradient to the carry before it,
``dL/dh_{t-1} = 0`` across the reset. The reverse direction of a bidirectional layer starts afresh
at every segment's last step (:func:`direction_resets`), so each segment reads as if run alone.

Explicit backward (never ``jax.grad``/``jax.vjp``), :func:`backward_scan`: a reverse ``lax.scan``
carrying only ``dL/dh`` (and ``dL/dc``) and the state after the step; at step ``t`` the carried
gradient plus the step's own output gradient is the total ``dL/dh_t``; the cell's
``backward_step`` turns it into the pre-activation gradients ``dZx_t``, ``dZh_t`` and the gradient
for the previous carry; a padded step passes its gradient straight to the previous carry (the
state was held) and contributes nothing to the weights. Weight gradients are matmuls over blocks
of :data:`WINDOW` steps: ``dW_x += X^T dZx``, ``dW_h += H_prev^T dZh``, ``db += sum dZ``;
``dL/dX = dZx W_x^T``.

What is kept for all ``T`` steps (per batch row, floats): the entering carries and the cell's
residuals, i.e. Elman ``H``, LSTM ``2H + 4H`` (``h``, ``c``, gates), GRU ``H + 3H + H`` (``h``,
``[r, z, n]``, ``zh_n``); ``dZ`` lives for one block (``WINDOW x G*H``).
"""

from __future__ import annotations

import numbers
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax.cells import Carry, Cell, Params, project_inputs
from perceptron1_jax.spec import FORMS, PROCESS_FORMS, LoopForms, with_process_forms

Array = jax.Array

WINDOW = 8
"""Steps per block of the weight-gradient matmuls in :func:`backward_scan`.

Measured on the 2-core CPU (batch 64, hidden 128, T 32/128/512; ``python benchmarks/benchmark.py
--hidden 128 --time 32 128 512 --windows 8 32 64 --no-flax``): blocks of 8 were as fast as or up to
10% faster than 16 and 32 for every cell, and 64-step blocks or one matmul after the loop were
slower (up to 15%) and kept more memory.
"""


def time_mask(lengths: Array | None, time: int) -> Array | None:
    """``(time, batch)`` bool, True where step ``t`` is valid (``t < lengths[b]``); None if no lengths.
    Steps are counted in int32 whatever the lengths' dtype (an int8 ``arange`` past 127 wraps)."""
    if lengths is None:
        return None
    return jnp.arange(time, dtype=jnp.int32)[:, None] < lengths.astype(jnp.int32)[None, :]


def zero_padding(x_tm: Array, mask_tm: Array | None) -> Array:
    """``x_tm: (time, batch, features)`` with the steps past each sequence's length set to 0, so
    nothing there (NaN or inf included) reaches a gradient: the backward multiplies the inputs by
    zero cotangents on those steps, and ``0 * NaN`` is NaN."""
    return x_tm if mask_tm is None else jnp.where(mask_tm[..., None], x_tm, jnp.zeros((), x_tm.dtype))


def resets_time_major(resets: Array | None, mask_tm: Array | None) -> Array | None:
    """Batch-major ``resets: (batch, time)`` bool -> time-major ``(time, batch)``, True only on valid
    steps (a reset past a sequence's length changes nothing: the state there is held). None if None."""
    if resets is None:
        return None
    resets_tm = resets.T
    return resets_tm if mask_tm is None else resets_tm & mask_tm


def direction_resets(resets_tm: Array | None, lengths: Array | None, reverse: bool) -> Array | None:
    """A direction's resets in its own time order. Forward: as given. Reverse: each segment is read
    from its own last step back to its first, so the direction starts afresh at every segment's last
    step (the step before a reset, ``ends[s] = resets[s + 1]``), in the flipped order of
    :func:`reverse_in_time`. The reverse direction's first step (a sequence's last valid step) is
    never a reset: its initial carry enters there. ``resets_tm: (T, B)`` from :func:`resets_time_major`."""
    if resets_tm is None or not reverse:
        return resets_tm
    ends = jnp.concatenate([resets_tm[1:], jnp.zeros_like(resets_tm[:1])], axis=0)
    return reverse_in_time(ends, lengths)


def reset_rows(a: Array, resets: Array | None) -> Array:
    """``a: (..., H)`` (``(T, B, H)`` or one step's ``(B, H)``) with the rows where ``resets: (...)`` is
    True set to zero; ``a`` itself when ``resets`` is None."""
    return a if resets is None else jnp.where(resets[..., None], jnp.zeros((), a.dtype), a)


def reset_carry(carry: Carry, reset_t: Array | None) -> Carry:
    """``carry`` with the rows where ``reset_t: (B,)`` is True set to zero (a new segment starts)."""
    return carry if reset_t is None else tuple(reset_rows(c, reset_t) for c in carry)


def zero_carry(cell: Cell, batch: int, hidden: int, dtype) -> Carry:
    """The default initial carry: zeros, ``(h,)`` or ``(h, c)``, each ``(batch, hidden)``."""
    return tuple(jnp.zeros((batch, hidden), dtype) for _ in range(cell.carry_size))


def public_carry(cell: Cell, carry: Carry):
    """Carry tuple -> what users see: ``h`` for Elman/GRU, ``(h, c)`` for the LSTM."""
    return carry if cell.carry_size > 1 else carry[0]


def reverse_in_time(a_tm: Array, lengths: Array | None) -> Array:
    """Flip each sequence's valid steps: ``out[t, b] = a[L_b - 1 - t, b]`` for ``t < L_b``, and
    ``out[t, b] = a[t, b]`` on padding. ``a_tm: (time, batch, ...)``. Its own inverse."""
    if lengths is None:
        return a_tm[::-1]
    time = a_tm.shape[0]
    steps, lengths = jnp.arange(time, dtype=jnp.int32)[:, None], lengths.astype(jnp.int32)
    index = jnp.where(steps < lengths[None, :], lengths[None, :] - 1 - steps, steps)  # (T, B)
    index = index.reshape(index.shape + (1,) * (a_tm.ndim - 2))
    return jnp.take_along_axis(a_tm, index, axis=0)


def resolve_forms(forms: LoopForms) -> LoopForms:
    """``forms`` (a spec's) with every field a bool, at trace time: the spec's choice, else the
    process-wide one of the deprecated setters, else the platform's default (on accelerators yes, on
    XLA:CPU no: docs/performance.md)."""
    forms = with_process_forms(forms)
    on_accelerator = jax.default_backend() != "cpu"
    return LoopForms(**{name: on_accelerator if getattr(forms, name) is None else getattr(forms, name)
                        for name in FORMS})


def accelerator_form(name: str) -> bool:
    """Whether a spec that leaves form ``name`` (a field of :class:`~perceptron1_jax.spec.LoopForms`)
    unset takes it in the next trace."""
    return getattr(resolve_forms(LoopForms()), name)


def choose_form(name: str, argument: str, value: bool | None, setter: str) -> bool | None:
    """The deprecated process-wide choice of form ``name`` (``argument``, ``setter``: the public
    setter's argument and name, for the messages): what a spec leaving it unset takes. Clears no
    cache: the public functions fold the choice into the spec that ``jax.jit`` sees. Returns the
    previous setting (to restore it)."""
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"{argument}: expected True, False or None, got {value!r}")
    warnings.warn(f"{setter} is deprecated: choose the form per model, ModelSpec(..., forms=LoopForms({name}=...)) "
                  "(a static field that jax.jit sees)", DeprecationWarning, stacklevel=3)
    previous, PROCESS_FORMS[name] = PROCESS_FORMS[name], value
    return previous


def hoist_input_projection() -> bool:
    """Whether the forward computes ``x W_x + b`` for all steps before the loop.

    By default: on accelerators, yes (one big matmul); on XLA:CPU, no. Measured on 2 cores
    (float32, batch 64, input 32, hidden 128, time 128), projecting inside the loop made the LSTM
    training step 1.55x faster (90 -> 58 ms) and the GRU 1.24x (62 -> 50 ms), for both the explicit
    and the autodiff backward. In the hoisted form XLA:CPU fuses the slice of the precomputed
    projection into every gate nonlinearity of the step, and those fusions ran ~8x slower than when
    the step's gates read two matmul outputs (measured per XLA thunk with ``jax.profiler``: 79
    against 9 us per step for the LSTM gates; see docs/performance.md).
    A spec chooses with ``LoopForms(hoist=...)`` (the math is the same either way).
    """
    return accelerator_form("hoist")


def set_hoist_input_projection(hoist: bool | None) -> bool | None:
    """Deprecated: ``ModelSpec(..., forms=LoopForms(hoist=...))``. The process-wide branch of
    :func:`hoist_input_projection` for specs that leave it unset: True (project all steps before
    the loop), False (inside the loop) or None (by backend, the default). Returns the previous
    setting (to restore it)."""
    return choose_form("hoist", "hoist", hoist, "set_hoist_input_projection")


def forward_step(cell: Cell, cell_params: Params, carry: Carry, input_t: Array, valid_t: Array | None,
                 reset_t: Array | None = None, *, projected: bool = False) -> tuple[Carry, object]:
    """One step of the forward scan: ``(new_carry, residuals)``. ``input_t: (B, I)``, or its projection
    ``x W_x + b`` when ``projected``; ``valid_t: (B,)`` bool or None: where False the carry is held;
    ``reset_t: (B,)`` bool or None: where True the step starts from the zero carry (a new segment)."""
    zx_t = input_t if projected else project_inputs(cell, cell_params, input_t)
    new_carry, residuals = cell.step(cell_params, reset_carry(carry, reset_t), zx_t)
    if valid_t is not None:
        keep = valid_t[:, None]
        new_carry = tuple(jnp.where(keep, new, old) for new, old in zip(new_carry, carry))
    return new_carry, residuals


def scan_forward(
    cell: Cell, cell_params: Params, xs_tm: Array, carry0: Carry, mask_tm: Array | None,
    resets_tm: Array | None = None, *, stack_entering: bool = False, hoist: bool | None = None,
) -> tuple[Carry, Carry, object]:
    """Run the cell over time.

    Args:
      xs_tm: ``(time, batch, input)`` inputs, time-major.
      carry0: initial carry tuple, each ``(batch, hidden)``.
      mask_tm: ``(time, batch)`` bool validity mask or None.
      resets_tm: ``(time, batch)`` bool or None: where True the step starts from the zero carry
        (:func:`resets_time_major`, in this direction's order: :func:`direction_resets`).
      hoist: project every step's input before the loop (None: :func:`hoist_input_projection`).
      stack_entering: stack the carry *entering* each step (``carry0, ..., carry_{T-2}``) instead
        of the carry after it. The explicit backward wants this one: it is the ``H_prev`` operand
        of ``dW_h`` (once reset rows are zeroed), and the reverse scan carries the "after" state itself.

    Returns:
      ``(final_carry, carries, residuals)``: ``carries`` stacks every carry leaf over time
      (``(time, batch, hidden)`` each, the state *after* step t, or entering it with
      ``stack_entering``); ``residuals`` stacks the cell's per-step residuals (used only by the
      explicit backward; dead code otherwise).
    """
    hoist = hoist_input_projection() if hoist is None else hoist
    # Hoisted: one (T*B, I) x (I, G*H) matmul before the loop, the loop slices its rows.
    inputs_tm = project_inputs(cell, cell_params, xs_tm) if hoist else xs_tm

    def body(carry, inputs):
        input_t, valid_t, reset_t = inputs
        new_carry, residuals = forward_step(cell, cell_params, carry, input_t, valid_t, reset_t, projected=hoist)
        return new_carry, (carry if stack_entering else new_carry, residuals)

    final_carry, (carries, residuals) = lax.scan(body, carry0, (inputs_tm, mask_tm, resets_tm))
    return final_carry, carries, residuals


def carries_after(carries_in: Carry, final: Carry) -> Carry:
    """Entering-carry stacks (``stack_entering=True``) -> the stacks of the carry after each step."""
    return tuple(jnp.concatenate([c[1:], f[None]], axis=0) for c, f in zip(carries_in, final))


class Backward(NamedTuple):
    """What :func:`backward_scan` returns (time-major)."""

    grads: Params  # gradients of the cell params
    dxs_tm: Array  # (T, B, I) dL/dxs
    dcarry0: Carry  # gradient w.r.t. the initial carry
    dhs_tm: Array | None  # (T, B, H) total dL/dh_t, when keep_dhs
    dzx_tm: Array | None  # (T, B, G*H) input pre-activation gradients, when keep_dz
    dzh_part_tm: Array | None  # the cell's recurrent part of dZh (cell.full_dzh), when keep_dz


def accumulation_dtype(dtype):
    """Weight gradients add up over the steps in at least float32 (bfloat16 compute keeps them exact)."""
    return dtype if jnp.finfo(dtype).bits >= 32 else jnp.float32


def zero_grads(cell_params: Params) -> Params:
    """Zeros like the cell's parameters, in :func:`accumulation_dtype`: where weight gradients add up."""
    return jax.tree.map(lambda p: jnp.zeros(p.shape, accumulation_dtype(p.dtype)), cell_params)


def input_weights_t(cell: Cell, cell_params: Params) -> Array | None:
    """``W_x^T``, which maps ``dZx`` to ``dL/dx``; None for a user cell, whose ``dZx`` is ``dL/dx`` itself."""
    return cell_params["W_x"].T if cell.projects else None


def kept_dz(cell: Cell, dzx, dzh_part, keep_dz: bool) -> tuple:
    """``(dZx, the recurrent part of dZh)`` when ``keep_dz`` (a user cell has no dZh), else ``(None, None)``."""
    return (dzx, dzh_part if cell.projects else None) if keep_dz else (None, None)


def check_window(window) -> int:
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window: expected a positive int (steps per weight-gradient block), got {window!r}")
    return int(window)


def backward_step(cell: Cell, cell_params: Params, prev: Carry, after: Carry, residuals_t, dcarry: Carry,
                  valid_t: Array | None, reset_t: Array | None = None):
    """One step of the reverse scan: ``(dZx, dZh part, dL/d(previous carry))`` from ``dcarry``, the total
    gradient of the carry after the step (its ``dL/dh_t`` included). Where ``valid_t`` is False the step
    held its carry: the gradient passes to the previous carry unchanged and nothing reaches the cell.
    Where ``reset_t`` is True the step read the zero carry: ``prev`` (the carry before the reset) is
    replaced by zeros and no gradient reaches it, ``dL/d(previous carry) = 0`` (a reset is only ever
    on a valid step, :func:`resets_time_major`)."""
    prev_read = reset_carry(prev, reset_t)
    if valid_t is None:
        dzx, dzh, dprev = cell.backward_step(cell_params, prev_read, after, residuals_t, dcarry)
        return dzx, dzh, reset_carry(dprev, reset_t)
    keep = valid_t[:, None]
    into_cell = tuple(jnp.where(keep, d, 0.0) for d in dcarry)
    dzx, dzh, dprev = cell.backward_step(cell_params, prev_read, after, residuals_t, into_cell)
    return dzx, dzh, tuple(dp + jnp.where(keep, 0.0, d) for dp, d in zip(reset_carry(dprev, reset_t), dcarry))


def reverse_blocks(time: int, window: int, run_block, state):
    """Run ``run_block(state, start, length) -> (state, outs)`` over ``[0, time)`` in blocks of ``window``
    steps from the end of time back to its start (the remainder block, at the end, first); returns
    ``(state, outs)`` with the blocks' per-step outputs concatenated in time order."""
    block = min(window, time)
    n_full, tail = divmod(time, block)
    if tail:
        state, tail_outs = run_block(state, n_full * block, tail)
    state, outs = lax.scan(lambda s, w: run_block(s, w * block, block), state, jnp.arange(n_full), reverse=True)
    outs = jax.tree.map(lambda a: a.reshape((n_full * block,) + a.shape[2:]), outs)
    if tail:
        outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), outs, tail_outs)
    return state, outs


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
    resets_tm: Array | None = None,
    *,
    keep_dhs: bool = False,
    keep_dz: bool = False,
    window: int = WINDOW,
) -> Backward:
    """The reverse-time pass of one direction of one layer (full, lean and custom-VJP modes).

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
        (the layer above or a per-step head), or None.
      mask_tm: ``(T, B)`` bool validity, or None; ``resets_tm``: ``(T, B)`` bool, the steps that
        read the zero carry (as the forward's), or None: no gradient crosses them.
      keep_dhs: also return the total ``dL/dh_t`` of every step; ``keep_dz``: also return the
        stacked ``dZx`` and the cell's recurrent part of ``dZh`` (diagnostics).
    """
    window = check_window(window)
    w_x_t = input_weights_t(cell, cell_params)

    def run_block(state, start, length):
        dcarry, after, acc = state

        def take(a):
            return None if a is None else lax.dynamic_slice_in_dim(a, start, length)

        block_in = tuple(take(c) for c in carries_in)

        def step(carry, inputs):
            dcarry, after = carry
            prev_t, residuals_t, dh_out_t, valid_t, reset_t = inputs
            if dh_out_t is not None:
                dcarry = (dcarry[0] + dh_out_t,) + dcarry[1:]
            dzx, dzh, dprev = backward_step(cell, cell_params, prev_t, after, residuals_t, dcarry, valid_t, reset_t)
            return (dprev, prev_t), (dzx, dzh, dcarry[0] if keep_dhs else None)

        block_resets = take(resets_tm)
        inputs = (block_in, jax.tree.map(take, residuals), take(dhs_out_tm), take(mask_tm), block_resets)
        (dcarry, after), (dzx, dzh_part, dhs) = lax.scan(step, (dcarry, after), inputs, reverse=True)
        h_read = reset_rows(block_in[0], block_resets)  # the H_prev the steps read: zero after a reset
        grads = cell.param_grads(take(xs_tm), h_read, dzx, dzh_part)
        acc = jax.tree.map(lambda a, g: a + g.astype(a.dtype), acc, grads)
        return (dcarry, after, acc), (dzx if w_x_t is None else dzx @ w_x_t, dhs) + kept_dz(cell, dzx, dzh_part,
                                                                                            keep_dz)

    state = (final_dcarry, final_carry, zero_grads(cell_params))
    (dcarry0, _, grads), outs = reverse_blocks(xs_tm.shape[0], window, run_block, state)
    dxs_tm, dhs_tm, dzx_tm, dzh_part_tm = outs
    return Backward(grads, dxs_tm, dcarry0, dhs_tm, dzx_tm, dzh_part_tm)
