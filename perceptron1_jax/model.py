"""Models as plain functions: ``init_model``, the forward pass, ``model_apply`` and the plain-autodiff
``model_loss``; and the single-layer API (``init_params``, ``loss``, ``predict``, ``accuracy``) as
the one-layer case of the same code.

``spec`` is a :class:`~perceptron1_jax.spec.ModelSpec`; parameters follow its pinned layout
(:func:`perceptron1_jax.spec.param_shapes`). Everything here is plain autodiff:
``jax.grad(model_loss)`` is the reference that the explicit backward in
:mod:`perceptron1_jax.bptt` is tested against, and :func:`forward` is the one forward pass both use.

Single-layer params ``{"cell": {...}, "readout": {"W": (hidden, classes), "b": (classes,)}}`` are
the model ``{"layers": [{"fwd": cell}], "head": readout}`` of a one-layer, one-direction spec.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from perceptron1_jax import losses, validate
from perceptron1_jax.cells import CELLS
from perceptron1_jax.layers import dropout_mask, dropout_parts, embed_forward, head_forward, recurrent_forward
from perceptron1_jax.scan import public_carry, resets_time_major, time_mask, zero_padding
from perceptron1_jax.spec import LayerSpec, LoopForms, ModelSpec, with_process_forms
from perceptron1_jax.wavefront import stack_forward, wave_groups

Array = jax.Array


# --------------------------------------------------------------------------- init


def init_model(key, spec: ModelSpec, dtype=jnp.float32) -> dict:
    """Fresh parameters in the pinned layout of ``spec``.

    Each direction of each layer: its cell's default init (``W_x`` LeCun normal, ``W_h`` orthogonal
    per gate block, biases zero except the LSTM forget and GRU update gates, 1). Head ``W`` LeCun
    normal, ``b`` zero. Embedding table standard normal (as ``torch.nn.Embedding``).
    """
    spec = validate.check_spec(spec)
    key = validate.check_key(key)
    dtype = validate.check_float_dtype("dtype", dtype)
    k_embed, k_head, *k_layers = jax.random.split(key, 2 + len(spec.layers))
    layers = []
    for k, (layer, k_layer) in enumerate(zip(spec.layers, k_layers)):
        cell = CELLS[layer.cell]
        dir_keys = jax.random.split(k_layer, len(layer.directions))
        layers.append({d: cell.init(kd, spec.layer_input_size(k), layer.hidden_size, dtype)
                       for d, kd in zip(layer.directions, dir_keys)})
    head_w = jax.nn.initializers.lecun_normal()(k_head, (spec.head_features, spec.num_outputs), dtype)
    params = {"layers": layers, "head": {"W": head_w, "b": jnp.zeros((spec.num_outputs,), dtype)}}
    if spec.tokens:
        params["embed"] = jax.random.normal(k_embed, (spec.vocab_size, spec.embed_size), dtype)
    return params


# --------------------------------------------------------------------------- forward


class Forward(NamedTuple):
    """One forward pass (time-major inside); the tapes are what the explicit backward reads."""

    outputs: Array  # (B, O) many-to-one, (T, B, O) many-to-many
    features: Array  # the head's input after dropout: (B, F) or (T, B, F)
    mask_tm: Array | None  # (T, B) valid steps, None without lengths
    layer_masks: tuple  # per layer: the dropout multiplier on its input (T, B, F_in), or None
    head_mask: Array | None  # dropout multiplier on the head's input, or None
    finals: tuple  # per layer: {direction: final carry tuple}
    tapes: tuple  # per layer: {direction: tape} (None values unless save)


def forward(params, xs, spec: ModelSpec, lengths=None, dropout_key=None, carries0=None, *,
            save: bool = False, lean: int | None = None, resets=None) -> Forward:
    """The model's forward pass (unchecked, traceable).

    ``xs: (B, T, I)`` floats or ``(B, T)`` token ids; ``lengths: (B,)`` or None; ``dropout_key``
    None (no dropout) or a key: layer ``k >= 1``'s input uses ``split(key, L)[k]``, the head's
    input ``split(key, L)[0]``, at the rate ``spec.dropout`` (or the rate of a
    :class:`~perceptron1_jax.layers.DropoutDraw`, a key with its own rate). ``carries0``: None or
    per layer ``{direction: carry tuple}``
    (zeros where missing). ``save``: keep the tapes for :func:`perceptron1_jax.bptt.explicit_model`;
    ``lean=k``: keep a carry every ``k`` steps instead. ``resets: (B, T)`` bool or None: where True,
    every layer starts a new segment at that step (the zero carry enters it).

    Many-to-one reads the last layer's final states: the forward direction's at each sequence's
    last valid step and the backward direction's after it has read back to step 0, concatenated.
    """
    dtype = params["head"]["W"].dtype
    inputs = embed_forward(params["embed"], xs) if spec.tokens else xs
    mask_tm = time_mask(lengths, inputs.shape[1])
    resets_tm = resets_time_major(resets, mask_tm)
    x_tm = jnp.swapaxes(inputs, 0, 1)
    if not spec.tokens:  # float inputs may hold anything past the lengths (token ids look up finite rows)
        x_tm = zero_padding(x_tm, mask_tm)
    dropout_key, rate = dropout_parts(dropout_key, spec.dropout)
    drop = dropout_key is not None and (not isinstance(rate, (int, float)) or rate > 0)
    keys = jax.random.split(dropout_key, len(spec.layers)) if drop else None
    layer_masks, finals, tapes = [], [], []
    for start, stop in wave_groups(spec, lean):
        masks = [dropout_mask(keys[k], rate, (*x_tm.shape[:2], spec.layer_input_size(k)), dtype)
                 if drop and k > 0 else None for k in range(start, stop)]
        if masks[0] is not None:
            x_tm = x_tm * masks[0]
        if stop - start == 1:
            x_tm, layer_finals, layer_tapes = recurrent_forward(
                spec.layers[start], params["layers"][start], x_tm, mask_tm, lengths,
                None if carries0 is None else carries0[start], save=save, lean=lean, resets_tm=resets_tm,
                forms=spec.forms,
            )
            finals.append(layer_finals)
            tapes.append(layer_tapes)
        else:
            x_tm, wave_finals, wave_tapes = stack_forward(spec, params, x_tm, mask_tm, carries0, range(start, stop),
                                                          masks, save=save, resets_tm=resets_tm)
            finals.extend(wave_finals)
            tapes.extend(wave_tapes)
        layer_masks.extend(masks)
    if spec.many_to_many:
        features = x_tm
    else:
        last = finals[-1]
        features = jnp.concatenate([last[d][0] for d in spec.layers[-1].directions], axis=-1)
    head_mask = dropout_mask(keys[0], rate, features.shape, dtype) if drop else None
    if head_mask is not None:
        features = features * head_mask
    outputs = head_forward(params["head"], features)
    return Forward(outputs, features, mask_tm, tuple(layer_masks), head_mask, tuple(finals), tuple(tapes))


def batch_major(spec: ModelSpec, outputs: Array) -> Array:
    """Forward outputs -> what users see: ``(B, O)`` or ``(B, T, O)``."""
    return jnp.swapaxes(outputs, 0, 1) if spec.many_to_many else outputs


def score(spec: ModelSpec, outputs, targets, mask_tm, loss_mask=None, *, with_grad: bool = False):
    """The head's loss of forward ``outputs`` against batch-major ``targets``; with ``with_grad``
    also its gradient w.r.t. ``outputs``. ``loss_mask: (B, T)`` restricts the scored steps
    (many-to-many; truncated BPTT scores only a window's last steps)."""
    value, value_and_grad = losses.LOSSES[spec.loss]
    scored = None
    if spec.many_to_many:
        targets = jnp.swapaxes(targets, 0, 1)
        scored = mask_tm
        if loss_mask is not None:
            scored = loss_mask.T if scored is None else scored & loss_mask.T
    return (value_and_grad if with_grad else value)(outputs, targets, scored)


def scored_units(spec: ModelSpec, xs, lengths=None):
    """How many units the loss averages over: examples (many-to-one), or valid (sequence, step)
    pairs (many-to-many). Means of parts of a batch weighted by it give the batch's mean."""
    batch, time = xs.shape[0], xs.shape[1]
    if not spec.many_to_many:
        return jnp.asarray(batch)
    return jnp.asarray(batch * time) if lengths is None else jnp.sum(lengths)


def loss_and_forward(params, xs, targets, spec: ModelSpec, lengths=None, dropout_key=None, carries0=None, *,
                     resets=None):
    """``(loss, Forward)``: the loss that :func:`model_loss` computes and ``jax.grad`` differentiates
    (unchecked, traceable), with its forward pass."""
    fw = forward(params, xs, spec, lengths, dropout_key, carries0, resets=resets)
    return score(spec, fw.outputs, targets, fw.mask_tm), fw


def public_carries(spec: ModelSpec, finals) -> list:
    """Per layer ``{direction: carry tuple}`` -> what users see and pass back as ``carries0``: per layer
    ``{direction: h}``, or ``{direction: (h, c)}`` for a cell with two carries."""
    return [{d: public_carry(CELLS[layer.cell], carry) for d, carry in layer_finals.items()}
            for layer, layer_finals in zip(spec.layers, finals)]


@partial(jax.jit, static_argnames=("spec", "return_carries"))
def _apply(params, xs, spec, lengths, dropout_key, carries0=None, resets=None, return_carries=False):
    fw = forward(params, xs, spec, lengths, dropout_key, carries0, resets=resets)
    outputs = batch_major(spec, fw.outputs)
    return (outputs, public_carries(spec, fw.finals)) if return_carries else outputs


@partial(jax.jit, static_argnames=("spec",))
def _loss(params, xs, targets, spec, lengths, dropout_key, carries0=None, resets=None):
    return loss_and_forward(params, xs, targets, spec, lengths, dropout_key, carries0, resets=resets)[0]


@partial(jax.jit, static_argnames=("spec",))
def evaluate(params, xs, targets, spec, lengths=None, carries0=None, resets=None) -> dict:
    """``{"loss", "accuracy"}`` (cross-entropy) or ``{"loss"}`` (MSE) without dropout (unchecked)."""
    fw = forward(params, xs, spec, lengths, None, carries0, resets=resets)
    scores = {"loss": score(spec, fw.outputs, targets, fw.mask_tm)}
    if spec.loss == "cross_entropy":
        labels = jnp.swapaxes(targets, 0, 1) if spec.many_to_many else targets
        scores["accuracy"] = losses.accuracy(fw.outputs, labels, fw.mask_tm if spec.many_to_many else None)
    return scores


def model_apply(params, xs, spec: ModelSpec, lengths=None, dropout_key=None, *, resets=None, carries0=None,
                return_carries: bool = False):
    """The model's outputs: logits (``loss="cross_entropy"``) or predictions (``"mse"``).

    Args:
      params: from :func:`init_model`.
      xs: ``(batch, time, input_size)`` floats, or ``(batch, time)`` token ids.
      lengths: optional ``(batch,)`` ints in ``[1, time]``.
      dropout_key: a ``jax.random`` key to apply dropout (training), None for none.
      resets: optional ``(batch, time)`` bool: ``resets[b, t]`` True starts a new segment at step
        ``t`` of row ``b``: every layer enters that step from the zero carry, and the reverse
        direction of a bidirectional layer reads each segment from its own last step back to its
        first, so each segment gives what it gives run alone. ``carries0`` feed only each row's
        first segment (and only when ``resets[b, 0]`` is False).
      carries0: optional initial carries, per layer ``{direction: h}`` (``(h, c)`` for the LSTM),
        each ``(batch, hidden)``: the format ``return_carries`` gives, so a stream can be run in
        chunks. None: zeros. The reverse direction's carry enters at each row's last valid step.
      return_carries: also return every layer's final carries (the forward direction's at each
        row's last valid step, the reverse direction's after reading back to step 0).

    Returns:
      ``(batch, num_outputs)``, or ``(batch, time, num_outputs)`` with ``many_to_many`` (values at
      padded steps are not read by any loss); with ``return_carries``, ``(outputs, carries)``.
    """
    c = validate.check_model_inputs(params, xs, spec, lengths=lengths, dropout_key=dropout_key, resets=resets,
                                    carries0=carries0)
    return _apply(params, c.xs, c.spec, c.lengths, c.dropout_key, c.carries0, c.resets, bool(return_carries))


def model_loss(params, xs, targets, spec: ModelSpec, lengths=None, dropout_key=None, *, resets=None,
               carries0=None) -> Array:
    """The model's loss (plain autodiff reference; ``jax.grad`` of it runs autodiff of the scans).

    ``targets``: ``loss="cross_entropy"``: ints ``(batch,)`` or ``(batch, time)`` (``many_to_many``),
    averaged over the batch or over the valid (sequence, step) pairs; ``loss="mse"``: floats
    ``(batch, num_outputs)`` or ``(batch, time, num_outputs)``, the mean over every valid element.
    Other arguments as :func:`model_apply`.
    """
    c = validate.check_model_inputs(params, xs, spec, targets, lengths, dropout_key, need_targets=True,
                                    resets=resets, carries0=carries0)
    return _loss(params, c.xs, c.targets, c.spec, c.lengths, c.dropout_key, c.carries0, c.resets)


def step_forward(params, carries, x, spec: ModelSpec, reset=None):
    """One step of the model (unchecked, traceable): ``(carries, outputs)`` with the carries in the
    forward pass's layout (per layer ``{direction: carry tuple}``, or None for zeros); ``x: (B, I)``
    or token ids ``(B,)``; ``outputs: (B, O)``. It is :func:`forward` over one step."""
    fw = forward(params, x[:, None], spec, None, None, carries, resets=None if reset is None else reset[:, None])
    return fw.finals, fw.outputs[0] if spec.many_to_many else fw.outputs


@partial(jax.jit, static_argnames=("spec",))
def _model_step(params, carries, x, spec, reset):
    finals, outputs = step_forward(params, carries, x, spec, reset)
    return public_carries(spec, finals), outputs


def model_step(params, carries, x, spec: ModelSpec, reset=None):
    """One step of a model of one-direction layers: ``(carries, outputs)``.

    ``x``: ``(batch, input_size)`` floats, or ``(batch,)`` token ids; ``carries``: per layer
    ``{"fwd": h}`` (``(h, c)`` for the LSTM), the format :func:`model_apply` returns with
    ``return_carries``, or None for zeros; ``reset: (batch,)`` bool or None: rows where True start
    from the zero carry. ``outputs: (batch, num_outputs)`` is the head's output for this step.
    Stepping ``T`` times equals ``model_apply`` of a ``many_to_many`` spec (it is that forward pass,
    one step long). Jit-able.
    """
    spec = validate.check_spec(spec)
    bidirectional = [k for k, layer in enumerate(spec.layers) if layer.bidirectional]
    if bidirectional:
        raise ValueError(f"spec: expected one-direction layers (a step cannot read the future), got a "
                         f"bidirectional layer {bidirectional[0]}")
    x = validate.as_array("x", x)
    if x.ndim != (1 if spec.tokens else 2):
        raise ValueError(f"x: expected shape {'(batch,)' if spec.tokens else '(batch, input_size)'}, "
                         f"got {tuple(x.shape)}")
    c = validate.check_model_inputs(params, x[:, None], spec, resets=validate.one_step_resets(reset))
    carries = validate.check_carries0(carries, spec, x.shape[0], c.dtype, name="carries")
    return _model_step(params, carries, c.xs[:, 0], c.spec, None if c.resets is None else c.resets[:, 0])


# --------------------------------------------------------------------------- single layer


def single_layer_spec(cell: str, sizes: validate.Sizes, many_to_many: bool = False) -> ModelSpec:
    """The one-layer, one-direction, cross-entropy spec of single-layer ``params`` (its loop forms the
    process-wide choices, where the deprecated setters made one)."""
    return ModelSpec((LayerSpec(cell, sizes.hidden_size),), num_outputs=sizes.num_classes or 1,
                     input_size=sizes.input_size, many_to_many=many_to_many, forms=with_process_forms(LoopForms()))


def spec_of_params(cell: str, params, many_to_many: bool = False) -> ModelSpec:
    """:func:`single_layer_spec` read off single-layer ``params`` (unchecked; works under jit)."""
    w_x, readout_w = params["cell"]["W_x"], params["readout"]["W"]
    sizes = validate.Sizes(w_x.shape[0], readout_w.shape[0], readout_w.shape[1], w_x.dtype)
    return single_layer_spec(cell, sizes, many_to_many)


def as_model_params(params) -> dict:
    """``{"cell", "readout"}`` -> ``{"layers": [{"fwd": cell}], "head": readout}`` (same arrays)."""
    return {"layers": [{"fwd": params["cell"]}], "head": params["readout"]}


def from_model_params(params) -> dict:
    """The inverse of :func:`as_model_params` (also for gradients)."""
    return {"cell": params["layers"][0]["fwd"], "readout": params["head"]}


def single_carries0(carry0):
    """A single-layer initial carry tuple (or None) -> the model's per-layer ``carries0``."""
    return None if carry0 is None else ({"fwd": carry0},)


def init_params(key, cell: str, input_size: int, hidden_size: int, num_classes: int, dtype=jnp.float32):
    """Fresh parameters for a ``cell`` network with a softmax readout.

    Defaults: input weights ``W_x`` LeCun normal, recurrent weights ``W_h`` orthogonal per gate
    block (as Flax's recurrent cells), biases zero except the gates that keep the memory: the LSTM
    forget gate and the GRU update gate start at 1; readout ``W`` LeCun normal, ``b`` zero.

    Returns:
      ``{"cell": {...}, "readout": {"W": (hidden_size, num_classes), "b": (num_classes,)}}``.
    """
    spec = validate.get_cell(cell)
    key = validate.check_key(key)
    input_size = validate.check_positive_int("input_size", input_size)
    hidden_size = validate.check_positive_int("hidden_size", hidden_size)
    num_classes = validate.check_positive_int("num_classes", num_classes)
    dtype = validate.check_float_dtype("dtype", dtype)
    k_cell, k_out = jax.random.split(key)
    readout_w = jax.nn.initializers.lecun_normal()(k_out, (hidden_size, num_classes), dtype)
    return {
        "cell": spec.init(k_cell, input_size, hidden_size, dtype),
        "readout": {"W": readout_w, "b": jnp.zeros((num_classes,), dtype)},
    }


def _single(params, xs, cell, labels=None, lengths=None, h0=None, resets=None):
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=labels is not None, resets=resets)
    return c, single_layer_spec(cell, c.sizes, c.many_to_many), single_carries0(c.carry0)


