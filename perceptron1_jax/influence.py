"""How each online method carries the influence ``M_t = d s_t / d theta`` forward one step (see
:mod:`perceptron1_jax.online` for the methods and their equations). Three trackers, each with
``start(batch, dtype)``, ``update(s, influence, x, valid, reset, key) -> (s, influence)`` and
``gradient(ds, influence) -> (P,)`` (``sum_t (dL_t/ds_t) M_t``'s term):

- :class:`Dense`: exact RTRL, and SnAp-1 and e-prop for any model, with a full ``(B, S, P)``
  influence (masked by the pattern for the approximations) and ``J_s``, ``J_theta`` row by row.
- :class:`Compact`: SnAp-1 and e-prop at their own cost for one layer of a built-in cell. A
  parameter's column feeds one unit, so its influence is kept on that unit's ``K`` carries alone
  (``(B, K, *shape)`` per parameter array, ``K P`` numbers per example where :class:`Dense` keeps
  ``S P``), and the step's Jacobians come from the cell's own hand-derived backward step.
- :class:`RankOne`: UORO's rank-one estimate.

Beside them, what they share: the state ``s`` of a stack (every layer's carries flattened per
example: :func:`state_parts`, :func:`observable`, :func:`stack_step`) and the patterns SnAp-1 and
e-prop keep (:func:`immediate_pattern`, :func:`compact_masks`), each read where no entry vanishes
by accident (:func:`pattern_point`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from perceptron1_jax.cells import BUILT_IN_CELLS, CELLS, project_inputs
from perceptron1_jax.model import init_model, step_forward
from perceptron1_jax.spec import ModelSpec

_EPS = 1e-7  # UORO's rho0 and rho1 stay finite when a norm is 0


class Dense:
    """Exact RTRL, SnAp-1 and e-prop: a full ``(B, S, P)`` influence, masked for the approximations."""

    def __init__(self, step, theta, pattern, observable, *, internal_only=False):
        self.step, self.theta, self.pattern = step, theta, pattern
        self.observable, self.internal_only = observable, internal_only

    def start(self, batch, dtype):
        return jnp.zeros((batch, self.observable.size, self.theta.size), dtype)

    def update(self, s, influence, x, valid, reset, key):
        def jacobians(s_b, x_b, valid_b, reset_b):
            """``J_theta`` and ``J_s`` row by row: ``S`` reverse-mode passes (one per state entry,
            ``O(S P)``, where ``P`` forward-mode passes cost ``O(P^2)``)."""
            new_s, pull = jax.vjp(lambda th, c: self.step(th, c, x_b, valid_b, reset_b), self.theta, s_b)
            j_theta, j_s = jax.vmap(pull)(jnp.eye(new_s.size, dtype=new_s.dtype))
            return new_s, j_theta, j_s

        new_s, j_theta, j_s = jax.vmap(jacobians)(s, x, valid, reset)
        if self.internal_only:  # only the internal carries pass influence on
            j_s = jnp.where(self.observable[None, None, :], jnp.zeros((), j_s.dtype), j_s)
        new = jnp.einsum("bij,bjp->bip", j_s, influence) + j_theta  # (B, S, P)
        if self.pattern is not None:
            new = jnp.where(self.pattern, new, jnp.zeros((), new.dtype))
        new = jnp.where(valid[:, None, None], new, influence)  # a padded step changes nothing
        return new_s, new

    @staticmethod
    def gradient(ds, influence):
        return jnp.einsum("bs,bsp->p", ds, influence)


def compact_applies(spec: ModelSpec, method: str) -> bool:
    """Whether :class:`Compact` carries ``method``'s influence for ``spec``: SnAp-1 or e-prop, one
    layer of a built-in cell, float inputs (an embedding row feeds every unit)."""
    return (method in ("snap1", "eprop") and len(spec.layers) == 1 and not spec.tokens
            and spec.layers[0].cell in BUILT_IN_CELLS)


class Compact:
    """SnAp-1 and e-prop for one layer of a built-in cell, at their own cost.

    Column ``c = g H + j`` of every parameter array (``W_x``, ``W_h``, biases: gate block ``g``,
    unit ``j``) feeds unit ``j`` alone within a step, so SnAp-1 keeps its influence on that unit's
    ``K`` carries (``K = 2`` for the LSTM's ``(h, c)``, else 1): ``M[k, ..., c]``. With the unit's
    one-step block ``D[k, k', j] = d s'_{k,j} / d s_{k',j}`` and the immediate ``I[k, ..., c]``
    (``d s'_{k,j} / d theta[..., c]``, zero outside the pattern),

        M'[k, ..., c] = Pattern[k, ..., c] * (sum_k' D[k, k', j] M[k', ..., c] + I[k, ..., c]),

    e-prop dropping ``D[k, h, j]`` (the observable ``h`` passes no influence on). Both come from
    ``K`` calls of the cell's backward step, one per carry with the seed ``dcarry = e_k`` on every
    unit at once (the cell is unit-wise given its pre-activations): it returns ``dzx``, the
    pre-activation gradients that give ``I`` through the cell's ``param_grads`` per example, and,
    called with ``W_h = 0``, the direct part of ``D``; the recurrent part of the diagonal is
    ``sum_g dzh[g, j] W_h[j, g H + j]``. Cost per step and example: the step's own ``O(P)``,
    ``K^2 P`` for the update; memory ``K P`` (dense: ``S P``, ``S^2 P``). Tested equal to
    :class:`Dense` with the pattern (float64, rtol 1e-10)."""

    def __init__(self, spec: ModelSpec, params, masks, *, internal_only=False):
        layer = spec.layers[0]
        self.cell, self.hidden, self.masks = CELLS[layer.cell], layer.hidden_size, masks
        self.params, self.internal_only = params["layers"][0]["fwd"], internal_only
        recurrent = self.params.get("W_h")  # None for the min cells
        # the step's direct part (W_h = 0) and the recurrent diagonal W_h[j, g H + j] (G, H), once per walk
        self.direct = self.params if recurrent is None else {**self.params, "W_h": jnp.zeros_like(recurrent)}
        self.diagonal = None if recurrent is None else jnp.diagonal(recurrent.reshape(self.hidden, -1, self.hidden),
                                                                    axis1=0, axis2=2)

    def start(self, batch, dtype):
        k = self.cell.carry_size
        return {name: jnp.zeros((batch, k, *a.shape), dtype) for name, a in self.params.items()}

    def _columns(self, per_unit):
        """``(..., H)`` per unit -> ``(..., G H)`` per column (each gate block the same)."""
        return jnp.tile(per_unit, (1,) * (per_unit.ndim - 1) + (self.cell.num_gates,))

    def local(self, carry, x):
        """``(new_carry, D (B, K, K, H), I {name: (B, K, *shape)})`` of one step from ``carry``."""
        cell, params, size = self.cell, self.params, self.cell.carry_size
        new_carry, residuals = cell.step(params, carry, project_inputs(cell, params, x))
        ones, zeros = jnp.ones_like(carry[0]), jnp.zeros_like(carry[0])
        per_example = jax.vmap(lambda *rows: cell.param_grads(*(None if r is None else r[None, None] for r in rows)))
        blocks, immediate = [], []
        for k in range(size):
            seed = tuple(ones if q == k else zeros for q in range(size))
            dzx, dzh_part, dprev = cell.backward_step(self.direct, carry, new_carry, residuals, seed)
            row = list(dprev)
            if self.diagonal is not None:  # the recurrent part of the diagonal: through W_h[j, g H + j]
                dzh = cell.full_dzh(dzx, dzh_part).reshape(dzx.shape[0], -1, self.hidden)
                row[0] = row[0] + jnp.sum(dzh * self.diagonal, axis=1)
            if self.internal_only:
                row[0] = jnp.zeros_like(row[0])
            blocks.append(jnp.stack(row, axis=1))
            immediate.append(per_example(x, carry[0], dzx, dzh_part))
        stacked = {name: jnp.stack([i[name] for i in immediate], axis=1) for name in params}
        return new_carry, jnp.stack(blocks, axis=1), stacked

    def update(self, s, influence, x, valid, reset, key):
        size, hidden = self.cell.carry_size, self.hidden
        kept = jnp.where(reset[:, None], jnp.zeros((), s.dtype), s)  # a reset step starts from the zero carry
        carry = tuple(kept[:, k * hidden:(k + 1) * hidden] for k in range(size))
        new_carry, blocks, immediate = self.local(carry, x)
        blocks = self._columns(jnp.where(reset[:, None, None, None], jnp.zeros((), s.dtype), blocks))
        new = {}
        for name, m in influence.items():
            # sum_k' D[k, k'] M[k']: K <= 2 elementwise products (an einsum lowers to many tiny dots)
            moved = jnp.stack([sum(_lift(blocks[:, k, q], m.ndim - 1) * m[:, q] for q in range(size))
                               for k in range(size)], axis=1) + immediate[name]
            moved = jnp.where(self.masks[name], moved, jnp.zeros((), m.dtype))
            new[name] = jnp.where(valid.reshape((-1,) + (1,) * (m.ndim - 1)), moved, m)
        new_s = jnp.where(valid[:, None], jnp.concatenate(new_carry, axis=-1), s)
        return new_s, new

    def gradient(self, ds, influence):
        per_column = self._columns(ds.reshape(ds.shape[0], self.cell.carry_size, self.hidden))  # (B, K, G H)
        grads = {name: jnp.sum(m * _lift(per_column, m.ndim), axis=(0, 1)) for name, m in influence.items()}
        return ravel_pytree({"layers": [{"fwd": grads}]})[0]


def _lift(a, ndim: int):
    """``(..., C)`` -> ``(..., 1, ..., 1, C)`` with ``ndim`` axes, to broadcast against an influence."""
    return a.reshape(a.shape[:-1] + (1,) * (ndim - a.ndim) + a.shape[-1:])


PATTERN_DRAWS = 2
"""A pattern is the structural non-zeros of a Jacobian, read where no entry vanishes by accident:
the union over this many draws of :func:`pattern_point`."""


def pattern_point(spec: ModelSpec, dtype: str, draw: int):
    """``(params, rng)``: random parameters for reading a pattern, every entry of magnitude 0.5 to 1
    with a random sign, a matrix's scaled by ``1/sqrt(rows)`` so that pre-activations stay of order
    one (a saturated gate's derivative is 0 in float32: at magnitude-one weights a GRU of 64 units
    lost 2 of its 192 columns). ``rng`` draws the state and input beside them."""
    rng = np.random.default_rng(draw)

    def draw_like(a):
        scale = 1.0 / np.sqrt(a.shape[0]) if a.ndim == 2 else 0.5
        return (rng.uniform(0.5, 1.0, a.shape) * rng.choice([-1, 1], a.shape) * scale).astype(dtype)

    # numpy arrays of the shapes alone: nothing to compile (an eager init compiles a program per shape)
    return jax.tree.map(draw_like, jax.eval_shape(lambda: init_model(jax.random.key(0), spec, jnp.dtype(dtype)))), rng


def _union_of_draws(spec: ModelSpec, dtype: str, read):
    """The structural non-zeros of ``read(params, rng, draw)`` (a tree of arrays) at each of the
    :data:`PATTERN_DRAWS` draws of :func:`pattern_point`, united: a tree of numpy bool arrays."""
    found = None
    for draw in range(PATTERN_DRAWS):
        params, rng = pattern_point(spec, dtype, draw)
        with jax.ensure_compile_time_eval():  # concrete also when first asked for inside a trace (a train step)
            seen = jax.tree.map(lambda a: np.asarray(a) != 0, read(params, rng, draw))
        found = seen if found is None else jax.tree.map(np.logical_or, found, seen)
    return found


def state_parts(spec: ModelSpec) -> list[tuple[int, int]]:
    """``(carry_size, hidden)`` of each layer: the state ``s`` is their carries, layer after layer."""
    return [(CELLS[layer.cell].carry_size, layer.hidden_size) for layer in spec.layers]


def state_size(spec: ModelSpec) -> int:
    """``S``: the numbers of ``s`` per example."""
    return sum(c * h for c, h in state_parts(spec))


def observable(spec: ModelSpec) -> np.ndarray:
    """``(S,)`` bool: the entries of ``s`` that are some layer's ``h`` (the rest: internal carries)."""
    flags = []
    for carry_size, hidden in state_parts(spec):
        flags += [True] * hidden + [False] * (carry_size - 1) * hidden
    return np.asarray(flags)


def stack_step(spec: ModelSpec, unravel, head):
    """``f(theta, s, x, valid, reset) -> s'`` for one example (``s: (S,)``): the stack's own step
    (:func:`~perceptron1_jax.model.step_forward`, ``unravel(theta)`` its recurrent parameters); a
    padded step (``valid`` False) holds the state."""
    parts = state_parts(spec)

    def step(theta, s, x, valid, reset):
        carries, at = [], 0
        for carry_size, hidden in parts:
            carries.append({"fwd": tuple(s[at + k * hidden: at + (k + 1) * hidden][None] for k in range(carry_size))})
            at += carry_size * hidden
        finals, _ = step_forward({**unravel(theta), "head": head}, tuple(carries), x[None], spec, reset[None])
        new = jnp.concatenate([part[0] for final in finals for part in final["fwd"]])
        return jnp.where(valid, new, s)

    return step


@functools.lru_cache(maxsize=64)
def immediate_pattern(spec: ModelSpec, dtype: str) -> np.ndarray:
    """``(S, P)`` bool: which state entries each parameter changes directly in one step (the
    structural non-zeros of ``J_theta``, columns in ``ravel_pytree`` order of the recurrent
    parameters), :data:`PATTERN_DRAWS` draws of :func:`pattern_point`."""

    @jax.jit  # one program for every draw
    def jacobian(params, s, x):  # {name: (S, *shape)}
        recurrent = {k: v for k, v in params.items() if k != "head"}
        step = stack_step(spec, lambda theta: theta, params["head"])
        return jax.jacfwd(step)(recurrent, s, x, jnp.bool_(True), jnp.bool_(False))

    def read(params, rng, draw):
        s = rng.uniform(0.2, 0.9, state_size(spec)).astype(dtype)
        x = (np.asarray((1 + draw) % spec.vocab_size, np.int32) if spec.tokens
             else rng.uniform(0.5, 1.0, spec.input_size).astype(dtype))
        return jacobian(params, s, x)

    found = _union_of_draws(spec, dtype, read)
    return np.concatenate([a.reshape(a.shape[0], -1) for a in jax.tree.leaves(found)], axis=1)


@functools.lru_cache(maxsize=64)
def compact_masks(spec: ModelSpec, dtype: str) -> dict:
    """``{name: (K, *shape) bool}``: :class:`Compact`'s pattern, the structural non-zeros of the
    immediate ``I`` (:data:`PATTERN_DRAWS` draws of :func:`pattern_point`), as
    :func:`immediate_pattern` reads the dense one."""
    layer = spec.layers[0]
    local = jax.jit(lambda p, c, x: Compact(spec, p, None).local(c, x)[2])  # one program for every draw

    def read(params, rng, draw):
        carry = tuple(rng.uniform(0.2, 0.9, (1, layer.hidden_size)).astype(dtype)
                      for _ in range(CELLS[layer.cell].carry_size))
        x = rng.uniform(0.5, 1.0, (1, spec.input_size)).astype(dtype)
        return {name: i[0] for name, i in local(params, carry, x).items()}

    return _union_of_draws(spec, dtype, read)


class RankOne:
    """UORO: the influence of each example as ``s~ theta~^T``, ``((B, S), (B, P))``."""

    def __init__(self, step, theta, pattern, observable):
        self.step, self.theta, self.state_size = step, theta, observable.size

    def start(self, batch, dtype):
        return jnp.zeros((batch, self.state_size), dtype), jnp.zeros((batch, self.theta.size), dtype)

    def update(self, s, influence, x, valid, reset, key):
        s_tilde, theta_tilde = influence
        nu = jax.random.rademacher(key, s_tilde.shape, s_tilde.dtype)

        def one(s_b, x_b, valid_b, reset_b, s_tilde_b, nu_b):
            new_s, j_s_tilde = jax.jvp(lambda c: self.step(self.theta, c, x_b, valid_b, reset_b), (s_b,),
                                       (s_tilde_b,))
            _, pull = jax.vjp(lambda th: self.step(th, s_b, x_b, valid_b, reset_b), self.theta)
            return new_s, j_s_tilde, pull(nu_b)[0]

        new_s, j_s_tilde, nu_j_theta = jax.vmap(one)(s, x, valid, reset, s_tilde, nu)
        norm = functools.partial(jnp.linalg.norm, axis=-1, keepdims=True)
        rho0 = jnp.sqrt((norm(theta_tilde) + _EPS) / (norm(j_s_tilde) + _EPS))
        rho1 = jnp.sqrt((norm(nu_j_theta) + _EPS) / (norm(nu) + _EPS))
        new_tilde = (rho0 * j_s_tilde + rho1 * nu, theta_tilde / rho0 + nu_j_theta / rho1)
        held = valid[:, None]  # a padded step changes nothing, its estimate included
        return new_s, tuple(jnp.where(held, n, o) for n, o in zip(new_tilde, influence))

    @staticmethod
    def gradient(ds, influence):
        s_tilde, theta_tilde = influence
        return jnp.einsum("b,bp->p", jnp.sum(ds * s_tilde, axis=-1), theta_tilde)


DENSE = {
    "rtrl": Dense,
    "snap1": Dense,
    "eprop": functools.partial(Dense, internal_only=True),
    "uoro": RankOne,
}
"""The tracker of each method where :class:`Compact` does not apply."""
