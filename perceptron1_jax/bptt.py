"""Explicit, hand-derived Backpropagation Through Time for a whole model, composed layer by layer.

Never calls ``jax.grad``/``jax.vjp``/``jax.linearize``. For a :class:`~perceptron1_jax.spec.ModelSpec`:

1. Forward (:func:`perceptron1_jax.model.forward`, the same pass the autodiff reference uses) with
   tapes: per layer and direction, the carries entering each step and the cell's residuals
   (:func:`perceptron1_jax.scan.scan_forward`), and the dropout masks.
2. Head and loss (:mod:`perceptron1_jax.losses`): ``dL/dy = w (softmax - onehot)`` (cross-entropy)
   or ``2 w (y - target)`` (MSE); ``dW = x^T dL/dy``, ``dL/dx = dL/dy W^T``; times the head's
   dropout mask.
3. Layers from the top down (:func:`perceptron1_jax.layers.recurrent_backward`): each direction's
   reverse scan (:func:`perceptron1_jax.scan.backward_scan`) from the gradient of its outputs
   (many-to-many, or the layer above) or of its final state (many-to-one, top layer). The gradient
   w.r.t. a layer's inputs, times that input's dropout mask, is the lower layer's per-step
   ``dL/dh``.
4. Embedding: ``d table = scatter-add of dL/dx at the token ids``.

Shapes: ``B`` batch, ``T`` time; inside, arrays are time-major ``(T, B, ...)``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax import validate
from perceptron1_jax.cells import CELLS
from perceptron1_jax.layers import (
    direction_backward,
    direction_forward,
    embed_backward,
    head_backward,
    recurrent_backward,
)
from perceptron1_jax.model import (
    Forward,
    as_model_params,
    batch_major,
    forward,
    from_model_params,
    loss_and_forward,
    score,
    single_carries0,
    single_layer_spec,
    spec_of_params,
)
from perceptron1_jax.parallel import check_direction_spec, check_mesh, on_mesh, places_directions
from perceptron1_jax.scan import (
    WINDOW,
    check_window,
    public_carry,
    resets_time_major,
    time_mask,
    zero_carry,
    zero_padding,
)
from perceptron1_jax.spec import PROCESS_FORMS, ModelSpec
from perceptron1_jax.wavefront import stack_backward, wave_groups

Array = jax.Array


class ModelBackward(NamedTuple):
    """Side outputs of :func:`explicit_model` (time-major)."""

    forward: Forward  # the forward pass (outputs, tapes, finals, masks)
    doutputs: Array  # dL/d(head outputs), like forward.outputs
    backs: tuple  # per layer {direction: scan.Backward} (dL/dh_t, dL/dx, dL/dcarry0, dZ when kept)
    dxs_tm: Array  # (T, B, I) dL/d(first layer's input): the embeddings for token models


def explicit_model(params, xs, targets, spec: ModelSpec, lengths=None, dropout_key=None, carries0=None, *,
                   loss_mask=None, keep_dhs=False, keep_dz=False, window=WINDOW, lean=None, resets=None):
    """Unchecked, traceable explicit BPTT of a model (call it inside your own jit).

    Arguments as :func:`model_bptt`, plus ``carries0`` (per layer ``{direction: carry}``),
    ``loss_mask: (B, T)`` (many-to-many: which steps are scored, on top of ``lengths``),
    ``keep_dhs``/``keep_dz`` (per-step ``dL/dh_t`` / ``dZ`` in the result), ``window`` (steps
    per weight-gradient block) and ``resets: (B, T)`` bool (segment starts: no gradient crosses them).

    Returns:
      ``(loss, grads, ModelBackward)``; ``grads`` has the structure of ``params``.
    """
    window = check_window(window)
    fw = forward(params, xs, spec, lengths, dropout_key, carries0, save=True, lean=lean, resets=resets)
    loss, doutputs = score(spec, fw.outputs, targets, fw.mask_tm, loss_mask, with_grad=True)
    head_grads, dfeatures = head_backward(params["head"], fw.features, doutputs)
    if fw.head_mask is not None:
        dfeatures = dfeatures * fw.head_mask
    top = spec.layers[-1]
    if spec.many_to_many:
        dout_tm, dfinal_h = dfeatures, None
    else:  # many-to-one: the features are the final h of each direction, concatenated
        h = top.hidden_size
        dout_tm, dfinal_h = None, {d: dfeatures[:, k * h:(k + 1) * h] for k, d in enumerate(top.directions)}
    layer_grads, backs = [None] * len(spec.layers), [None] * len(spec.layers)
    for start, stop in reversed(wave_groups(spec, lean)):
        if stop - start == 1:
            layer_grads[start], dxs_tm, backs[start] = recurrent_backward(
                spec.layers[start], params["layers"][start], fw.tapes[start], fw.finals[start], dout_tm, dfinal_h,
                fw.mask_tm, lengths, keep_dhs=keep_dhs, keep_dz=keep_dz, window=window, forms=spec.forms,
            )
        else:
            layers = range(start, stop)
            wave_grads, wave_backs, dxs_tm = stack_backward(
                spec, params, layers, [fw.finals[k] for k in layers], [fw.tapes[k] for k in layers],
                [fw.layer_masks[k] for k in layers], fw.mask_tm, dout_tm, dfinal_h,
                keep_dhs=keep_dhs, keep_dz=keep_dz, window=window)
            layer_grads[start:stop], backs[start:stop] = wave_grads, wave_backs
        if fw.layer_masks[start] is not None:
            dxs_tm = dxs_tm * fw.layer_masks[start]
        dout_tm, dfinal_h = dxs_tm, None
    grads = {"layers": layer_grads, "head": head_grads}
    if spec.tokens:
        grads["embed"] = embed_backward(params["embed"], xs, jnp.swapaxes(dxs_tm, 0, 1))
    # Weight gradients add up over time in at least float32 (scan.accumulation_dtype); each comes
    # back in its parameter's dtype, so ``params - lr * grads`` keeps a half-precision model's dtype.
    grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params)
    return loss, grads, ModelBackward(fw, doutputs, tuple(backs), dxs_tm)


class ModelExtras(NamedTuple):
    """What ``model_bptt(..., return_extras=True)`` returns beside the loss and the gradients."""

    dhs: list  # per layer {direction: (batch, time, hidden)}: total dL/dh_t of every step
    dxs: Array  # (batch, time, features): dL/d(first layer's input), the embeddings for token models
    dh0: list  # per layer {direction: dL/d(initial carry)}: (batch, hidden), or (dh0, dc0) for the LSTM


class BPTTExtras(NamedTuple):
    """What ``bptt(..., return_extras=True)`` returns beside the loss and the gradients."""

    dhs: Array  # (batch, time, hidden): total dL/dh_t, the gradient of the loss w.r.t. each h_t
    dxs: Array  # (batch, time, input): dL/dxs
    dh0: object  # dL/d(initial carry): (batch, hidden), or a pair (dh0, dc0) for the LSTM


@partial(jax.jit, static_argnames=("spec", "return_extras", "lean"))
def _model_bptt(params, xs, targets, spec, lengths, dropout_key, carries0, return_extras, lean, resets=None):
    loss, grads, back = explicit_model(params, xs, targets, spec, lengths, dropout_key, carries0,
                                       keep_dhs=return_extras, lean=lean, resets=resets)
    if not return_extras:
        return loss, grads, None
    extras = ModelExtras(
        dhs=[{d: jnp.swapaxes(b.dhs_tm, 0, 1) for d, b in layer.items()} for layer in back.backs],
        dxs=jnp.swapaxes(back.dxs_tm, 0, 1),
        dh0=[{d: public_carry(CELLS[s.cell], b.dcarry0) for d, b in layer.items()}
             for s, layer in zip(spec.layers, back.backs)],
    )
    return loss, grads, extras


def make_value_and_grad(spec: ModelSpec, grad: str = "bptt", lean: int | None = None, compute_dtype=None):
    """``fn(params, xs, targets, dropout_key=None, lengths=None, resets=None) -> (loss, grads, outputs)``
    (unchecked, traceable) from the explicit BPTT (:func:`explicit_model`, ``lean`` its segment
    length) or from ``jax.grad`` of the same forward pass (``grad="autodiff"``). ``outputs`` are
    the head's, batch-major: ``(B, C)`` or ``(B, T, C)``. ``compute_dtype`` (e.g. ``bfloat16``):
    see :func:`in_compute_dtype`."""

    def explicit(params, xs, targets, dropout_key=None, lengths=None, resets=None):
        loss, grads, back = explicit_model(params, xs, targets, spec, lengths, dropout_key, lean=lean, resets=resets)
        return loss, grads, batch_major(spec, back.forward.outputs)

    def loss_fn(params, xs, targets, dropout_key, lengths, resets):
        loss, fw = loss_and_forward(params, xs, targets, spec, lengths, dropout_key, resets=resets)
        return loss, batch_major(spec, fw.outputs)

    def autodiff_value_and_grad(params, xs, targets, dropout_key=None, lengths=None, resets=None):
        (loss, outputs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, xs, targets, dropout_key, lengths,
                                                                           resets)
        return loss, grads, outputs

    fn = explicit if grad == "bptt" else autodiff_value_and_grad
    return fn if compute_dtype is None else in_compute_dtype(fn, compute_dtype)


def in_compute_dtype(value_and_grad, compute_dtype):
    """Mixed precision: ``value_and_grad`` (as :func:`make_value_and_grad`'s) computed with the
    float parameters, inputs and targets cast to ``compute_dtype`` (e.g. ``bfloat16``), while the
    parameters themselves stay in their dtype (float32). The recurrent layers' weight gradients
    are accumulated over time in at least float32 (:func:`perceptron1_jax.scan.backward_scan`);
    loss, gradients and outputs are returned in the parameters' dtype."""
    dtype = jnp.dtype(compute_dtype)

    def cast(tree):
        return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)

    def mixed(params, xs, targets, dropout_key=None, lengths=None, resets=None):
        loss, grads, outputs = value_and_grad(cast(params), cast(xs), cast(targets), dropout_key, lengths, resets)
        out = jax.tree.leaves(params)[0].dtype
        return loss.astype(out), jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), outputs.astype(out)

    return mixed


