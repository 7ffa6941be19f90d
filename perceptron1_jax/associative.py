"""One direction of a linear recurrence over time in O(log T) depth: the forward and the explicit
backward as associative scans (``LayerSpec(..., scan="associative")``).

For a cell whose recurrence is linear in ``h`` with coefficients from the step input alone,
``h_t = a_t * h_{t-1} + b_t`` (``(a_t, b_t) = cell.linear(params, zx_t)``, each ``(B, H)``: minGRU,
minLSTM, a user cell declaring ``linear=``), the pairs compose associatively,
``(a_1, b_1) then (a_2, b_2) = (a_1 a_2, a_2 b_1 + b_2)``, so ``jax.lax.associative_scan`` gives
every ``h_t`` at once (the initial state folded into the first step: ``b_0 <- a_0 h_{-1} + b_0``).

Backward (explicit, never ``jax.grad``): with ``g_t`` the gradient reaching ``h_t`` from outside
the recurrence (the layer above or the head; the final state's gradient added at ``t = T - 1``),

    dL/dh_t = g_t + a_{t+1} * dL/dh_{t+1}          (a_T = 0)

is again a linear recurrence, run as the reverse associative scan of the pairs ``(a_{t+1}, g_t)``.
Then ``da_t = dL/dh_t * h_{t-1}`` and ``db_t = dL/dh_t``, which the cell's own local backward
(``cell.backward_step``, the same one the sequential reverse scan calls) turns into ``dZx_t`` for
all steps at once; the weight gradients are one product over all ``T * B`` rows
(``cell.param_grads``) and ``dL/dX = dZx W_x^T``; ``dL/dh_{-1} = a_0 * dL/dh_0``.

Lengths: a padded step is ``a = 1, b = 0`` (the state is held; its gradient passes straight to the
step before) and contributes nothing to the weights. Resets: a step that starts a new segment has
``a = 0`` (it reads the zero carry), so no gradient crosses it. Both directions: the reverse direction reads
its inputs flipped (:func:`perceptron1_jax.scan.reverse_in_time`), as the sequential path does.

Memory: every step's ``a``, carry and residuals are kept (there is no lean mode here). Depth
``O(log T)`` for ``O(T)`` work: on this 2-core CPU the sequential ``lax.scan`` is faster; the
associative scan is for accelerators (see docs/cells.md).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax.cells import Carry, Cell, Params, project_inputs
from perceptron1_jax.scan import Backward, accumulation_dtype, carries_after, input_weights_t, kept_dz, reset_rows

Array = jax.Array


class AssociativeTape(NamedTuple):
    """What the associative forward keeps for its backward (in the direction's own time order)."""

    xs_tm: Array  # (T, B, I) the inputs
    carries_in: Carry  # ((T, B, H),): h entering each step
    final: Carry  # ((B, H),): h after the last step
    residuals: object  # the cell's per-step residuals, stacked over time
    a: Array  # (T, B, H) the recurrence coefficients (1 on padded steps, 0 on reset steps)
    resets_tm: Array | None = None  # (T, B) bool: the steps that read the zero carry, or None


def _compose(earlier, later):
    """``h -> a_1 h + b_1`` then ``h -> a_2 h + b_2`` as one map: ``(a_1 a_2, a_2 b_1 + b_2)``."""
    a_1, b_1 = earlier
    a_2, b_2 = later
    return a_1 * a_2, a_2 * b_1 + b_2


def coefficients(cell: Cell, cell_params: Params, xs_tm: Array, mask_tm: Array | None,
                 resets_tm: Array | None = None) -> tuple[Array, Array, Array]:
    """``(zx, a, b)`` of every step: ``zx: (T, B, G*H)`` the cell's step input, ``a, b: (T, B, H)``
    (``a = 1, b = 0`` on padded steps; ``a = 0`` on reset steps, which forget the carry)."""
    zx = project_inputs(cell, cell_params, xs_tm)
    a, b = jax.vmap(lambda z: tuple(cell.linear(cell_params, z)))(zx)
    if mask_tm is not None:
        valid = mask_tm[..., None]
        a, b = jnp.where(valid, a, 1.0).astype(a.dtype), jnp.where(valid, b, 0.0).astype(b.dtype)
    return zx, reset_rows(a, resets_tm), b


def associative_forward(cell: Cell, cell_params: Params, xs_tm: Array, carry0: Carry, mask_tm: Array | None,
                        resets_tm: Array | None = None, *, save: bool) -> tuple[Array, Carry, AssociativeTape | None]:
    """``h_t`` of every step of ``xs_tm: (T, B, I)`` from ``carry0 = (h_{-1},)``.

    Returns ``(hs_tm, final, tape)``: ``hs_tm: (T, B, H)`` the state after each step, ``final``
    the carry after the last step, ``tape`` what :func:`associative_backward` needs (None unless
    ``save``). ``resets_tm: (T, B)`` bool or None: the steps that start from the zero carry.
    """
    (h0,) = carry0
    zx, a, b = coefficients(cell, cell_params, xs_tm, mask_tm, resets_tm)
    b = b.at[0].set(a[0] * h0 + b[0])
    _, hs = lax.associative_scan(_compose, (a, b), axis=0)
    final = (hs[-1],)
    if not save:
        return hs, final, None
    h_in = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    residuals = jax.vmap(lambda h, z: cell.step(cell_params, (h,), z)[1])(reset_rows(h_in, resets_tm), zx)
    return hs, final, AssociativeTape(xs_tm, (h_in,), final, residuals, a, resets_tm)


def associative_backward(cell: Cell, cell_params: Params, tape: AssociativeTape, dhs_out_tm: Array | None,
                         final_dcarry: Carry, mask_tm: Array | None, *, keep_dhs: bool = False,
                         keep_dz: bool = False) -> Backward:
    """The explicit backward of :func:`associative_forward` (equations in the module docstring).

    ``dhs_out_tm: (T, B, H)`` the gradient reaching each ``h_t`` from outside the recurrence, or
    None; ``final_dcarry = (dL/dh_{T-1},)`` from the final state. Returns a
    :class:`~perceptron1_jax.scan.Backward` (time-major, the direction's own time order).
    """
    a = tape.a
    outside = jnp.zeros_like(a) if dhs_out_tm is None else dhs_out_tm.astype(a.dtype)
    outside = outside.at[-1].add(final_dcarry[0])
    a_next = jnp.concatenate([a[1:], jnp.zeros_like(a[:1])], axis=0)  # a_{t+1}; nothing after the last step
    _, dhs = lax.associative_scan(_compose, (a_next, outside), axis=0, reverse=True)
    into_cell = dhs if mask_tm is None else jnp.where(mask_tm[..., None], dhs, 0.0).astype(dhs.dtype)
    (h_after,) = carries_after(tape.carries_in, tape.final)
    h_in = reset_rows(tape.carries_in[0], tape.resets_tm)  # what each step read
    dzx, dzh_part, _ = jax.vmap(lambda hp, ha, r, d: cell.backward_step(cell_params, (hp,), (ha,), r, (d,)))(
        h_in, h_after, tape.residuals, into_cell)
    grads = cell.param_grads(tape.xs_tm, h_in, dzx, dzh_part)
    grads = jax.tree.map(lambda p, g: g.astype(accumulation_dtype(p.dtype)), cell_params, grads)
    w_x_t = input_weights_t(cell, cell_params)
    dxs_tm = dzx if w_x_t is None else dzx @ w_x_t
    kept = kept_dz(cell, dzx, dzh_part, keep_dz)
    return Backward(grads, dxs_tm, (a[0] * dhs[0],), dhs if keep_dhs else None, *kept)
