"""Stacked one-direction layers as a wavefront: one loop over time for the whole stack.

A stack of ``L`` forward-only layers run one after the other takes ``L * T`` loop iterations with one
cell step each. As a wavefront, iteration ``i`` (``0 <= i < T + L - 1``) runs layer ``k`` at step
``t = i - k`` for every layer at once: layer ``k`` reads ``h^{k-1}_t``, which layer ``k - 1`` wrote
one iteration earlier, so the ``L`` steps of an iteration are independent of each other and the
stack takes ``T + L - 1`` iterations with ``L`` steps each. A layer outside its ``L - 1`` idle
iterations (``i < k`` or ``i >= k + T``) is a padded step: it holds its carry, exactly like a step
past a sequence's length (:func:`perceptron1_jax.scan.forward_step`).

The explicit backward runs the same schedule in reverse: at iteration ``i`` layer ``k`` takes step
``t = i - k`` back, with ``dL/dh^k_t`` (from above) the ``dL/dx^{k+1}_t = dZx^{k+1}_t W_x^{k+1 T}``
(times layer ``k + 1``'s input dropout) that layer ``k + 1`` produced one (reverse) iteration
earlier. Per step it is the sequential reverse scan's step (:func:`perceptron1_jax.scan.backward_step`);
weight gradients are block products after every :data:`~perceptron1_jax.scan.WINDOW` iterations,
``dW_x^k += X^{k T} dZx^k``, ``dW_h^k += H^{k T}_{prev} dZh^k`` over the block's rows of each
layer (idle rows have ``dZ = 0``). Only ``dL/dx^{k+1}`` of the upper layers moves into the loop.

What the data dependence allows: a bidirectional layer's output at step ``t`` needs its reverse
direction, which has read every step after ``t``; so the layer above cannot start before it ends,
and a bidirectional layer breaks the wave. :func:`wave_groups` joins runs of consecutive
forward-only layers with ``scan="sequential"`` (outside lean mode); every other layer runs on its
own (:func:`perceptron1_jax.layers.recurrent_forward`).

Whether the wavefront runs: the spec's ``forms=LoopForms(wavefront=...)`` (by default on accelerators
only, where a loop iteration has a fixed cost; on this package's 2-core CPU it measured no gain:
docs/performance.md#stacked-layers-as-a-wavefront). The math is
the same either way (tests/test_wavefront.py: equal in float64).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax.cells import CELLS, Carry, Params
from perceptron1_jax.layers import DirectionTape, final_gradients, initial_carries
from perceptron1_jax.scan import (
    WINDOW,
    Backward,
    accelerator_form,
    backward_step,
    carries_after,
    check_window,
    choose_form,
    forward_step,
    hoist_input_projection,
    input_weights_t,
    kept_dz,
    project_inputs,
    reset_rows,
    resolve_forms,
    reverse_blocks,
    zero_grads,
)
from perceptron1_jax.spec import ModelSpec

Array = jax.Array

def wavefront_enabled() -> bool:
    """Whether stacked forward-only layers of a spec that leaves ``forms.wavefront`` unset run as a
    wavefront (default: on accelerators, not on CPU)."""
    return accelerator_form("wavefront")


def set_wavefront(enabled: bool | None) -> bool | None:
    """Deprecated: ``ModelSpec(..., forms=LoopForms(wavefront=...))``. The process-wide choice of
    :func:`wavefront_enabled` for specs that leave it unset: True, False or None (by backend, the
    default). Returns the previous setting (to restore it)."""
    return choose_form("wavefront", "enabled", enabled, "set_wavefront")


def wave_groups(spec: ModelSpec, lean: int | None = None) -> tuple[tuple[int, int], ...]:
    """The model's layers as ``(start, stop)`` runs: a run of two or more layers is a wavefront, a run
    of one a layer on its own. Joined: consecutive forward-only layers with ``scan="sequential"``,
    when the spec's ``forms.wavefront`` resolves True and not in lean mode."""
    wave = resolve_forms(spec.forms).wavefront
    joins = [wave and lean is None and not layer.bidirectional and layer.scan == "sequential"
             for layer in spec.layers]
    groups, start = [], 0
    for k in range(1, len(joins) + 1):
        if k == len(joins) or not (joins[k] and joins[k - 1]):
            groups.append((start, k))
            start = k
    return tuple(groups)