@partial(jax.jit, static_argnames=("spec", "mesh", "lean"))
def sharded_value_and_grad(params, xs, targets, lengths, dropout_key, spec: ModelSpec, mesh,
                           lean: int | None = None, resets=None):
    """``(loss, grads)`` of the explicit BPTT with the batch split over ``mesh``, or each bidirectional
    layer's directions on its two devices (unchecked; see :func:`perceptron1_jax.parallel.on_mesh`).
    ``xs: (batch, time, ...)`` with ``batch`` divisible by the mesh's ``"data"`` axis."""
    fn = on_mesh(make_value_and_grad(spec, "bptt", lean), spec, mesh)
    loss, grads, _ = fn(params, xs, targets, dropout_key, lengths, resets)
    return loss, grads


def _on_mesh(params, c, mesh, return_extras, lean):
    """model_bptt over a mesh (checked inputs ``c``)."""
    check_mesh(mesh, c.xs.shape[0])
    if places_directions(mesh):
        check_direction_spec(c.spec)
        if lean is not None:
            raise ValueError(f"lean: expected None with a direction mesh (its layers keep every step), got {lean!r}")
    if return_extras:
        raise ValueError("return_extras: expected False with a mesh (the per-step extras stay on one device), got True")
    if c.carries0 is not None:
        raise ValueError("carries0: expected None with a mesh (initial carries are not split over devices), got some")
    return sharded_value_and_grad(params, c.xs, c.targets, c.lengths, c.dropout_key, c.spec, mesh, _lean_segment(lean),
                                  c.resets)


