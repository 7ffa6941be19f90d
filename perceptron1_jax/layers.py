"""The model's layers, each a forward function with its explicit backward beside it.

* embedding: ``ids (B, T) -> table[ids] (B, T, E)``; backward: a scatter-add of ``dL/dx`` into
  the rows of the ids that were read, ``d table[v] = sum_{(b, t): ids[b, t] = v} dL/dx_{b, t}``.
* dropout: inverted dropout, ``x * m`` with ``m = bernoulli(1 - p) / (1 - p)`` drawn from a key;
  backward: ``dL/dx = m * dL/dy`` with the same mask.
* recurrent: one cell over time in one or two directions (:mod:`perceptron1_jax.scan`); the
  output of a bidirectional layer is ``concatenate([h_fwd_t, h_bwd_t])``. Backward: each
  direction's reverse scan from the gradient of its outputs (and of its final state), and
  ``dL/dx = dL/dx_fwd + dL/dx_bwd``. Both directions may run in one scan, ``vmap``-ed over the
  direction axis (:func:`fused_forward`, :func:`set_fused_directions`), or one on each device of a
  ``"direction"`` mesh in context (:func:`directions_mesh`, ``shard_map``).
* head: ``y = x W + b``; backward: ``dW = x^T dy``, ``db = sum dy``, ``dx = dy W^T``.

Inside, arrays are time-major ``(T, B, ...)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from perceptron1_jax.associative import AssociativeTape, associative_backward, associative_forward
from perceptron1_jax.cells import CELLS, Carry, Cell, Params
from perceptron1_jax.lean import lean_backward, lean_forward
from perceptron1_jax.scan import (
    WINDOW,
    Backward,
    accelerator_form,
    backward_scan,
    carries_after,
    choose_form,
    direction_resets,
    resolve_forms,
    reverse_in_time,
    scan_forward,
    zero_carry,
)
from perceptron1_jax.spec import DIRECTIONS, LayerSpec, LoopForms

Array = jax.Array


# --------------------------------------------------------------------------- embedding


def embed_forward(table: Array, ids: Array) -> Array:
    """``table: (V, E)``, ``ids: (B, T)`` ints -> ``(B, T, E)``."""
    return table[ids]


def embed_backward(table: Array, ids: Array, dxs: Array) -> Array:
    """``dL/dtable``: the rows of ``dxs: (B, T, E)`` added at their token ids (a scatter-add)."""
    return jnp.zeros_like(table).at[ids].add(dxs)


# --------------------------------------------------------------------------- dropout


class DropoutDraw(NamedTuple):
    """A dropout key with its own rate, given where a ``dropout_key`` goes: the rate of a
    population member under ``vmap`` (a traced scalar) instead of the model's ``spec.dropout``.
    Rate 0 draws multipliers of exactly 1 (the model without dropout)."""

    key: Array
    rate: Array  # () the dropout probability


def dropout_parts(dropout_key, rate: float):
    """``(key, rate)`` of a plain key (the model's ``rate``) or of a :class:`DropoutDraw`."""
    if isinstance(dropout_key, DropoutDraw):
        return dropout_key.key, dropout_key.rate
    return dropout_key, rate


def fold_dropout(dropout_key, data: int | Array):
    """``jax.random.fold_in`` of a dropout key (plain or a :class:`DropoutDraw`, rate kept)."""
    if isinstance(dropout_key, DropoutDraw):
        return DropoutDraw(jax.random.fold_in(dropout_key.key, data), dropout_key.rate)
    return jax.random.fold_in(dropout_key, data)


def dropout_mask(key, rate: float, shape: tuple[int, ...], dtype) -> Array:
    """Inverted-dropout multiplier: ``0`` with probability ``rate``, else ``1 / (1 - rate)``."""
    keep = 1.0 - rate
    return jax.random.bernoulli(key, keep, shape).astype(dtype) / jnp.asarray(keep, dtype)


# --------------------------------------------------------------------------- one direction


class DirectionTape(NamedTuple):
    """What the full-mode forward of one direction keeps for its backward (in the direction's
    own time order: flipped for the reverse direction)."""

    xs_tm: Array  # (T, B, I) the inputs
    carries_in: Carry  # (T, B, H) per leaf: the carry entering each step
    final: Carry  # the carry after the last step
    residuals: object  # the cell's per-step residuals
    resets_tm: Array | None = None  # (T, B) bool: the steps that read the zero carry, or None


def direction_forward(cell: Cell, cell_params: Params, xs_tm: Array, carry0: Carry, mask_tm, lengths, *,
                      reverse: bool, save: bool, lean: int | None = None, associative: bool = False,
                      resets_tm=None, hoist: bool | None = None):
    """Run one direction over ``xs_tm: (T, B, I)``.

    Returns ``(hs_tm, final, tape)``: ``hs_tm: (T, B, H)`` the state after every step in the
    original time order, ``final`` the carry after the direction's last step (for the reverse
    direction: after reading back to step 0), ``tape`` what the backward needs (None unless
    ``save``). ``lean=k`` keeps a carry every ``k`` steps instead of every step; ``associative``
    runs a linear recurrence as an associative scan (:mod:`perceptron1_jax.associative`).
    ``resets_tm: (T, B)`` bool (original time order, :func:`~perceptron1_jax.scan.resets_time_major`)
    or None: segment starts; the reverse direction reads each segment from its last step back
    (:func:`~perceptron1_jax.scan.direction_resets`). The tape keeps them for the backward.
    ``hoist``: project the inputs before the loop (None: the process-wide or platform default).
    """
    x = reverse_in_time(xs_tm, lengths) if reverse else xs_tm
    resets_tm = direction_resets(resets_tm, lengths, reverse)
    if associative:
        if lean is not None:
            raise ValueError(f"lean: expected None for a layer with scan='associative' (it keeps every step; "
                             f"there are no segments to recompute), got {lean!r}")
        hs, final, tape = associative_forward(cell, cell_params, x, carry0, mask_tm, resets_tm, save=save)
    elif lean is not None:
        hs, final, tape = lean_forward(cell, cell_params, x, carry0, mask_tm, lean, resets_tm, hoist=hoist)
    else:
        final, carries, residuals = scan_forward(cell, cell_params, x, carry0, mask_tm, resets_tm,
                                                 stack_entering=save, hoist=hoist)
        hs = carries_after(carries[:1], final[:1])[0] if save else carries[0]
        tape = DirectionTape(x, carries, final, residuals, resets_tm) if save else None
    return (reverse_in_time(hs, lengths) if reverse else hs), final, tape


def direction_backward(cell: Cell, cell_params: Params, tape, dhs_out_tm, final_dcarry: Carry, mask_tm, lengths,
                       *, reverse: bool, keep_dhs: bool = False, keep_dz: bool = False,
                       window: int = WINDOW, hoist: bool | None = None) -> Backward:
    """The explicit backward of :func:`direction_forward` (full or lean tape).

    ``dhs_out_tm: (T, B, H)`` (original time order) the gradient reaching each output from above,
    or None; ``final_dcarry`` the gradient of the final carry; ``hoist`` the forward's (a lean tape's
    segments are recomputed). Returns a
    :class:`~perceptron1_jax.scan.Backward` whose per-step arrays are in the original time order.
    """
    dhs = reverse_in_time(dhs_out_tm, lengths) if reverse and dhs_out_tm is not None else dhs_out_tm
    if isinstance(tape, AssociativeTape):
        back = associative_backward(cell, cell_params, tape, dhs, final_dcarry, mask_tm, keep_dhs=keep_dhs,
                                    keep_dz=keep_dz)
    elif isinstance(tape, DirectionTape):
        back = backward_scan(cell, cell_params, tape.xs_tm, tape.carries_in, tape.final, tape.residuals,
                             final_dcarry, dhs, mask_tm, tape.resets_tm, keep_dhs=keep_dhs, keep_dz=keep_dz,
                             window=window)
    else:
        back = lean_backward(cell, cell_params, tape, dhs, final_dcarry, keep_dhs=keep_dhs, window=window,
                             hoist=hoist)
    return in_time_order(back, lengths) if reverse else back


def in_time_order(back: Backward, lengths) -> Backward:
    """A reverse direction's backward (per-step arrays in the direction's own, flipped order) with its
    per-step arrays flipped back into the original time order."""
    def flip(a):
        return None if a is None else reverse_in_time(a, lengths)

    return Backward(back.grads, flip(back.dxs_tm), back.dcarry0, flip(back.dhs_tm), flip(back.dzx_tm),
                    flip(back.dzh_part_tm))


# --------------------------------------------------------------------------- both directions in one scan


def fused_directions_enabled() -> bool:
    """Whether a bidirectional layer of a spec that leaves ``forms.fused_directions`` unset runs both
    directions in one forward and one reverse scan, the direction axis ``vmap``-ed (stacked weights, one
    batched product per step). By default on accelerators only: on the 2-core CPU the explicit passes
    measured 0.96-0.97x of one scan per direction (docs/performance.md#both-directions-in-one-scan)."""
    return accelerator_form("fused_directions")


def set_fused_directions(enabled: bool | None) -> bool | None:
    """Deprecated: ``ModelSpec(..., forms=LoopForms(fused_directions=...))``. The process-wide choice
    of :func:`fused_directions_enabled` for specs that leave it unset: True, False or None (by backend,
    the default). Returns the previous setting (to restore it)."""
    return choose_form("fused_directions", "enabled", enabled, "set_fused_directions")


DIRECTION_AXIS = "direction"
"""The mesh axis that places the two directions of a bidirectional layer on two devices."""


def directions_mesh():
    """The mesh in context (``jax.set_mesh``, :func:`perceptron1_jax.parallel.direction_parallel`) when
    it has a ``"direction"`` axis of two devices; else None."""
    mesh = jax.sharding.get_abstract_mesh()
    if DIRECTION_AXIS in mesh.axis_names and mesh.shape[DIRECTION_AXIS] == 2:
        return mesh
    return None


def _over_directions(fn, pairs: tuple, stacked=None):
    """``fn(*args[, stacked_k])`` for both directions ``k``, results stacked on a leading axis of 2.
    ``pairs``: per argument ``(forward direction's, reverse direction's)`` pytrees; ``stacked``: a
    pytree already stacked over the directions (a forward's tape), or None.

    Without a :func:`directions_mesh`: ``vmap`` over the stacked pairs. Under one, each device runs
    its own direction ``k`` (``shard_map`` over the ``"direction"`` axis): the pairs come in
    replicated and the device keeps its member; ``stacked`` and the results stay split by direction,
    each device holding its own."""
    mesh = directions_mesh()
    if mesh is None:
        args = tuple(_stack(*pair) for pair in pairs) + (() if stacked is None else (stacked,))
        return jax.vmap(fn)(*args)

    def own_direction(pairs, stacked):
        k = jax.lax.axis_index(DIRECTION_AXIS)
        mine = jax.tree.map(lambda f, b: jax.lax.select_n(k, f, b), *zip(*pairs))
        out = fn(*mine, *(() if stacked is None else (_direction(stacked, 0),)))
        return jax.tree.map(lambda a: a[None], out)

    return jax.shard_map(own_direction, mesh=mesh, in_specs=(P(), P(DIRECTION_AXIS)), out_specs=P(DIRECTION_AXIS),
                         check_vma=False)(pairs, stacked)


def _stack(fwd, bwd):
    return jax.tree.map(lambda f, b: jnp.stack([f, b]), fwd, bwd)


def _direction(tree, k: int):
    return jax.tree.map(lambda a: a[k], tree)


@jax.tree_util.register_pytree_node_class
class StackedTapes(Mapping):
    """``{direction: DirectionTape}`` of a fused layer, kept as one tape stacked over the directions
    (``stacked``: leading axis 2), so that under a :func:`directions_mesh` each device keeps its own
    direction's tape for the backward; reading ``tapes[d]`` takes direction ``d``'s slice."""

    def __init__(self, stacked: DirectionTape):
        self.stacked = stacked

    def __getitem__(self, direction: str) -> DirectionTape:
        return _direction(self.stacked, DIRECTIONS.index(direction))

    def __iter__(self):
        return iter(DIRECTIONS)

    def __len__(self) -> int:
        return len(DIRECTIONS)

    def tree_flatten(self):
        return (self.stacked,), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)


