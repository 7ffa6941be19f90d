"""Cells of your own: :func:`custom_cell` turns a step function (and, optionally, its hand-written
local backward) into a cell record, and :func:`register_cell` makes its name usable everywhere a
built-in cell's is: ``LayerSpec(name, size)``, stacks, ``bidirectional``, lengths, dropout, both
heads, many-to-one and many-to-many, :func:`~perceptron1_jax.model_bptt`, ``lean=``, truncated
BPTT, ``mesh=``, gradient flow and training from Python.

The contract (``B`` batch, ``I`` input size, ``H`` hidden size):

* ``param_shapes(input_size, hidden_size) -> {name: shape}``;
* ``init(key, input_size, hidden_size, dtype) -> {name: array}`` of those shapes;
* ``step(params, carry, x) -> new_carry``: ``carry`` a tuple of ``carry_size`` arrays ``(B, H)``,
  ``carry[0]`` the layer's output ``h``; ``x: (B, I)`` the raw step input;
* ``backward(params, carry_prev, x, dcarry) -> (dparams, dcarry_prev, dx)`` (optional): the
  step's local backward. Without it the library derives each step's local backward with
  ``jax.vjp`` of ``step``; the reverse scan, the carried ``dL/dh``, the lengths and the
  composition across layers and directions stay the library's own;
* ``linear(params, x) -> (a, b)`` (optional, ``carry_size=1``): the declaration that the step is
  ``h' = a * h + b`` with ``a, b: (B, H)`` from the step input alone. It opens
  ``LayerSpec(name, size, scan="associative")`` (:mod:`perceptron1_jax.associative`); the
  declaration is checked against ``step`` on the probe.

In the library's record the step reads its raw input (no input projection outside the loop) and
keeps it as its residual; each step's parameter gradient is summed over blocks of steps. Shapes
are checked once, when the cell is made, on a probe (``B = 2``, ``I = 3``, ``H = 4``): a
``ValueError`` names the cell and the array.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax.cells import CELLS, Cell

PROBE = {"batch": 2, "input_size": 3, "hidden_size": 4}  # the sizes the shapes are checked on


def custom_cell(name: str, param_shapes: Callable, init: Callable, step: Callable, carry_size: int = 1,
                backward: Callable | None = None, linear: Callable | None = None) -> Cell:
    """A cell record from the functions of the contract (see the module doc); checked on a probe."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    for what, fn in (("param_shapes", param_shapes), ("init", init), ("step", step)):
        if not callable(fn):
            raise TypeError(f"cell {name!r}: {what}: expected a function, got {type(fn).__name__}")
    if backward is not None and not callable(backward):
        raise TypeError(f"cell {name!r}: backward: expected a function or None, got {type(backward).__name__}")
    if isinstance(carry_size, bool) or not isinstance(carry_size, int) or carry_size < 1:
        raise ValueError(f"cell {name!r}: carry_size: expected a positive int, got {carry_size!r}")
    if linear is not None and not callable(linear):
        raise TypeError(f"cell {name!r}: linear: expected a function or None, got {type(linear).__name__}")
    if linear is not None and carry_size != 1:
        raise ValueError(f"cell {name!r}: linear: expected carry_size 1 (h' = a * h + b), got {carry_size}")
    cell = Cell(name=name, num_gates=1, carry_size=carry_size, input_bias="", param_shapes=_tuple_shapes(param_shapes),
                init=init,
                step=_library_step(step), backward_step=_library_backward(step, backward),
                param_grads=_summed_param_grads, full_dzh=_no_dzh, projects=False,
                linear=None if linear is None else (lambda params, x: tuple(linear(params, x))))
    check_cell(cell, step, backward)
    if linear is not None:
        check_linear(cell, step)
    return cell


def _tuple_shapes(param_shapes: Callable) -> Callable:
    """``param_shapes`` whose shapes are tuples of ints, as every check compares them (a user's
    lists, ``[3, 4]``, would later fail against the arrays' ``(3, 4)``); anything else is passed on
    for :func:`check_cell` to name."""

    def shapes(input_size, hidden_size):
        found = param_shapes(input_size, hidden_size)
        if not isinstance(found, dict):
            return found
        return {k: tuple(int(d) for d in v) if isinstance(v, (list, tuple)) and
                all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in v) else v
                for k, v in found.items()}

    return shapes


def register_cell(cell: Cell) -> Cell:
    """Make ``cell`` (from :func:`custom_cell`) usable by its name everywhere a built-in's is; a
    name already taken (a built-in's included) is a ``ValueError``."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a cell record from custom_cell, got {type(cell).__name__}")
    if cell.name in CELLS:
        raise ValueError(f"cell {cell.name!r}: already registered (registered cells: {sorted(CELLS)}); "
                         "give the new cell another name")
    CELLS[cell.name] = cell
    return cell


def _library_step(step: Callable) -> Callable:
    """The record's step: ``(new_carry, residuals = x)`` from the user's ``step`` of the raw input."""

    def library_step(params, carry, x):
        return tuple(step(params, carry, x)), x

    return library_step


def _library_backward(step: Callable, backward: Callable | None) -> Callable:
    """The record's local backward: ``(dzx = dx, dzh_part = dparams, dcarry_prev)``, from the
    user's ``backward`` or from ``jax.vjp`` of ``step`` at the step's own inputs."""

    def library_backward(params, carry_prev, carry, x, dcarry):
        if backward is None:
            _, vjp = jax.vjp(lambda p, c, xx: tuple(step(p, c, xx)), params, tuple(carry_prev), x)
            dparams, dprev, dx = vjp(tuple(dcarry))
        else:
            dparams, dprev, dx = backward(params, tuple(carry_prev), x, tuple(dcarry))
        return dx, dparams, tuple(dprev)

    return library_backward


def _summed_param_grads(xs, h_prev, dzx, dparams):
    """The steps' parameter gradients (each leaf ``(steps, ...)``) summed over the steps."""
    return jax.tree.map(lambda g: jnp.sum(g, axis=0), dparams)


