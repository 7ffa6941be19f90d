"""Recurrent cells as pure functions: initializer, forward step and local backward step.

This is the only module where cell math lives. Each cell is a :class:`Cell` record of pure
functions over a plain parameter dict. The forward step is the single source of truth: the plain
autodiff path (``unroll``/``loss``) differentiates it with ``jax.grad``, and the hand-derived
``backward_step`` beside it is checked against that.

Shapes (``B`` batch, ``I`` input size, ``H`` hidden size, ``G`` gate blocks: 1 Elman, 4 LSTM,
3 GRU):

* ``params``: ``W_x: (I, G*H)``, ``W_h: (H, G*H)`` and biases, see each cell.
* ``carry``: a tuple, ``(h,)`` for Elman and GRU, ``(h, c)`` for the LSTM, each ``(B, H)``.
* ``zx``: the input projection ``x W_x + b_x`` of one step, ``(B, G*H)`` (:func:`project_inputs`;
  inside the time loop on CPU, for all steps before it on accelerators, see
  :func:`perceptron1_jax.scan.hoist_input_projection`), so the step only adds the recurrent term.

The step signature is ``step(params, carry, zx) -> (new_carry, residuals)``; ``residuals`` are the
extra per-step arrays (beyond the carries, which the unroll keeps anyway) that ``backward_step``
needs. ``backward_step(params, carry_prev, carry, residuals, dcarry) -> (dzx, dzh_part, dcarry_prev)``
maps the gradient of the loss with respect to the new carry to the gradients with respect to the
input pre-activation ``zx`` (``(B, G*H)``), the part of the recurrent pre-activation gradient
``dzh`` (``zh = h W_h (+ b_h)``) that differs from ``dzx`` (``None`` for Elman and LSTM, where
they coincide; the GRU's ``n`` block) and the previous carry. The weight gradients are then
formed by ``param_grads`` over blocks of steps, not per step: ``dW_x = X^T dZx``,
``dW_h = H_prev^T dZh`` with one row per (step, sequence) of the block.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Array]
Carry = tuple[Array, ...]


class Cell(NamedTuple):
    """A recurrent cell: static description plus pure functions (see the module docstring)."""

    name: str
    num_gates: int  # G: column blocks of W_x and W_h
    carry_size: int  # 1 for (h,), 2 for (h, c)
    input_bias: str  # the bias key folded into the input projection
    param_shapes: Callable[[int, int], dict[str, tuple[int, ...]]]
    init: Callable[..., Params]
    step: Callable[[Params, Carry, Array], tuple[Carry, Any]]
    backward_step: Callable[..., tuple[Array, Array | None, Carry]]
    param_grads: Callable[..., Params]  # (xs, h_prev, dzx, dzh_part) stacked over a block of steps -> grads
    full_dzh: Callable[[Array, Array | None], Array]  # (dzx, dzh_part) -> dzh, shape (..., G*H)
    projects: bool = True  # the step reads zx = x W_x + b; False: the raw input x (a user cell, zx = x)
    # A recurrence linear in h, h' = a * h + b: linear(params, zx) -> (a, b), each (B, H); None otherwise.
    # It opens LayerSpec(..., scan="associative") (perceptron1_jax.associative).
    linear: Callable[[Params, Array], tuple[Array, Array]] | None = None


def hidden_size_of(cell: Cell, params: Params) -> int:
    """``H`` of a cell's params (``W_x: (I, G*H)``; minGRU and minLSTM have no ``W_h``)."""
    return params["W_x"].shape[1] // cell.num_gates


def project_inputs(cell: Cell, params: Params, xs: Array) -> Array:
    """Input projection for every step at once: ``xs (..., I) -> xs W_x + b_x (..., G*H)`` (the
    inputs unchanged for a cell that reads its raw input)."""
    if not cell.projects:
        return xs
    return xs @ params["W_x"] + params[cell.input_bias]


def cell_step(cell: Cell, params: Params, carry: Carry, x: Array) -> Carry:
    """One full time step from a raw input ``x: (B, I)``; returns the new carry tuple."""
    new_carry, _ = cell.step(params, carry, project_inputs(cell, params, x))
    return new_carry


# --------------------------------------------------------------------------- initializers


def _block_orthogonal(key: Array, hidden: int, blocks: int, dtype) -> Array:
    """``(H, blocks*H)``: one independent orthogonal ``(H, H)`` matrix per gate block.

    The QR runs in at least float32 (LAPACK has no bfloat16/float16), then casts to ``dtype``.
    """
    keys = jax.random.split(key, blocks)
    ortho = jax.nn.initializers.orthogonal()
    work = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    return jnp.concatenate([ortho(k, (hidden, hidden), work) for k in keys], axis=1).astype(dtype)