def fused_forward(cell: Cell, params: dict, xs_tm: Array, carries0: dict, mask_tm, lengths, *, save: bool,
                  resets_tm=None, hoist: bool | None = None):
    """Both directions of a layer in one scan: :func:`direction_forward` ``vmap``-ed over the two
    directions' stacked params, inputs and resets (the reverse direction's flipped) and initial carries,
    or each on its own device under a :func:`directions_mesh` (:func:`_over_directions`). Returns
    ``([hs_fwd, hs_bwd], finals, tapes)`` as one :func:`direction_forward` per direction would, the
    tapes as :class:`StackedTapes`."""
    resets = (None, None) if resets_tm is None else tuple(
        direction_resets(resets_tm, lengths, reverse) for reverse in (False, True))
    hs, final, tape = _over_directions(
        lambda p, x, c, r: direction_forward(cell, p, x, c, mask_tm, lengths, reverse=False, save=save, resets_tm=r,
                                             hoist=hoist),
        ((params["fwd"], params["bwd"]), (xs_tm, reverse_in_time(xs_tm, lengths)),
         (carries0["fwd"], carries0["bwd"]), resets))
    finals = {d: _direction(final, k) for k, d in enumerate(DIRECTIONS)}
    tapes = dict.fromkeys(DIRECTIONS) if tape is None else StackedTapes(tape)
    return [hs[0], reverse_in_time(hs[1], lengths)], finals, tapes


