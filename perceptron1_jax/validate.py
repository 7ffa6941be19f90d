"""Input checks shared by every public function: the one place for error messages.

Every check runs in Python before anything is traced into XLA. Shape and dtype checks work on
tracers too (inside ``jax.jit``/``jax.vmap`` they raise at trace time); value checks (label and
length ranges) run only when the array is concrete. Each message names the argument, what was
expected and what was received.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax.cells import CELLS, Cell
from perceptron1_jax.spec import ModelSpec, param_shapes, with_process_forms


class Sizes(NamedTuple):
    """Static sizes read off validated parameters."""

    input_size: int
    hidden_size: int
    num_classes: int | None  # None when params carry no readout
    dtype: Any


def _describe(value: Any) -> str:
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"array of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"{type(value).__name__} {value!r}"


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values we can read now (not a tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def as_array(name: str, value: Any) -> Any:
    """Accept arrays, tracers and array-likes (lists, numpy); reject anything else."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return value
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: expected an array, got {_describe(value)}") from err


def get_cell(cell: Any) -> Cell:
    """Look up a cell by name: ``"elman"``, ``"lstm"`` or ``"gru"``."""
    if not isinstance(cell, str) or cell not in CELLS:
        raise ValueError(f"cell: expected one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell]


def check_positive_int(name: str, value: Any) -> int:
    """A positive Python/numpy integer (``bool`` is refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int, got {_describe(value)}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value}")
    return int(value)


def check_float_dtype(name: str, dtype: Any) -> Any:
    """A floating dtype such as ``jnp.float32``."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name}: expected a floating dtype, got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name}: expected a floating dtype, got {dt}")
    return dt


def check_key(key: Any, name: str = "key") -> Any:
    """A ``jax.random`` key: new-style typed key or legacy ``uint32[2]``."""
    if hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name}: expected a single PRNG key, got key array of shape {key.shape}")
        return key
    if hasattr(key, "dtype") and key.dtype == jnp.uint32 and tuple(key.shape) == (2,):
        return key
    raise TypeError(
        f"{name}: expected a jax.random key (jax.random.key(seed) or PRNGKey(seed)), got {_describe(key)}"
    )


def _check_leaf(where: str, leaf: Any, shape: tuple[int, ...], dtype) -> Any:
    """One parameter array: its shape, a floating dtype, the dtype of the others; returns the dtype."""
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):
        raise TypeError(f"{where}: expected an array of shape {shape}, got {_describe(leaf)}")
    if tuple(leaf.shape) != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {tuple(leaf.shape)}")
    if not jnp.issubdtype(leaf.dtype, jnp.floating):
        raise TypeError(f"{where}: expected a floating dtype, got {leaf.dtype}")
    if dtype is not None and leaf.dtype != dtype:
        raise TypeError(f"{where}: expected dtype {dtype} like the other parameters, got {leaf.dtype}")
    return leaf.dtype


def _check_block(where: str, block: Any, expected: dict[str, tuple[int, ...]], dtype) -> Any:
    if not isinstance(block, dict):
        raise TypeError(f"{where}: expected a dict with keys {sorted(expected)}, got {_describe(block)}")
    if set(block) != set(expected):
        raise ValueError(f"{where}: expected keys {sorted(expected)}, got {sorted(block)}")
    for k, shape in expected.items():
        dtype = _check_leaf(f"{where}[{k!r}]", block[k], shape, dtype)
    return dtype


def check_params(params: Any, cell: Cell, need_readout: bool = True, xs: Any = None) -> Sizes:
    """Check ``params`` fits ``cell``: ``{"cell": {...}, "readout": {"W": (H, C), "b": (C,)}}``.
    A built-in cell's sizes are read off ``W_x``; a user cell's off ``xs`` and the parameters
    (:func:`_user_cell_sizes`)."""
    if not isinstance(params, dict) or "cell" not in params:
        raise TypeError(
            f"params: expected a dict with keys ['cell', 'readout'] (from init_params), got {_describe(params)}"
        )
    allowed = {"cell", "readout"}
    if not set(params) <= allowed or (need_readout and "readout" not in params):
        raise ValueError(f"params: expected keys {sorted(allowed)}, got {sorted(params)}")
    cell_params = params["cell"]
    if not cell.projects:
        return _user_cell_sizes(params, cell, xs)
    w_x = cell_params.get("W_x") if isinstance(cell_params, dict) else None
    if not hasattr(w_x, "shape") or len(w_x.shape) != 2:
        raise ValueError(
            f"params['cell']['W_x']: expected an array of shape (input, {cell.num_gates}*hidden) "
            f"for cell {cell.name!r}, got {_describe(w_x)}"
        )
    input_size, width = w_x.shape
    if width % cell.num_gates or width == 0:
        raise ValueError(
            f"params['cell']['W_x']: expected {cell.num_gates}*hidden columns for cell "
            f"{cell.name!r}, got shape {tuple(w_x.shape)}"
        )
    hidden = width // cell.num_gates
    return _checked_sizes(params, cell, int(input_size), int(hidden))