def _skew(a: Array | None, before: int, after: int, end: Array | None = None, *, edge: bool = False) -> Array | None:
    """``a: (T, ...)`` with ``before`` rows in front and ``after`` rows behind: a layer's steps at the
    loop iterations that run them. The rows added are zeros, or with ``edge`` copies of the first and
    the last row (a cell's backward on an idle step reads real residuals: zeros may divide by zero),
    or behind copies of ``end: (...)``."""
    if a is None:
        return None

    def rows(n, like):
        return jnp.broadcast_to(like, (n,) + like.shape) if like is not None else jnp.zeros((n,) + a.shape[1:], a.dtype)

    return jnp.concatenate([rows(before, a[0] if edge else None), a,
                            rows(after, end if end is not None else a[-1] if edge else None)])


def _unskew(a: Array | None, k: int, time: int) -> Array | None:
    return None if a is None else a[k:k + time]


def _valid(mask_tm: Array | None, k: int, layers: int, time: int, batch: int) -> Array:
    """``(T + L - 1, B)`` bool: where layer ``k`` takes a valid step."""
    mask = jnp.ones((time, batch), bool) if mask_tm is None else mask_tm
    return _skew(mask, k, layers - 1 - k)


def wavefront_forward(cells: list[str], params: list[Params], xs_tm: Array, carries0: list[Carry],
                      mask_tm: Array | None, drop_masks: list, *, save: bool, resets_tm: Array | None = None,
                      hoist: bool | None = None):
    """A stack of forward-only layers over ``xs_tm: (T, B, I)`` (the first layer's input).

    ``cells``/``params``/``carries0``: per layer, its cell's name, its ``"fwd"`` params and its
    initial carry; ``drop_masks``: per layer the dropout multiplier on its input ``(T, B, F)`` or
    None (the first layer's is applied by the caller); ``resets_tm: (T, B)`` bool or None: the steps
    where every layer starts from the zero carry. Returns per layer ``(hs_tm, final, tape)`` as
    :func:`perceptron1_jax.layers.direction_forward`'s (``hs_tm`` None below the top layer unless
    ``save``; ``tape`` a :class:`~perceptron1_jax.layers.DirectionTape`, None unless ``save``).
    """
    layers, (time, batch) = len(cells), xs_tm.shape[:2]
    cell_fns = [CELLS[c] for c in cells]
    hoist = hoist_input_projection() if hoist is None else hoist  # the first layer's, before the loop
    first_in = project_inputs(cell_fns[0], params[0], xs_tm) if hoist else xs_tm
    inputs = (_skew(first_in, 0, layers - 1),
              tuple(_valid(mask_tm, k, layers, time, batch) for k in range(layers)),
              tuple(_skew(m, k, layers - 1 - k) for k, m in enumerate(drop_masks)),
              tuple(_skew(resets_tm, k, layers - 1 - k) for k in range(layers)))

    def body(carries, step_inputs):
        x_t, valid_t, drop_t, reset_t = step_inputs
        new, kept = [], []
        for k in range(layers):
            layer_in = x_t if k == 0 else carries[k - 1][0]
            if drop_t[k] is not None:
                layer_in = layer_in * drop_t[k]
            carry, residuals = forward_step(cell_fns[k], params[k], carries[k], layer_in, valid_t[k], reset_t[k],
                                            projected=hoist and k == 0)
            new.append(carry)
            kept.append((carries[k], residuals, layer_in if k > 0 else None))
        return tuple(new), (tuple(kept) if save else new[-1][0])

    finals, stacked = lax.scan(body, tuple(carries0), inputs)
    if not save:
        return [(None, f, None) for f in finals[:-1]] + [(stacked[layers - 1:], finals[-1], None)]
    out = []
    for k, (entering, residuals, layer_in) in enumerate(stacked):
        carries_in = tuple(_unskew(c, k, time) for c in entering)
        tape = DirectionTape(xs_tm if k == 0 else _unskew(layer_in, k, time), carries_in, finals[k],
                             jax.tree.map(lambda a, k=k: _unskew(a, k, time), residuals), resets_tm)
        out.append((carries_after(carries_in[:1], finals[k][:1])[0], finals[k], tape))
    return out