def fused_backward(cell: Cell, params: dict, tapes: dict, dhs_out: dict, final_dcarries: dict, mask_tm, lengths,
                   **options) -> dict:
    """The explicit backward of :func:`fused_forward` (full tapes): :func:`direction_backward` over the
    two directions (``vmap``-ed, or one per device as the forward ran). Returns ``{direction:
    Backward}`` in the original time order."""
    dhs = (None, None)
    if dhs_out["fwd"] is not None:
        dhs = (dhs_out["fwd"], reverse_in_time(dhs_out["bwd"], lengths))
    back = _over_directions(
        lambda p, d, f, t: direction_backward(cell, p, t, d, f, mask_tm, lengths, reverse=False, **options),
        ((params["fwd"], params["bwd"]), dhs, (final_dcarries["fwd"], final_dcarries["bwd"])), tapes.stacked)
    return {"fwd": _direction(back, 0), "bwd": in_time_order(_direction(back, 1), lengths)}


def fuses(layer: LayerSpec, lean: int | None = None, forms: LoopForms | None = None) -> bool:
    """Whether this layer's directions run in one scan (``forms.fused_directions``, resolved; None: the
    default of :func:`fused_directions_enabled`; always under a :func:`directions_mesh`), bidirectional,
    sequential scan, not lean."""
    fused = fused_directions_enabled() if forms is None else resolve_forms(forms).fused_directions
    placed = directions_mesh() is not None
    return layer.bidirectional and layer.scan == "sequential" and lean is None and (fused or placed)