def _init_common(key, input_size, hidden_size, blocks, dtype) -> tuple[Array, Array]:
    k_x, k_h = jax.random.split(key)
    w_x = jax.nn.initializers.lecun_normal()(k_x, (input_size, blocks * hidden_size), dtype)
    w_h = _block_orthogonal(k_h, hidden_size, blocks, dtype)
    return w_x, w_h


# --------------------------------------------------------------------------- Elman


def _elman_shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    return {"W_x": (input_size, hidden_size), "W_h": (hidden_size, hidden_size), "b": (hidden_size,)}


def _elman_init(key, input_size, hidden_size, dtype=jnp.float32) -> Params:
    """``W_x`` LeCun normal, ``W_h`` orthogonal, ``b`` zeros."""
    w_x, w_h = _init_common(key, input_size, hidden_size, 1, dtype)
    return {"W_x": w_x, "W_h": w_h, "b": jnp.zeros((hidden_size,), dtype)}


def _elman_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, tuple]:
    """Elman (tanh) step.

    Forward:  ``a = x W_x + b + h W_h``,  ``h' = tanh(a)``.
    Residuals: none (``h'`` is the carry, kept by the unroll).
    """
    (h,) = carry
    return (jnp.tanh(zx + h @ params["W_h"]),), ()


def _elman_backward(params: Params, carry_prev: Carry, carry: Carry, residuals, dcarry: Carry):
    """Elman backward (min-char-rnn's two lines).

    ``da = dh' * (1 - h'^2)``;  ``dzx = dzh = da``;  ``dh = da W_h^T``.
    """
    (h_new,) = carry
    (dh,) = dcarry
    da = dh * (1.0 - h_new * h_new)
    return da, None, (da @ params["W_h"].T,)


def _shared_param_grads(xs: Array, h_prev: Array, dzx: Array, dzh_part) -> Params:
    """Elman and LSTM (``dzh = dzx``): ``dW_x = X^T dZ``, ``dW_h = H_prev^T dZ``, ``db = sum dZ``,
    each one matmul over all (step, batch) rows of a block; arrays are ``(steps, B, ...)``."""
    return {
        "W_x": jnp.einsum("tbi,tbg->ig", xs, dzx),
        "W_h": jnp.einsum("tbh,tbg->hg", h_prev, dzx),
        "b": jnp.sum(dzx, axis=(0, 1)),
    }


def _same_dzh(dzx: Array, dzh_part) -> Array:
    return dzx


ELMAN = Cell(
    name="elman",
    num_gates=1,
    carry_size=1,
    input_bias="b",
    param_shapes=_elman_shapes,
    init=_elman_init,
    step=_elman_step,
    backward_step=_elman_backward,
    param_grads=_shared_param_grads,
    full_dzh=_same_dzh,
)


# --------------------------------------------------------------------------- LSTM


def _lstm_shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    g = 4 * hidden_size
    return {"W_x": (input_size, g), "W_h": (hidden_size, g), "b": (g,)}


def _lstm_init(key, input_size, hidden_size, dtype=jnp.float32) -> Params:
    """``W_x`` LeCun normal, each gate block of ``W_h`` orthogonal, ``b`` zeros except the
    forget-gate block, which is 1 (Jozefowicz et al. 2015)."""
    w_x, w_h = _init_common(key, input_size, hidden_size, 4, dtype)
    b = jnp.zeros((4 * hidden_size,), dtype).at[hidden_size : 2 * hidden_size].set(1.0)
    return {"W_x": w_x, "W_h": w_h, "b": b}