def predict(params, xs, cell: str, lengths=None, h0=None, *, resets=None) -> Array:
    """Many-to-one logits ``(batch, classes)``, read at each sequence's last valid step.

    ``xs: (batch, time, input_size)``; ``lengths: (batch,)`` or None; ``h0`` and ``resets`` as in
    :func:`unroll`.
    """
    c, spec, carries0 = _single(params, xs, cell, lengths=lengths, h0=h0, resets=resets)
    if c.sizes.num_classes is None:
        raise ValueError("params: expected a 'readout' entry to compute logits, got none")
    return _apply(as_model_params(params), c.xs, spec, c.lengths, None, carries0, c.resets)


def loss(params, xs, labels, cell: str, lengths=None, h0=None, *, resets=None) -> Array:
    """Mean softmax cross-entropy of the network (plain autodiff reference).

    Args:
      params: from :func:`init_params`.
      xs: ``(batch, time, input_size)``.
      labels: ints in ``[0, classes)``: ``(batch,)`` many-to-one (mean over the batch) or
        ``(batch, time)`` many-to-many (mean over the valid (sequence, step) pairs).
      cell: ``"elman"``, ``"lstm"`` or ``"gru"``.
      lengths: optional ``(batch,)`` in ``[1, time]``.
      h0: optional initial carry as in :func:`unroll`.
      resets: optional ``(batch, time)`` bool, segment starts, as in :func:`unroll`.

    Returns:
      A scalar of the params' dtype.
    """
    if labels is None:
        raise TypeError("labels: expected an integer array, got None")
    c, spec, carries0 = _single(params, xs, cell, labels, lengths, h0, resets)
    return _loss(as_model_params(params), c.xs, c.labels, spec, c.lengths, None, carries0, c.resets)


def accuracy(params, xs, labels, cell: str, lengths=None, h0=None, *, resets=None) -> Array:
    """Fraction of correct arg-max predictions, with the label and mask rules of :func:`loss`."""
    if labels is None:
        raise TypeError("labels: expected an integer array, got None")
    c, spec, carries0 = _single(params, xs, cell, labels, lengths, h0, resets)
    return evaluate(as_model_params(params), c.xs, c.labels, spec, c.lengths, carries0, c.resets)["accuracy"]


def readout(readout_params, hidden: Array) -> Array:
    """Logits ``hidden W + b``: ``(..., hidden) -> (..., classes)`` (the one-layer head)."""
    return head_forward(readout_params, hidden)