def _no_dzh(dzx, dzh_part):
    raise ValueError("a user cell has no recurrent pre-activation dZh")


def check_cell(cell: Cell, step: Callable, backward: Callable | None) -> None:
    """Check ``init``, ``step`` and ``backward`` on the probe's shapes (abstractly: nothing runs),
    raising a ``ValueError`` that names the cell and the first array of the wrong shape."""
    batch, inputs, hidden = PROBE["batch"], PROBE["input_size"], PROBE["hidden_size"]
    dtype = jnp.float32
    shapes = cell.param_shapes(inputs, hidden)
    if not isinstance(shapes, dict) or not shapes:
        raise ValueError(f"cell {cell.name!r}: param_shapes: expected a dict of names to shapes, got {shapes!r}")
    params = {k: jax.ShapeDtypeStruct(tuple(v), dtype) for k, v in shapes.items()}
    for probe in (dtype, jnp.float16):  # a second dtype: an init that ignores its dtype argument is named here
        made = jax.eval_shape(lambda k, d=probe: cell.init(k, inputs, hidden, d), jax.random.key(0))
        _same(cell, "init", "params", made, {k: jax.ShapeDtypeStruct(v.shape, probe) for k, v in params.items()})
    carry = tuple(jax.ShapeDtypeStruct((batch, hidden), dtype) for _ in range(cell.carry_size))
    x = jax.ShapeDtypeStruct((batch, inputs), dtype)
    new = jax.eval_shape(step, params, carry, x)
    if not isinstance(new, (tuple, list)):
        raise ValueError(f"cell {cell.name!r}: step: expected a tuple of {cell.carry_size} carry arrays, got "
                         f"{_describe(new)}")
    _same(cell, "step", "carry", tuple(new), carry)
    if backward is not None:
        found = jax.eval_shape(backward, params, carry, x, carry)
        if not isinstance(found, (tuple, list)) or len(found) != 3:
            raise ValueError(f"cell {cell.name!r}: backward: expected (dparams, dcarry_prev, dx), got "
                             f"{_describe(found)}")
        _same(cell, "backward", "dparams", found[0], params)
        _same(cell, "backward", "dcarry_prev", tuple(found[1]) if isinstance(found[1], (tuple, list)) else found[1],
              carry)
        _same(cell, "backward", "dx", found[2], x)


def check_linear(cell: Cell, step: Callable) -> None:
    """``linear``'s ``(a, b)`` have the carry's shape and ``a * h + b`` equals ``step`` on the probe
    (random float32 params, state and input, run eagerly; rtol 1e-4), else a ``ValueError`` naming
    the cell."""
    batch, inputs, hidden = PROBE["batch"], PROBE["input_size"], PROBE["hidden_size"]
    carry = (jax.ShapeDtypeStruct((batch, hidden), jnp.float32),)
    params = {k: jax.ShapeDtypeStruct(tuple(v), jnp.float32) for k, v in cell.param_shapes(inputs, hidden).items()}
    found = jax.eval_shape(cell.linear, params, jax.ShapeDtypeStruct((batch, inputs), jnp.float32))
    if len(found) != 2:
        raise ValueError(f"cell {cell.name!r}: linear: expected (a, b), got {_describe(found)}")
    _same(cell, "linear", "(a, b)", found, carry * 2)
    rng = np.random.default_rng(0)
    draw = {k: np.asarray(rng.uniform(-1.0, 1.0, v.shape), np.float32) for k, v in params.items()}
    h, x = (np.asarray(rng.uniform(-1.0, 1.0, shape), np.float32) for shape in ((batch, hidden), (batch, inputs)))
    a, b = (np.asarray(v, np.float64) for v in cell.linear(draw, x))
    stepped = np.asarray(tuple(step(draw, (h,), x))[0], np.float64)
    if not np.allclose(stepped, a * h + b, rtol=1e-4, atol=1e-5):
        raise ValueError(f"cell {cell.name!r}: linear: expected a * h + b to equal step(params, (h,), x) on the probe, "
                         f"got a largest difference of {np.max(np.abs(stepped - (a * h + b))):.3g}")


def _same(cell: Cell, fn: str, what: str, found, expected) -> None:
    """``found`` has ``expected``'s structure, shapes and dtypes, else a ``ValueError`` naming the array."""
    if jax.tree.structure(found) != jax.tree.structure(expected):
        raise ValueError(f"cell {cell.name!r}: {fn}: {what}: expected the structure {_describe(expected)}, got "
                         f"{_describe(found)}")
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(found), jax.tree.leaves(expected)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"cell {cell.name!r}: {fn}: {what}{jax.tree_util.keystr(path)}: expected "
                             f"{b.dtype}{list(b.shape)} (probe: batch {PROBE['batch']}, input {PROBE['input_size']}, "
                             f"hidden {PROBE['hidden_size']}), got {a.dtype}{list(a.shape)}")


def _describe(tree) -> str:
    return str(jax.tree.map(lambda a: f"{a.dtype}{list(a.shape)}" if hasattr(a, "shape") else repr(a), tree))