def _lstm_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Array]:
    """LSTM step, gate blocks ``[i, f, g, o]`` (PyTorch ``nn.LSTM`` order).

    Forward:  ``z = x W_x + b + h W_h``;  ``i, f, o = sigmoid(z_i, z_f, z_o)``, ``g = tanh(z_g)``;
    ``c' = f * c + i * g``;  ``h' = o * tanh(c')``.
    Residuals: the activated gates ``[i, f, g, o]``, ``(B, 4H)`` (``c`` and ``c'`` are carries).
    """
    h, c = carry
    z = zx + h @ params["W_h"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c_new = f * c + i * g
    h_new = o * jnp.tanh(c_new)
    return (h_new, c_new), jnp.concatenate([i, f, g, o], axis=-1)


def _lstm_backward(params: Params, carry_prev: Carry, carry: Carry, gates: Array, dcarry: Carry):
    """LSTM backward. With ``tc = tanh(c')`` and ``dh'``, ``dc'`` the incoming gradients:

    ``dc  = dc' + dh' * o * (1 - tc^2)``   (total gradient of the new cell state)
    ``dz_i = dc * g * i (1 - i)``,   ``dz_f = dc * c * f (1 - f)``,
    ``dz_g = dc * i * (1 - g^2)``,   ``dz_o = dh' * tc * o (1 - o)``,
    ``dzx = dzh = [dz_i, dz_f, dz_g, dz_o]``;  ``dh = dzh W_h^T``;  ``dc_prev = dc * f``.
    """
    _, c_prev = carry_prev
    _, c_new = carry
    dh, dc_next = dcarry
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    tc = jnp.tanh(c_new)
    dc = dc_next + dh * o * (1.0 - tc * tc)
    dz = jnp.concatenate(
        [
            dc * g * i * (1.0 - i),
            dc * c_prev * f * (1.0 - f),
            dc * i * (1.0 - g * g),
            dh * tc * o * (1.0 - o),
        ],
        axis=-1,
    )
    return dz, None, (dz @ params["W_h"].T, dc * f)


LSTM = Cell(
    name="lstm",
    num_gates=4,
    carry_size=2,
    input_bias="b",
    param_shapes=_lstm_shapes,
    init=_lstm_init,
    step=_lstm_step,
    backward_step=_lstm_backward,
    param_grads=_shared_param_grads,
    full_dzh=_same_dzh,
)


# --------------------------------------------------------------------------- GRU


def _gru_shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    g = 3 * hidden_size
    return {"W_x": (input_size, g), "W_h": (hidden_size, g), "b_x": (g,), "b_h": (g,)}


def _gru_init(key, input_size, hidden_size, dtype=jnp.float32) -> Params:
    """``W_x`` LeCun normal, each gate block of ``W_h`` orthogonal, biases zero except the
    update-gate block of ``b_x``, which is 1.

    The update gate ``z`` is the GRU's forget gate (``h' = z*h + (1-z)*n``); with a zero bias
    ``z = 0.5`` halves the memory at every step. Measured on the copy task at lag 50 (hidden 64,
    Adam 1e-3, clip 1): zero bias stays at chance after 2000 steps, bias 1 reaches 99% held-out
    accuracy by step 1700. It is the counterpart of the LSTM forget-gate bias of 1.
    """
    w_x, w_h = _init_common(key, input_size, hidden_size, 3, dtype)
    zeros = jnp.zeros((3 * hidden_size,), dtype)
    b_x = zeros.at[hidden_size : 2 * hidden_size].set(1.0)
    return {"W_x": w_x, "W_h": w_h, "b_x": b_x, "b_h": zeros}


def _gru_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, tuple[Array, Array]]:
    """GRU step, gate blocks ``[r, z, n]`` (PyTorch ``nn.GRU`` order and biases).

    Forward:  ``zh = h W_h + b_h``;  ``r = sigmoid(zx_r + zh_r)``,  ``z = sigmoid(zx_z + zh_z)``,
    ``n = tanh(zx_n + r * zh_n)``;  ``h' = (1 - z) * n + z * h``.
    Residuals: the activations ``[r, z, n]`` ``(B, 3H)`` and ``zh_n`` ``(B, H)``.
    """
    (h,) = carry
    zh = h @ params["W_h"] + params["b_h"]
    zx_r, zx_z, zx_n = jnp.split(zx, 3, axis=-1)
    zh_r, zh_z, zh_n = jnp.split(zh, 3, axis=-1)
    r = jax.nn.sigmoid(zx_r + zh_r)
    z = jax.nn.sigmoid(zx_z + zh_z)
    n = jnp.tanh(zx_n + r * zh_n)
    h_new = (1.0 - z) * n + z * h
    return (h_new,), (jnp.concatenate([r, z, n], axis=-1), zh_n)