def _lean_segment(lean):
    return None if lean is None else validate.check_positive_int("lean", lean)


def model_bptt(params, xs, targets, spec: ModelSpec, lengths=None, dropout_key=None, *,
               return_extras: bool = False, lean: int | None = None, mesh=None, resets=None, carries0=None):
    """Loss and gradients of :func:`perceptron1_jax.model_loss` by the explicit backward (JIT-compiled).

    Arguments as :func:`perceptron1_jax.model_loss`; the dropout masks of ``dropout_key`` are the
    same in the forward and the backward pass.

    Args:
      return_extras: also return a :class:`ModelExtras`: per layer and direction the total
        ``dL/dh_t`` of every step, ``dL/dxs`` of the first layer's input, ``dL/dh0``.
      lean: segment length ``k`` of the memory-lean mode (:mod:`perceptron1_jax.lean`): each
        direction keeps its carry every ``k`` steps and recomputes each segment in the backward
        pass (``k ~ sqrt(time)``). None (default): keep every step.
      mesh: a :class:`jax.sharding.Mesh` with a ``"data"`` axis (:func:`perceptron1_jax.make_mesh`):
        the batch is split over its devices and one collective combines the global mean
        (:mod:`perceptron1_jax.parallel`); the batch must divide by the axis size. Or one with a
        ``"direction"`` axis (:func:`perceptron1_jax.direction_mesh`): each bidirectional layer's
        two directions on its two devices, over the whole batch. None: one device.
      resets, carries0: as :func:`perceptron1_jax.model_apply`'s; no gradient crosses a reset, and
        ``extras.dh0`` is the gradient with respect to ``carries0`` (in its format).

    Returns:
      ``(loss, grads)`` or ``(loss, grads, extras)``; ``grads`` has the structure of ``params``.
    """
    c = validate.check_model_inputs(params, xs, spec, targets, lengths, dropout_key, need_targets=True,
                                    resets=resets, carries0=carries0)
    if mesh is not None:
        return _on_mesh(params, c, mesh, return_extras, lean)
    loss, grads, extras = _model_bptt(params, c.xs, c.targets, c.spec, c.lengths, c.dropout_key, c.carries0,
                                      bool(return_extras), _lean_segment(lean), c.resets)
    return (loss, grads, extras) if return_extras else (loss, grads)