def _checked_sizes(params, cell: Cell, input_size: int, hidden: int) -> Sizes:
    """The cell block checked against ``cell.param_shapes(input_size, hidden)``, and the readout."""
    dtype = _check_block("params['cell']", params["cell"], cell.param_shapes(input_size, hidden), None)
    num_classes = None
    if "readout" in params:
        w_r = params["readout"].get("W") if isinstance(params["readout"], dict) else None
        if not hasattr(w_r, "shape") or len(w_r.shape) != 2:
            raise ValueError(
                f"params['readout']['W']: expected an array of shape ({hidden}, classes), got {_describe(w_r)}"
            )
        num_classes = int(w_r.shape[1])
        if num_classes == 0:
            raise ValueError("params['readout']['W']: expected at least one class column, got 0")
        _check_block(
            "params['readout']", params["readout"], {"W": (hidden, num_classes), "b": (num_classes,)}, dtype
        )
    return Sizes(input_size, hidden, num_classes, dtype)


def _user_cell_sizes(params, cell: Cell, xs: Any) -> Sizes:
    """A user cell's sizes: the input size from ``xs: (batch, time, input)``; the hidden size from the
    readout's rows, or without a readout the one size for which ``cell.param_shapes`` gives the
    parameters' shapes."""
    if not isinstance(params["cell"], dict):
        raise TypeError(f"params['cell']: expected a dict of arrays, got {_describe(params['cell'])}")
    xs = as_array("xs", xs)
    if xs.ndim != 3:
        raise ValueError(f"xs: expected shape (batch, time, input_size), got {tuple(xs.shape)}")
    input_size = int(xs.shape[-1])
    readout = params.get("readout")
    if isinstance(readout, dict) and hasattr(readout.get("W"), "shape") and len(readout["W"].shape) == 2:
        return _checked_sizes(params, cell, input_size, int(readout["W"].shape[0]))
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in params["cell"].items()}
    for hidden in sorted({d for shape in shapes.values() for d in shape}):
        if hidden > 0 and {k: tuple(v) for k, v in cell.param_shapes(input_size, hidden).items()} == shapes:
            return _checked_sizes(params, cell, input_size, hidden)
    raise ValueError(f"params['cell']: expected the shapes of cell {cell.name!r} for input size {input_size} "
                     f"(xs' last axis) and some hidden size, got {shapes}")