def _gru_backward(params: Params, carry_prev: Carry, carry: Carry, residuals, dcarry: Carry):
    """GRU backward. With ``dh'`` the incoming gradient:

    ``dn_pre = dh' * (1 - z) * (1 - n^2)``,  ``dz_pre = dh' * (h - n) * z (1 - z)``,
    ``dr_pre = dn_pre * zh_n * r (1 - r)``;
    ``dzx = [dr_pre, dz_pre, dn_pre]``,  ``dzh = [dr_pre, dz_pre, r * dn_pre]``;
    ``dh = dh' * z + dzh W_h^T``. Only ``r * dn_pre`` (``(B, H)``) is returned as the recurrent
    part: the ``r`` and ``z`` blocks of ``dzh`` are those of ``dzx``, so the stacked per-step
    gradients take ``4H`` instead of ``6H`` per row.
    """
    (h_prev,) = carry_prev
    (dh,) = dcarry
    acts, zh_n = residuals
    r, z, n = jnp.split(acts, 3, axis=-1)
    dn_pre = dh * (1.0 - z) * (1.0 - n * n)
    dz_pre = dh * (h_prev - n) * z * (1.0 - z)
    dr_pre = dn_pre * zh_n * r * (1.0 - r)
    dzx = jnp.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    dzh_n = r * dn_pre
    dzh = jnp.concatenate([dr_pre, dz_pre, dzh_n], axis=-1)
    return dzx, dzh_n, (dh * z + dzh @ params["W_h"].T,)


def _gru_param_grads(xs: Array, h_prev: Array, dzx: Array, dzh_n: Array) -> Params:
    """``dW_x = X^T dZx``, ``db_x = sum dZx``; the ``r, z`` blocks of ``dW_h``/``db_h`` from ``dZx``,
    the ``n`` block from ``dZh_n`` (arrays ``(steps, B, ...)``)."""
    two = 2 * dzh_n.shape[-1]
    return {
        "W_x": jnp.einsum("tbi,tbg->ig", xs, dzx),
        "W_h": jnp.concatenate(
            [jnp.einsum("tbh,tbg->hg", h_prev, dzx[..., :two]), jnp.einsum("tbh,tbg->hg", h_prev, dzh_n)], axis=1
        ),
        "b_x": jnp.sum(dzx, axis=(0, 1)),
        "b_h": jnp.concatenate([jnp.sum(dzx[..., :two], axis=(0, 1)), jnp.sum(dzh_n, axis=(0, 1))]),
    }


def _gru_full_dzh(dzx: Array, dzh_n: Array) -> Array:
    return jnp.concatenate([dzx[..., : 2 * dzh_n.shape[-1]], dzh_n], axis=-1)


GRU = Cell(
    name="gru",
    num_gates=3,
    carry_size=1,
    input_bias="b_x",
    param_shapes=_gru_shapes,
    init=_gru_init,
    step=_gru_step,
    backward_step=_gru_backward,
    param_grads=_gru_param_grads,
    full_dzh=_gru_full_dzh,
)

# --------------------------------------------------------------------------- minGRU and minLSTM


def _min_shapes(blocks: int):
    def shapes(input_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
        return {"W_x": (input_size, blocks * hidden_size), "b": (blocks * hidden_size,)}

    return shapes


def _min_init(blocks: int):
    def init(key, input_size, hidden_size, dtype=jnp.float32) -> Params:
        """``W_x`` LeCun normal, ``b`` zeros (no recurrent matrix: the gates read ``x`` alone)."""
        w_x = jax.nn.initializers.lecun_normal()(key, (input_size, blocks * hidden_size), dtype)
        return {"W_x": w_x, "b": jnp.zeros((blocks * hidden_size,), dtype)}

    return init


def _mingru_gates(zx: Array) -> tuple[Array, Array]:
    """``(z, h~)`` of the blocks ``[z, h~]`` of ``zx``."""
    z_pre, candidate = jnp.split(zx, 2, axis=-1)
    return jax.nn.sigmoid(z_pre), candidate


def _mingru_linear(params: Params, zx: Array) -> tuple[Array, Array]:
    """``h' = a * h + b`` with ``a = 1 - z``, ``b = z * h~``."""
    z, candidate = _mingru_gates(zx)
    return 1.0 - z, z * candidate


def _mingru_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, tuple[Array, Array]]:
    """minGRU step (Feng et al. 2024, sequential mode), blocks ``[z, h~]`` of ``zx = x W_x + b``.

    Forward:  ``z = sigmoid(zx_z)``,  ``h~ = zx_h~``,  ``h' = (1 - z) * h + z * h~``: linear in ``h``,
    no matrix product in the time loop.  Residuals: ``(z, h~)``.
    """
    (h,) = carry
    z, candidate = _mingru_gates(zx)
    a, b = _mingru_linear(params, zx)
    return (a * h + b,), (z, candidate)