def wavefront_backward(cells: list[str], params: list[Params], tapes: list[DirectionTape], dhs_top_tm: Array | None,
                       final_dcarries: list[Carry], mask_tm: Array | None, drop_masks: list, *,
                       keep_dhs: bool = False, keep_dz: bool = False, window: int = WINDOW) -> list[Backward]:
    """The explicit backward of :func:`wavefront_forward` (with ``save``): per layer a
    :class:`~perceptron1_jax.scan.Backward` as the sequential reverse scan's.

    ``dhs_top_tm: (T, B, H)`` the gradient reaching the top layer's outputs, or None;
    ``final_dcarries``: per layer the gradient of its final carry; ``drop_masks`` as the forward's
    (layer ``k``'s multiplies the gradient that reaches layer ``k - 1``).
    """
    window = check_window(window)
    layers, (time, batch) = len(cells), tapes[0].xs_tm.shape[:2]
    cell_fns = [CELLS[c] for c in cells]
    w_x_t = [input_weights_t(cell, p) for cell, p in zip(cell_fns, params)]
    sk = [dict(xs=_skew(t.xs_tm, k, layers - 1 - k),
               prev=tuple(_skew(c, k, layers - 1 - k, f, edge=True) for c, f in zip(t.carries_in, t.final)),
               residuals=jax.tree.map(lambda a, k=k: _skew(a, k, layers - 1 - k, edge=True), t.residuals),
               valid=_valid(mask_tm, k, layers, time, batch), drop=_skew(m, k, layers - 1 - k),
               resets=_skew(t.resets_tm, k, layers - 1 - k))
          for k, (t, m) in enumerate(zip(tapes, drop_masks))]
    dh_top = _skew(dhs_top_tm, layers - 1, 0)

    def step(carry, xs):
        dcarries, afters, pending = carry
        new_d, new_after, new_pending, outs = [], [], [None] * layers, []
        for k in range(layers):
            prev, residuals, valid, drop, reset = xs[k]
            dh_out = xs[layers] if k == layers - 1 else pending[k]
            dcarry = dcarries[k] if dh_out is None else (dcarries[k][0] + dh_out,) + dcarries[k][1:]
            dzx, dzh, dprev = backward_step(cell_fns[k], params[k], prev, afters[k], residuals, dcarry, valid, reset)
            dx = None  # the first layer's dL/dx is not needed in the loop: one product per block
            if k > 0:  # the gradient of layer k-1's output at this step, read one iteration later
                dx = dzx if w_x_t[k] is None else dzx @ w_x_t[k]
                new_pending[k - 1] = dx if drop is None else dx * drop
            new_d.append(dprev)
            new_after.append(prev)
            outs.append((dzx, dzh, dcarry[0] if keep_dhs else None, dx))
        return (tuple(new_d), tuple(new_after), tuple(new_pending)), tuple(outs)

    def run_block(state, start, length):
        carry, acc = state

        def take(a):
            return None if a is None else lax.dynamic_slice_in_dim(a, start, length)

        xs = tuple(jax.tree.map(take, (s["prev"], s["residuals"], s["valid"], s["drop"], s["resets"])) for s in sk)
        carry, outs = lax.scan(step, carry, xs + (take(dh_top),), reverse=True)
        acc = tuple(jax.tree.map(lambda a, g: a + g.astype(a.dtype), acc[k], cell_fns[k].param_grads(
                        take(s["xs"]), reset_rows(take(s["prev"][0]), take(s["resets"])), o[0], o[1]))
                    for k, (s, o) in enumerate(zip(sk, outs)))
        first_dx = outs[0][0] if w_x_t[0] is None else outs[0][0] @ w_x_t[0]
        return (carry, acc), tuple((first_dx if k == 0 else dx, dhs) + kept_dz(cell_fns[k], dzx, dzh, keep_dz)
                                   for k, (dzx, dzh, dhs, dx) in enumerate(outs))

    afters = tuple(t.final for t in tapes)
    pending = tuple(jnp.zeros(t.carries_in[0].shape[1:], t.xs_tm.dtype) for t in tapes[:-1]) + (None,)
    state = ((tuple(final_dcarries), afters, pending), tuple(zero_grads(p) for p in params))
    ((dcarry0, _, _), grads), outs = reverse_blocks(time + layers - 1, window, run_block, state)
    backs = []
    for k in range(layers):
        dxs, dhs, dzx, dzh = (_unskew(a, k, time) for a in outs[k])
        backs.append(Backward(grads[k], dxs, dcarry0[k], dhs, dzx, dzh))
    return backs