# --------------------------------------------------------------------------- recurrent layer


def initial_carries(layer: LayerSpec, carries0, batch: int, dtype) -> dict:
    """``{direction: carry tuple}``: the given ``carries0`` (None or ``{direction: carry or None}``),
    zeros where none is given."""
    cell = CELLS[layer.cell]
    given = {} if carries0 is None else carries0
    return {d: zero_carry(cell, batch, layer.hidden_size, dtype) if given.get(d) is None else given[d]
            for d in layer.directions}


def final_gradients(finals: dict, dfinal_h) -> dict:
    """``{direction: gradient of its final carry}``: zeros, with ``dfinal_h[direction]: (B, H)`` (the
    many-to-one head's gradient of the final ``h``) in the ``h`` slot when given."""
    out = {d: tuple(jnp.zeros_like(c) for c in final) for d, final in finals.items()}
    if dfinal_h is not None:
        out = {d: (dfinal_h[d],) + dfinal[1:] for d, dfinal in out.items()}
    return out


def recurrent_forward(layer: LayerSpec, params: dict, xs_tm: Array, mask_tm, lengths, carries0=None, *,
                      save: bool, lean: int | None = None, resets_tm=None, forms: LoopForms | None = None):
    """A recurrent layer over ``xs_tm: (T, B, I)``: ``params = {"fwd": ..., "bwd": ...}``,
    ``carries0`` None or ``{direction: carry tuple or None}`` (zeros where None), ``resets_tm: (T, B)``
    bool or None (segment starts, :func:`direction_forward`), ``forms`` the spec's loop forms (None:
    the defaults).

    Returns ``(out_tm, finals, tapes)``: ``out_tm: (T, B, H)`` or ``(T, B, 2H)``
    (``[h_fwd_t, h_bwd_t]``), and per direction its final carry and tape.
    """
    cell = CELLS[layer.cell]
    first = initial_carries(layer, carries0, xs_tm.shape[1], xs_tm.dtype)
    hoist = None if forms is None else resolve_forms(forms).hoist
    if fuses(layer, lean, forms):
        outs, finals, tapes = fused_forward(cell, params, xs_tm, first, mask_tm, lengths, save=save,
                                            resets_tm=resets_tm, hoist=hoist)
    else:
        outs, finals, tapes = [], {}, {}
        for d in layer.directions:
            hs, finals[d], tapes[d] = direction_forward(cell, params[d], xs_tm, first[d], mask_tm, lengths,
                                                       reverse=d == "bwd", save=save, lean=lean,
                                                       associative=layer.scan == "associative",
                                                       resets_tm=resets_tm, hoist=hoist)
            outs.append(hs)
    return (outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-1)), finals, tapes