def _mingru_backward(params: Params, carry_prev: Carry, carry: Carry, residuals, dcarry: Carry):
    """minGRU backward, elementwise:

    ``dzx_z = dh' * (h~ - h) * z (1 - z)``,  ``dzx_h~ = dh' * z``,  ``dh = dh' * (1 - z)``.
    """
    (h_prev,) = carry_prev
    (dh,) = dcarry
    z, candidate = residuals
    dzx = jnp.concatenate([dh * (candidate - h_prev) * z * (1.0 - z), dh * z], axis=-1)
    return dzx, None, (dh * (1.0 - z),)


def _minlstm_gates(zx: Array) -> tuple[Array, Array, Array]:
    """``(f, i, h~)`` of the blocks ``[f, i, h~]`` of ``zx``."""
    f_pre, i_pre, candidate = jnp.split(zx, 3, axis=-1)
    return jax.nn.sigmoid(f_pre), jax.nn.sigmoid(i_pre), candidate


def _minlstm_linear(params: Params, zx: Array) -> tuple[Array, Array]:
    """``h' = a * h + b`` with ``a = f' = f / (f + i)``, ``b = i' * h~ = i h~ / (f + i)``."""
    f, i, candidate = _minlstm_gates(zx)
    total = f + i
    return f / total, i * candidate / total


def _minlstm_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, tuple[Array, Array, Array]]:
    """minLSTM step (Feng et al. 2024, sequential mode), blocks ``[f, i, h~]`` of ``zx = x W_x + b``.

    Forward:  ``f = sigmoid(zx_f)``,  ``i = sigmoid(zx_i)``,  ``h~ = zx_h~``,
    ``f' = f / (f + i)``,  ``i' = i / (f + i)``,  ``h' = f' * h + i' * h~``.  Residuals: ``(f, i, h~)``.
    """
    (h,) = carry
    a, b = _minlstm_linear(params, zx)
    return (a * h + b,), _minlstm_gates(zx)


def _minlstm_backward(params: Params, carry_prev: Carry, carry: Carry, residuals, dcarry: Carry):
    """minLSTM backward, elementwise, with ``s = f + i``:

    ``df' = dh' * h``,  ``di' = dh' * h~``;  ``df = (df' - di') * i / s^2``,  ``di = (di' - df') * f / s^2``;
    ``dzx_f = df * f (1 - f)``,  ``dzx_i = di * i (1 - i)``,  ``dzx_h~ = dh' * i / s``;  ``dh = dh' * f / s``.
    """
    (h_prev,) = carry_prev
    (dh,) = dcarry
    f, i, candidate = residuals
    total = f + i
    diff = (dh * h_prev - dh * candidate) / (total * total)
    dzx = jnp.concatenate([diff * i * f * (1.0 - f), -diff * f * i * (1.0 - i), dh * i / total], axis=-1)
    return dzx, None, (dh * f / total,)


def _input_param_grads(xs: Array, h_prev: Array, dzx: Array, dzh_part) -> Params:
    """minGRU and minLSTM (no ``W_h``): ``dW_x = X^T dZx``, ``db = sum dZx`` over a block of steps."""
    return {"W_x": jnp.einsum("tbi,tbg->ig", xs, dzx), "b": jnp.sum(dzx, axis=(0, 1))}


def _no_recurrent_matrix(dzx: Array, dzh_part) -> Array:
    """No ``zh = h W_h``: its gradient is zero (the recurrence is elementwise)."""
    return jnp.zeros_like(dzx)


def _min_cell(name: str, blocks: int, step, backward_step, linear) -> Cell:
    """A cell whose gates read ``x`` alone (``blocks`` column blocks of ``W_x``, no ``W_h``)."""
    return Cell(name=name, num_gates=blocks, carry_size=1, input_bias="b", param_shapes=_min_shapes(blocks),
                init=_min_init(blocks), step=step, backward_step=backward_step, param_grads=_input_param_grads,
                full_dzh=_no_recurrent_matrix, linear=linear)


MINGRU = _min_cell("mingru", 2, _mingru_step, _mingru_backward, _mingru_linear)
MINLSTM = _min_cell("minlstm", 3, _minlstm_step, _minlstm_backward, _minlstm_linear)


CELLS: dict[str, Cell] = {c.name: c for c in (ELMAN, LSTM, GRU, MINGRU, MINLSTM)}
BUILT_IN_CELLS = frozenset(CELLS)  # the cells above (register_cell adds user cells to CELLS, never these names)