def model_loss_explicit(params, xs, targets, spec: ModelSpec, lengths=None, dropout_key=None):
    """:func:`perceptron1_jax.model_loss` whose VJP is the explicit backward (a ``jax.custom_vjp``).

    ``jax.grad``/``nnx.grad`` of any function of this loss runs :func:`explicit_model`, never
    autodiff of the scans; the forward pass forms the loss and the gradients together, so
    ``jax.value_and_grad`` costs one explicit BPTT. Gradients flow to ``params``, to float ``xs``
    (``dL/dxs`` from the same backward pass) and to MSE ``targets``; integer inputs, class targets,
    ``lengths`` and the key get zero (``float0``) cotangents. Composes with ``jit`` and ``vmap``.
    """
    c = validate.check_model_inputs(params, xs, spec, targets, lengths, dropout_key, need_targets=True)
    return _explicit_loss(c.spec, params, c.xs, c.targets, c.lengths, c.dropout_key)


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _explicit_loss(spec, params, xs, targets, lengths, dropout_key):
    return explicit_model(params, xs, targets, spec, lengths, dropout_key)[0]


def _explicit_loss_fwd(spec, params, xs, targets, lengths, dropout_key):
    loss, grads, back = explicit_model(params, xs, targets, spec, lengths, dropout_key)
    dxs = None if spec.tokens else jnp.swapaxes(back.dxs_tm, 0, 1)
    dtargets = -batch_major(spec, back.doutputs) if spec.loss == "mse" else None  # L depends on y - target
    no_gradient = (xs if spec.tokens else None, None if spec.loss == "mse" else targets, lengths, dropout_key)
    return loss, (grads, dxs, dtargets, no_gradient)


def _explicit_loss_bwd(spec, saved, cotangent):
    grads, dxs, dtargets, no_gradient = saved

    def scaled(tree):
        return jax.tree.map(lambda g: cotangent * g, tree)

    def zeros(a):  # the cotangent of an integer or key argument
        return None if a is None else np.zeros(a.shape, jax.dtypes.float0)

    ids, labels, lengths, key = no_gradient
    return (scaled(grads), zeros(ids) if dxs is None else scaled(dxs), zeros(labels) if dtargets is None
            else scaled(dtargets), zeros(lengths), zeros(key))


_explicit_loss.defvjp(_explicit_loss_fwd, _explicit_loss_bwd)


# --------------------------------------------------------------------------- single layer


def bptt(params, xs, labels, cell: str, lengths=None, h0=None, *, return_extras: bool = False,
         lean: int | None = None, mesh=None, resets=None):
    """Loss and gradients by the explicit reverse-scan BPTT (JIT-compiled): the one-layer model.

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
      mesh: split the batch over a mesh's ``"data"`` axis, as in :func:`model_bptt` (no ``h0``).
      resets: ``(batch, time)`` bool, segment starts, as in :func:`perceptron1_jax.unroll`; the
        reverse scan passes no gradient across them.

    Returns:
      ``(loss, grads)``, or ``(loss, grads, extras)``; ``grads`` has the structure of ``params``.
    """
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True, resets=resets)
    spec = single_layer_spec(cell, c.sizes, c.many_to_many)
    if mesh is not None:
        if h0 is not None:
            raise ValueError("h0: expected None with a mesh (initial carries are not split over devices), got one")
        loss, grads = model_bptt(as_model_params(params), c.xs, c.labels, spec, c.lengths,
                                 return_extras=return_extras, lean=lean, mesh=mesh, resets=c.resets)
        return loss, from_model_params(grads)
    loss, grads, extras = _model_bptt(as_model_params(params), c.xs, c.labels, spec, c.lengths, None,
                                      single_carries0(c.carry0), bool(return_extras), _lean_segment(lean), c.resets)
    grads = from_model_params(grads)
    if not return_extras:
        return loss, grads
    return loss, grads, BPTTExtras(extras.dhs[0]["fwd"], extras.dxs, extras.dh0[0]["fwd"])