def recurrent_backward(layer: LayerSpec, params: dict, tapes: dict, finals: dict, dout_tm, dfinal_h, mask_tm,
                       lengths, *, keep_dhs: bool = False, keep_dz: bool = False, window: int = WINDOW,
                       forms: LoopForms | None = None):
    """The explicit backward of :func:`recurrent_forward`.

    ``dout_tm``: ``(T, B, features)`` gradient of the layer's outputs, or None; ``dfinal_h``:
    ``{direction: (B, H)}`` gradient of each direction's final ``h``, or None. Returns
    ``(grads, dxs_tm, backs)``: ``{direction: cell grads}``, ``dL/dx: (T, B, I)`` summed over
    the directions, and each direction's :class:`~perceptron1_jax.scan.Backward`. ``forms``: the
    forward's.
    """
    cell, hidden = CELLS[layer.cell], layer.hidden_size
    dhs = {d: None if dout_tm is None else dout_tm[..., k * hidden:(k + 1) * hidden]
           for k, d in enumerate(layer.directions)}
    dfinals = final_gradients(finals, dfinal_h)
    hoist = None if forms is None else resolve_forms(forms).hoist
    options = {"keep_dhs": keep_dhs, "keep_dz": keep_dz, "window": window, "hoist": hoist}
    if isinstance(tapes, StackedTapes):
        backs = fused_backward(cell, params, tapes, dhs, dfinals, mask_tm, lengths, **options)
    else:
        backs = {d: direction_backward(cell, params[d], tapes[d], dhs[d], dfinals[d], mask_tm, lengths,
                                       reverse=d == "bwd", **options) for d in layer.directions}
    dxs = backs[layer.directions[0]].dxs_tm
    if len(layer.directions) == 2:
        dxs = dxs + backs["bwd"].dxs_tm
    return {d: b.grads for d, b in backs.items()}, dxs, backs


# --------------------------------------------------------------------------- head


def head_forward(params: dict, features: Array) -> Array:
    """``(..., F) -> (..., O)``: ``features W + b``."""
    return features @ params["W"] + params["b"]


def head_backward(params: dict, features: Array, doutputs: Array) -> tuple[dict, Array]:
    """``dW = x^T dy``, ``db = sum dy`` over every leading position, ``dx = dy W^T``."""
    flat_x = features.reshape(-1, features.shape[-1])
    flat_dy = doutputs.reshape(-1, doutputs.shape[-1])
    grads = {"W": flat_x.T @ flat_dy, "b": jnp.sum(flat_dy, axis=0)}
    return grads, doutputs @ params["W"].T