def check_xs(xs: Any, sizes: Sizes, source: str = "params['cell']['W_x'] rows") -> tuple[Any, int, int]:
    """``xs: (batch, time, input_size)``, floating, same dtype as params; returns (xs, B, T).
    ``source`` says where the expected input size comes from (for the message)."""
    xs = as_array("xs", xs)
    expect = f"(batch, time, {sizes.input_size})"
    if xs.ndim != 3:
        raise ValueError(f"xs: expected rank 3 {expect}, got shape {tuple(xs.shape)}")
    batch, time, features = xs.shape
    if batch == 0 or time == 0:
        raise ValueError(f"xs: expected non-empty batch and time {expect}, got shape {tuple(xs.shape)}")
    if features != sizes.input_size:
        raise ValueError(
            f"xs: expected input size {sizes.input_size} ({source}), got shape "
            f"{tuple(xs.shape)}"
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs: expected a floating dtype ({sizes.dtype}), got {xs.dtype}")
    if xs.dtype != sizes.dtype:
        raise TypeError(f"xs: expected dtype {sizes.dtype} to match params, got {xs.dtype}")
    return xs, int(batch), int(time)


def check_labels(labels: Any, batch: int, time: int, num_classes: int) -> tuple[Any, bool]:
    """Integer labels ``(batch,)`` (many-to-one) or ``(batch, time)`` (many-to-many) in
    ``[0, num_classes)``; returns (labels, many_to_many)."""
    labels = as_array("labels", labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels: expected an integer dtype (class indices), got {labels.dtype}")
    shape = tuple(labels.shape)
    if shape == (batch,):
        many_to_many = False
    elif shape == (batch, time):
        many_to_many = True
    else:
        raise ValueError(
            f"labels: expected shape ({batch},) for many-to-one or ({batch}, {time}) for many-to-many, "
            f"got {shape}"
        )
    if is_concrete(labels):
        values = np.asarray(labels)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"labels: expected values in [0, {num_classes}), got values in [{low}, {high}]"
            )
    return labels, many_to_many


def check_lengths(lengths: Any, batch: int, time: int) -> Any:
    """``lengths: (batch,)`` integers in ``[1, time]``, or None."""
    if lengths is None:
        return None
    lengths = as_array("lengths", lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer dtype, got {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},), got {tuple(lengths.shape)}")
    if is_concrete(lengths):
        values = np.asarray(lengths)
        low, high = int(values.min()), int(values.max())
        if low < 1 or high > time:
            raise ValueError(f"lengths: expected values in [1, {time}], got values in [{low}, {high}]")
    return lengths.astype(jnp.int32)  # int8/uint8 lengths would wrap where steps are counted


def check_h0(h0: Any, cell: Cell, batch: int, sizes: Sizes, name: str = "h0") -> tuple | None:
    """Initial carry: ``(batch, hidden)`` for Elman/GRU, a pair ``(h, c)`` of those for the LSTM.

    Returns the carry as a tuple, or None for the default zeros.
    """
    if h0 is None:
        return None
    return _check_carry(name, h0, cell, (batch, sizes.hidden_size), sizes.dtype)


def check_resets(resets: Any, batch: int, time: int, name: str = "resets") -> Any:
    """``resets: (batch, time)`` bool (True starts a new segment at that step), or None."""
    if resets is None:
        return None
    resets = as_array(name, resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"{name}: expected dtype bool (True where a new segment starts), got {resets.dtype}")
    if tuple(resets.shape) != (batch, time):
        raise ValueError(f"{name}: expected shape ({batch}, {time}) (batch, time), got {tuple(resets.shape)}")
    return resets


def one_step_resets(reset: Any) -> Any:
    """One step's ``reset: (batch,)`` bool (or None) -> ``(batch, 1)``, the one-step ``resets`` that the
    sequence checks then match against the batch (errors here name ``reset``)."""
    if reset is None:
        return None
    reset = as_array("reset", reset)
    if reset.dtype != jnp.bool_:
        raise TypeError(f"reset: expected dtype bool (True where a new segment starts), got {reset.dtype}")
    if reset.ndim != 1:
        raise ValueError(f"reset: expected shape (batch,), got {tuple(reset.shape)}")
    return reset[:, None]


class Checked(NamedTuple):
    """The validated arguments of a public entry point."""

    cell: Cell
    sizes: Sizes
    xs: Any  # (batch, time, input)
    labels: Any  # (batch,) or (batch, time) ints, or None
    lengths: Any  # (batch,) ints, or None
    carry0: tuple | None  # initial carry tuple, or None for zeros
    many_to_many: bool
    resets: Any = None  # (batch, time) bool, or None


def check_inputs(params, xs, cell, labels=None, lengths=None, h0=None, *, need_labels=False,
                 resets=None) -> Checked:
    """All checks of a public entry point, in the order a user reads the signature.

    The readout is required exactly when labels are (a loss needs classes).
    """
    spec = get_cell(cell)
    sizes = check_params(params, spec, need_readout=need_labels, xs=xs)
    xs, batch, time = check_xs(xs, sizes)
    many_to_many = False
    if need_labels:
        if labels is None:
            raise TypeError("labels: expected an integer array, got None")
        if sizes.num_classes is None:
            raise ValueError("params: expected a 'readout' entry to score labels, got none")
        labels, many_to_many = check_labels(labels, batch, time, sizes.num_classes)
    lengths = check_lengths(lengths, batch, time)
    carry0 = check_h0(h0, spec, batch, sizes)
    return Checked(spec, sizes, xs, labels, lengths, carry0, many_to_many, check_resets(resets, batch, time))


# --------------------------------------------------------------------------- layered models


def check_spec(spec: Any) -> ModelSpec:
    """A :class:`ModelSpec`, its loop forms left unset taking the process-wide choices of the deprecated
    setters where one was made (so ``jax.jit`` sees them in the spec: a change compiles anew)."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec: expected a ModelSpec, got {_describe(spec)}")
    forms = with_process_forms(spec.forms)
    return spec if forms == spec.forms else dataclasses.replace(spec, forms=forms)


def check_model_params(params: Any, spec: ModelSpec) -> Any:
    """``params`` in the pinned layout of ``spec`` (:func:`perceptron1_jax.spec.param_shapes`), one
    floating dtype throughout; returns that dtype."""
    shapes = param_shapes(spec)
    if not isinstance(params, dict):
        raise TypeError(
            f"params: expected a dict with keys {sorted(shapes)} (from init_model), got {_describe(params)}"
        )
    if set(params) != set(shapes):
        raise ValueError(f"params: expected keys {sorted(shapes)} for this spec, got {sorted(params)}")
    dtype = None
    if "embed" in shapes:
        dtype = _check_leaf("params['embed']", params["embed"], shapes["embed"], dtype)
    layers = params["layers"]
    if not isinstance(layers, (list, tuple)) or len(layers) != len(shapes["layers"]):
        raise ValueError(
            f"params['layers']: expected a list of {len(shapes['layers'])} layers, got {_describe(layers)}"
        )
    for k, (layer, expected) in enumerate(zip(layers, shapes["layers"])):
        if not isinstance(layer, dict) or set(layer) != set(expected):
            got = sorted(layer) if isinstance(layer, dict) else _describe(layer)
            raise ValueError(f"params['layers'][{k}]: expected directions {sorted(expected)}, got {got}")
        for d, cell_shapes in expected.items():
            dtype = _check_block(f"params['layers'][{k}][{d!r}]", layer[d], cell_shapes, dtype)
    return _check_block("params['head']", params["head"], shapes["head"], dtype)


def check_model_xs(xs: Any, spec: ModelSpec, dtype) -> tuple[Any, int, int]:
    """Float ``xs: (batch, time, input_size)`` of the params' dtype, or for token models integer
    ids ``(batch, time)`` in ``[0, vocab_size)``; returns ``(xs, batch, time)``."""
    if not spec.tokens:
        return check_xs(xs, Sizes(spec.input_size, 0, None, dtype), "spec.input_size")
    xs = as_array("xs", xs)
    if not jnp.issubdtype(xs.dtype, jnp.integer):
        raise TypeError(f"xs: expected integer token ids (spec.vocab_size is set), got dtype {xs.dtype}")
    if xs.ndim != 2 or 0 in xs.shape:
        raise ValueError(f"xs: expected token ids of shape (batch, time), non-empty, got shape {tuple(xs.shape)}")
    if is_concrete(xs):
        values = np.asarray(xs)
        low, high = int(values.min()), int(values.max())
        if low < 0 or high >= spec.vocab_size:
            raise ValueError(f"xs: expected token ids in [0, {spec.vocab_size}), got values in [{low}, {high}]")
    return xs, int(xs.shape[0]), int(xs.shape[1])


def check_targets(targets: Any, spec: ModelSpec, batch: int, time: int, dtype) -> Any:
    """Cross-entropy: integer classes ``(batch,)`` or, with ``many_to_many``, ``(batch, time)``, in
    ``[0, num_outputs)``. MSE: floats of the params' dtype, ``(batch, num_outputs)`` or
    ``(batch, time, num_outputs)``, finite."""
    if targets is None:
        raise TypeError("targets: expected an array, got None")
    targets = as_array("targets", targets)
    mode = "many_to_many=True" if spec.many_to_many else "many_to_many=False"
    if spec.loss == "cross_entropy":
        shape = (batch, time) if spec.many_to_many else (batch,)
        if not jnp.issubdtype(targets.dtype, jnp.integer):
            raise TypeError(f"targets: expected integer class ids (loss='cross_entropy'), got dtype {targets.dtype}")
        if tuple(targets.shape) != shape:
            raise ValueError(f"targets: expected shape {shape} ({mode}), got {tuple(targets.shape)}")
        if is_concrete(targets):
            values = np.asarray(targets)
            low, high = int(values.min()), int(values.max())
            if low < 0 or high >= spec.num_outputs:
                raise ValueError(
                    f"targets: expected class ids in [0, {spec.num_outputs}), got values in [{low}, {high}]"
                )
        return targets
    shape = (batch, time, spec.num_outputs) if spec.many_to_many else (batch, spec.num_outputs)
    if not jnp.issubdtype(targets.dtype, jnp.floating):
        raise TypeError(f"targets: expected floats (loss='mse'), got dtype {targets.dtype}")
    if targets.dtype != dtype:
        raise TypeError(f"targets: expected dtype {dtype} to match params, got {targets.dtype}")
    if tuple(targets.shape) != shape:
        raise ValueError(f"targets: expected shape {shape} ({mode}, loss='mse'), got {tuple(targets.shape)}")
    if is_concrete(targets) and not np.all(np.isfinite(np.asarray(targets))):
        bad = int(np.argmax(~np.isfinite(np.asarray(targets)).reshape(-1)))
        raise ValueError(f"targets: expected finite values, got a non-finite value at flat index {bad}")
    return targets


class CheckedModel(NamedTuple):
    """The validated arguments of a model entry point."""

    spec: ModelSpec
    dtype: Any
    xs: Any
    targets: Any  # or None
    lengths: Any  # or None
    dropout_key: Any  # or None
    resets: Any = None  # (batch, time) bool, or None
    carries0: Any = None  # per layer {direction: carry tuple}, or None


def check_carries0(carries0: Any, spec: ModelSpec, batch: int, dtype, name: str = "carries0") -> tuple | None:
    """Initial carries of a model: a list over layers of ``{direction: h}`` (``(h, c)`` for a cell with
    two carries; more for a user cell), each ``(batch, hidden)`` of the params' dtype, or None for a
    layer (zeros); returns per layer ``{direction: carry tuple}`` (None stays None)."""
    if carries0 is None:
        return None
    if not isinstance(carries0, (list, tuple)) or len(carries0) != len(spec.layers):
        raise ValueError(f"{name}: expected a list of {len(spec.layers)} layers, each {{direction: carry}} "
                         f"(as model_apply(..., return_carries=True) returns), got {_describe(carries0)}")
    out = []
    for k, (layer, given) in enumerate(zip(spec.layers, carries0)):
        if given is None:
            out.append(None)
            continue
        if not isinstance(given, dict) or set(given) != set(layer.directions):
            got = sorted(given) if isinstance(given, dict) else _describe(given)
            raise ValueError(f"{name}[{k}]: expected directions {list(layer.directions)}, got {got}")
        cell = CELLS[layer.cell]
        shape = (batch, layer.hidden_size)
        out.append({d: _check_carry(f"{name}[{k}][{d!r}]", given[d], cell, shape, dtype) for d in layer.directions})
    return tuple(out)


def _check_carry(where: str, carry: Any, cell: Cell, shape: tuple[int, int], dtype) -> tuple:
    """One direction's carry: an array (one carry) or a tuple of ``cell.carry_size`` arrays of ``shape``."""
    if cell.carry_size == 1:
        parts, expect = (carry,), f"an array of shape {shape}"
    else:
        expect = (f"a pair (h, c) of arrays of shape {shape}" if cell.carry_size == 2
                  else f"a tuple of {cell.carry_size} arrays of shape {shape}")
        if not isinstance(carry, (tuple, list)) or len(carry) != cell.carry_size:
            raise TypeError(f"{where}: expected {expect} for cell {cell.name!r}, got {_describe(carry)}")
        parts = tuple(carry)
    out = []
    for part in parts:
        part = as_array(where, part)
        if tuple(part.shape) != shape:
            raise ValueError(f"{where}: expected {expect}, got shape {tuple(part.shape)}")
        if part.dtype != dtype:
            raise TypeError(f"{where}: expected dtype {dtype} to match params, got {part.dtype}")
        out.append(part)
    return tuple(out)


def check_model_inputs(params, xs, spec, targets=None, lengths=None, dropout_key=None, *,
                       need_targets=False, resets=None, carries0=None) -> CheckedModel:
    """All checks of a model entry point, in the order of its signature."""
    spec = check_spec(spec)
    dtype = check_model_params(params, spec)
    xs, batch, time = check_model_xs(xs, spec, dtype)
    if need_targets:
        targets = check_targets(targets, spec, batch, time, dtype)
    lengths = check_lengths(lengths, batch, time)
    if dropout_key is not None:
        dropout_key = check_key(dropout_key, "dropout_key")
    return CheckedModel(spec, dtype, xs, targets, lengths, dropout_key, check_resets(resets, batch, time),
                        check_carries0(carries0, spec, batch, dtype))