class Aux(NamedTuple):
    """Side outputs of :func:`explicit_value_and_grad` (time-major where noted)."""

    logits: Array  # (B, C) many-to-one, (B, T, C) many-to-many
    carries_in: tuple  # every carry leaf entering each step, (T, B, H) each
    final: tuple  # the carry after the last step
    dhs_tm: Array | None  # (T, B, H) total dL/dh_t, when keep_dhs
    dxs_tm: Array  # (T, B, I) dL/dxs
    dcarry0: tuple  # gradient w.r.t. the initial carry
    dzx_tm: Array | None  # (T, B, G*H) input pre-activation gradients (keep_dz): dW_x = sum_t x_t^T dzx_t
    dzh_part_tm: Array | None  # the cell's recurrent part (keep_dz); cell.full_dzh(dzx, part) = dZh


def explicit_value_and_grad(
    cell_name, params, xs, labels, lengths=None, carry0=None, *, many_to_many, keep_dhs=False, keep_dz=False,
    loss_mask=None, window=WINDOW,
):
    """Unchecked, traceable single-layer core (:func:`explicit_model` of the one-layer model).

    ``loss_mask: (B, T)`` bool (many-to-many only) restricts which steps are scored, on top of
    ``lengths``. ``window``: steps per weight-gradient block.

    Returns:
      ``(loss, grads, aux)`` with ``aux`` an :class:`Aux`.
    """
    spec = spec_of_params(cell_name, params, many_to_many)
    loss, grads, back = explicit_model(
        as_model_params(params), xs, labels, spec, lengths, None, single_carries0(carry0),
        loss_mask=loss_mask, keep_dhs=keep_dhs, keep_dz=keep_dz, window=window,
    )
    tape, b = back.forward.tapes[0]["fwd"], back.backs[0]["fwd"]
    logits = batch_major(spec, back.forward.outputs)
    aux = Aux(logits, tape.carries_in, tape.final, b.dhs_tm, back.dxs_tm, b.dcarry0, b.dzx_tm, b.dzh_part_tm)
    return loss, from_model_params(grads), aux


# --------------------------------------------------------------------------- custom_vjp entry


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _unroll_explicit(cell_name, hoist, cell_params, xs, lengths, carry0, resets):
    return _unroll_fwd(cell_name, hoist, cell_params, xs, lengths, carry0, resets)[0]


def _unroll_fwd(cell_name, hoist, cell_params, xs, lengths, carry0, resets):
    mask_tm = time_mask(lengths, xs.shape[1])
    xs_tm = zero_padding(jnp.swapaxes(xs, 0, 1), mask_tm)
    hs_tm, final, tape = direction_forward(CELLS[cell_name], cell_params, xs_tm, carry0, mask_tm, lengths,
                                           reverse=False, save=True, resets_tm=resets_time_major(resets, mask_tm),
                                           hoist=hoist)
    return (jnp.swapaxes(hs_tm, 0, 1), final), (cell_params, lengths, tape, resets)


def _unroll_bwd(cell_name, hoist, saved, cotangents):
    cell_params, lengths, tape, resets = saved
    d_hs, d_final = cotangents
    back = direction_backward(CELLS[cell_name], cell_params, tape, jnp.swapaxes(d_hs, 0, 1), tuple(d_final),
                              time_mask(lengths, d_hs.shape[1]), lengths, reverse=False, hoist=hoist)
    no_gradient = None if resets is None else np.zeros(resets.shape, jax.dtypes.float0)
    return back.grads, jnp.swapaxes(back.dxs_tm, 0, 1), None, back.dcarry0, no_gradient


_unroll_explicit.defvjp(_unroll_fwd, _unroll_bwd)


def unroll_bptt(params, xs, cell: str, lengths=None, h0=None, *, resets=None):
    """:func:`perceptron1_jax.unroll` whose gradient is the explicit BPTT (a ``jax.custom_vjp``).

    Same arguments and results as ``unroll``. Differentiating any loss built on its outputs
    (``hs`` and/or the final carry) with ``jax.grad`` runs the explicit reverse scan, not autodiff
    through the scan; it composes with ``jit``, ``vmap`` and ``grad``. Gradients flow to
    ``params["cell"]``, ``xs`` and ``h0`` (not to ``lengths`` or ``resets``); no gradient crosses a
    reset.
    """
    c = validate.check_inputs(params, xs, cell, lengths=lengths, h0=h0, resets=resets)
    carry0 = c.carry0
    if carry0 is None:
        carry0 = zero_carry(c.cell, c.xs.shape[0], c.sizes.hidden_size, c.sizes.dtype)
    hs, final = _unroll_explicit(cell, PROCESS_FORMS["hoist"], params["cell"], c.xs, c.lengths, carry0, c.resets)
    return hs, public_carry(c.cell, final)