def stack_forward(spec: ModelSpec, params: dict, x_tm: Array, mask_tm, carries0, layers: range, drop_masks: list, *,
                  save: bool, resets_tm=None):
    """Layers ``layers`` of a model (a run of :func:`wave_groups`) as a wavefront, in the model's
    layout: ``x_tm`` the run's first input (its dropout applied), ``carries0`` the model's (None or per
    layer ``{direction: carry}``), ``drop_masks`` per layer of the run. Returns ``(top outputs,
    per-layer finals, per-layer tapes)``, each ``{"fwd": ...}`` as
    :func:`perceptron1_jax.layers.recurrent_forward`'s."""
    first = [initial_carries(spec.layers[k], None if carries0 is None else carries0[k], x_tm.shape[1],
                             x_tm.dtype)["fwd"] for k in layers]
    out = wavefront_forward([spec.layers[k].cell for k in layers], [params["layers"][k]["fwd"] for k in layers],
                            x_tm, first, mask_tm, [None, *drop_masks[1:]], save=save, resets_tm=resets_tm,
                            hoist=resolve_forms(spec.forms).hoist)
    return out[-1][0], [{"fwd": final} for _, final, _ in out], [{"fwd": tape} for _, _, tape in out]


def stack_backward(spec: ModelSpec, params: dict, layers: range, finals: list, tapes: list, drop_masks: list, mask_tm,
                   dout_tm, dfinal_h, **options):
    """The explicit backward of :func:`stack_forward` in the model's layout (``finals``, ``tapes``,
    ``drop_masks`` per layer of the run; ``dout_tm``/``dfinal_h`` the gradient reaching the top layer's
    outputs or final ``h``). Returns ``(per-layer grads, per-layer backwards, dL/dx of the run's input)``,
    each ``{"fwd": ...}`` as :func:`perceptron1_jax.layers.recurrent_backward`'s."""
    dfinals = [final_gradients(f, None) for f in finals[:-1]] + [final_gradients(finals[-1], dfinal_h)]
    out = wavefront_backward([spec.layers[k].cell for k in layers], [params["layers"][k]["fwd"] for k in layers],
                             [t["fwd"] for t in tapes], dout_tm, [d["fwd"] for d in dfinals], mask_tm,
                             [None, *drop_masks[1:]], **options)
    return [{"fwd": b.grads} for b in out], [{"fwd": b} for b in out], out[0].dxs_tm
