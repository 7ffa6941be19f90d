"""Online gradients through time: the gradient of :func:`~perceptron1_jax.loss` computed forward
in time, beside the explicit BPTT, without keeping the history (memory independent of T).

The network is a single recurrent layer (any cell, built-in or registered) with a softmax readout,
as :func:`~perceptron1_jax.bptt`. Write ``s_t`` for the carry after step t (``(h, c)`` for the
LSTM, flattened per example to ``S = carry_size * H`` numbers) and ``theta`` for the cell's
parameters (flattened, ``P`` numbers). The step is ``s_t = f(theta, s_{t-1}, x_t)`` (the library's
own :func:`~perceptron1_jax.scan.forward_step`: lengths hold the carry, resets zero it), with

    J_s(t) = d f / d s_{t-1}   (S, S)          J_theta(t) = d f / d theta   (S, P)

taken by forward-mode differentiation of the step, so every cell has them. Exact real-time
recurrent learning (RTRL, Williams & Zipser 1989) carries the influence ``M_t = d s_t / d theta``
(``(S, P)`` per example) forward:

    M_t = J_s(t) M_{t-1} + J_theta(t),      M_0 = 0 (h0 is a constant)
    dL/dtheta = sum_t (dL_t/ds_t) M_t       (dL_t/ds_t: the loss at step t through the readout only)

and the readout's gradient is the usual ``sum_t h_t^T dL/dlogits_t``. The methods approximate M:

- ``"rtrl"``: exact, equal to BPTT (tested at rtol 1e-9). Memory ``B S P``: ``O(B H^3)`` for a
  gated cell (``H^4`` over the batch's examples: refused beyond what fits, with the figure).
- ``"snap1"``: SnAp-1 (Menick et al. 2021): ``M_t = Pattern * (J_s M_{t-1} + J_theta)``, the
  influence kept only on the state units a parameter touches directly in one step (``Pattern``:
  the structural non-zeros of ``J_theta``). Exact for recurrences whose ``J_s`` is diagonal
  (minGRU, minLSTM, a user cell declaring ``linear=``, IndRNN-like cells): element-wise RTRL.
- ``"eprop"``: e-prop's eligibility traces (Bellec et al. 2020): as SnAp-1, but only the cell's
  internal carries (all but ``h``: the LSTM's ``c``) pass influence from one step to the next,
  ``M_t = Pattern * (J_s[:, internal] M_{t-1}[internal] + J_theta)``; ``h`` is the unit's
  observable output, whose dependence through the recurrent weights is dropped (for a cell whose
  carry is ``h`` alone the trace is one step deep). The learning signal is the immediate
  ``dL_t/dh_t``, through the readout's weights (``feedback="symmetric"``) or through a fixed random
  matrix (``feedback="random"``, RFLO-style, Murray 2019; needs ``key``).
- ``"uoro"``: Unbiased Online Recurrent Optimization (Tallec & Ollivier 2018): ``M_t`` is estimated
  per example by a rank-one ``s~ theta~^T`` with random signs ``nu`` at every step,

      s~ <- rho0 J_s s~ + rho1 nu,    theta~ <- theta~ / rho0 + (nu^T J_theta) / rho1,
      rho0 = sqrt(|theta~| / |J_s s~|),  rho1 = sqrt(|nu^T J_theta| / |nu|),

  whose expectation over ``nu`` is ``M_t`` (unbiased; tested over 4096 keys). Needs ``key``.

At ``T = 1`` every method is exact (``M_1 = J_theta``); at ``T > 1`` the approximate ones differ
from BPTT (tested, so that a method falling back to BPTT is caught). This implementation forms
``J_s`` and ``J_theta`` in full at every step (``S`` and ``P`` forward-mode passes): it computes
what each method computes, not yet at each method's own cost (SnAp-1 and e-prop can be
``O(P)`` per step, UORO ``O(P)``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from perceptron1_jax import losses, validate
from perceptron1_jax.cells import CELLS
from perceptron1_jax.scan import forward_step

METHODS = ("rtrl", "snap1", "eprop", "uoro")
FEEDBACK = ("symmetric", "random")
MAX_INFLUENCE_BYTES = 4 << 30  # the influence of exact RTRL (B * S * P numbers) beyond this is refused
_EPS = 1e-7  # UORO's rho0 and rho1 stay finite when a norm is 0


def online_grad(params, xs, labels, cell: str, lengths=None, h0=None, *, method: str, key=None, resets=None,
                feedback: str = "symmetric"):
    """``(value, grads)`` of :func:`~perceptron1_jax.loss`, as :func:`~perceptron1_jax.bptt`
    returns them, computed forward in time by ``method`` (see the module doc).

    Args:
      params, xs, labels, cell, lengths, h0, resets: as :func:`~perceptron1_jax.bptt`
        (``xs: (batch, time, input)``; labels ``(batch,)`` many-to-one or ``(batch, time)``).
      method: ``"rtrl"``, ``"snap1"``, ``"eprop"`` or ``"uoro"``.
      key: a ``jax.random`` key: UORO's random signs, e-prop's random feedback matrix.
      feedback: e-prop's learning signal: ``"symmetric"`` (the readout's weights) or ``"random"``.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback: expected one of {list(FEEDBACK)}, got {feedback!r}")
    if feedback == "random" and method != "eprop":
        raise ValueError(f"feedback: expected 'symmetric' for method {method!r} (random feedback is e-prop's), "
                         "got 'random'")
    needs_key = method == "uoro" or feedback == "random"
    if needs_key and key is None:
        raise ValueError(f"key: expected a jax.random key for method {method!r} "
                         f"({'its random signs' if method == 'uoro' else 'its random feedback matrix'}), got None")
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True, resets=resets)
    batch, _, input_size = c.xs.shape
    sizes = (c.cell.carry_size * c.sizes.hidden_size, ravel_pytree(params["cell"])[0].size)
    if method == "rtrl":
        _check_influence_fits(batch, *sizes, jnp.dtype(c.sizes.dtype))
    pattern = None if method in ("rtrl", "uoro") else immediate_pattern(c.cell.name, input_size,
                                                                        c.sizes.hidden_size, str(c.sizes.dtype))
    return _online(params, c.xs, c.labels, c.lengths, c.carry0, c.resets, key, pattern, cell=c.cell.name,
                   method=method, feedback=feedback)


def _check_influence_fits(batch: int, state: int, params: int, dtype) -> None:
    needed = batch * state * params * dtype.itemsize
    if needed > MAX_INFLUENCE_BYTES:
        raise ValueError(f"method: exact RTRL's influence needs batch {batch} x state {state} x params {params} x "
                         f"{dtype.itemsize} bytes = {needed / 2**30:.1f} GiB, over the {MAX_INFLUENCE_BYTES >> 30} GiB "
                         "allowed: use a smaller batch or hidden size, or an approximation (snap1, eprop, uoro)")


def _step_fn(cell_name: str, unravel, hidden: int, carry_size: int):
    """``f(theta, s, x, valid, reset) -> s'`` for one example: ``s: (S,)`` the flattened carry."""
    cell = CELLS[cell_name]

    def step(theta, s, x, valid, reset):
        carry = tuple(part[None] for part in jnp.split(s, carry_size))
        new, _ = forward_step(cell, unravel(theta), carry, x[None], valid[None], reset[None])
        return jnp.concatenate([part[0] for part in new])

    return step


@functools.lru_cache(maxsize=64)
def immediate_pattern(cell_name: str, input_size: int, hidden: int, dtype: str) -> np.ndarray:
    """``(S, P)`` bool: which state entries each parameter changes directly in one step (the
    structural non-zeros of ``J_theta``, read at random parameters, carry and input, where no
    entry vanishes by accident)."""
    cell = CELLS[cell_name]
    rng = np.random.default_rng(0)
    shapes = cell.param_shapes(input_size, hidden)
    params = {name: jnp.asarray(rng.uniform(0.5, 1.0, shape) * rng.choice([-1, 1], shape), dtype)
              for name, shape in shapes.items()}
    theta, unravel = ravel_pytree(params)
    step = _step_fn(cell_name, unravel, hidden, cell.carry_size)
    s = jnp.asarray(rng.uniform(0.2, 0.9, cell.carry_size * hidden), dtype)
    x = jnp.asarray(rng.uniform(0.5, 1.0, input_size), dtype)
    jac = jax.jit(jax.jacfwd(step))(theta, s, x, jnp.bool_(True), jnp.bool_(False))
    return np.asarray(jac != 0)


@functools.partial(jax.jit, static_argnames=("cell", "method", "feedback"))
def _online(params, xs, labels, lengths, carry0, resets, key, pattern, *, cell, method, feedback):
    batch, time, _ = xs.shape
    readout = params["readout"]
    hidden = readout["W"].shape[0]
    carry_size = CELLS[cell].carry_size
    theta, unravel = ravel_pytree(params["cell"])
    step = _step_fn(cell, unravel, hidden, carry_size)
    dtype = readout["W"].dtype
    many_to_many = labels.ndim == 2
    valid = (jnp.ones((batch, time), bool) if lengths is None
             else jnp.arange(time, dtype=lengths.dtype)[None, :] < lengths[:, None])
    weights = losses.position_weights(labels, valid if many_to_many and lengths is not None else None, dtype)
    back = readout["W"] if feedback == "symmetric" else jax.random.normal(
        jax.random.fold_in(key, 1), readout["W"].shape, dtype) / jnp.sqrt(jnp.asarray(hidden, dtype))
    s0 = (jnp.zeros((batch, carry_size * hidden), dtype) if carry0 is None
          else jnp.concatenate(list(carry0), axis=-1).astype(dtype))
    no_resets = jnp.zeros((batch, time), bool) if resets is None else resets
    tracker = _TRACKERS[method](step, theta, pattern, carry_size, hidden)

    def signal(s, t):
        """``(loss_t, dlogits_t (B, C), dL_t/ds_t (B, S))`` of the readout at step t (many-to-many)."""
        value, dlogits = losses.weighted_cross_entropy_with_grad(s[:, :hidden] @ readout["W"] + readout["b"],
                                                                 labels[:, t], weights[:, t])
        return value, dlogits, _state_signal(dlogits @ back.T, carry_size)

    def body(state, inputs):
        s, influence, g_theta, g_w, g_b, value = state
        x_t, valid_t, reset_t, t = inputs
        new_s, influence = tracker.update(s, influence, x_t, valid_t, reset_t, jax.random.fold_in(key, t)
                                          if key is not None else None)
        if many_to_many:
            v, dlogits, ds = signal(new_s, t)
            g_theta = g_theta + tracker.gradient(ds, influence)
            g_w, g_b, value = g_w + new_s[:, :hidden].T @ dlogits, g_b + dlogits.sum(0), value + v
        return (new_s, influence, g_theta, g_w, g_b, value), None

    zero = jnp.zeros((), dtype)
    start = (s0, tracker.start(batch, dtype), jnp.zeros_like(theta), jnp.zeros_like(readout["W"]),
             jnp.zeros_like(readout["b"]), zero)
    inputs = (jnp.swapaxes(xs, 0, 1), valid.T, no_resets.T, jnp.arange(time))
    (s, influence, g_theta, g_w, g_b, value), _ = jax.lax.scan(body, start, inputs)
    if not many_to_many:  # the label is read at each sequence's last valid step: the final carry
        value, dlogits = losses.weighted_cross_entropy_with_grad(s[:, :hidden] @ readout["W"] + readout["b"],
                                                                 labels, weights)
        g_theta = g_theta + tracker.gradient(_state_signal(dlogits @ back.T, carry_size), influence)
        g_w, g_b = g_w + s[:, :hidden].T @ dlogits, g_b + dlogits.sum(0)
    return value, {"cell": unravel(g_theta), "readout": {"W": g_w, "b": g_b}}


def _state_signal(dh, carry_size: int):
    """``dL/ds (B, S)`` from ``dL/dh (B, H)``: the readout reads ``h`` only."""
    return jnp.concatenate([dh] + [jnp.zeros_like(dh)] * (carry_size - 1), axis=-1)


def _batched(fn):
    """``fn`` of one example, mapped over the batch (``theta`` shared)."""
    return jax.vmap(fn, in_axes=(None, 0, 0, 0, 0))


class _Influence:
    """Exact RTRL, SnAp-1 and e-prop: a full ``(B, S, P)`` influence, masked for the approximations."""

    def __init__(self, step, theta, pattern, carry_size, hidden, *, internal_only=False):
        self.step, self.theta, self.pattern = step, theta, pattern
        self.state_size, self.hidden, self.internal_only = carry_size * hidden, hidden, internal_only

    def start(self, batch, dtype):
        return jnp.zeros((batch, self.state_size, self.theta.size), dtype)

    def update(self, s, influence, x, valid, reset, key):
        j_theta, j_s = _batched(jax.jacfwd(self.step, argnums=(0, 1)))(self.theta, s, x, valid, reset)
        if self.internal_only:
            j_s = j_s.at[:, :, : self.hidden].set(0)  # only the internal carries pass influence on
        new = jnp.einsum("bij,bjp->bip", j_s, influence) + j_theta  # (B, S, P)
        if self.pattern is not None:
            new = jnp.where(self.pattern, new, jnp.zeros((), new.dtype))
        new = jnp.where(valid[:, None, None], new, influence)  # a padded step changes nothing
        return _batched(self.step)(self.theta, s, x, valid, reset), new

    @staticmethod
    def gradient(ds, influence):
        return jnp.einsum("bs,bsp->p", ds, influence)


class _RankOne:
    """UORO: the influence of each example as ``s~ theta~^T``, ``((B, S), (B, P))``."""

    def __init__(self, step, theta, pattern, carry_size, hidden):
        self.step, self.theta, self.state_size = step, theta, carry_size * hidden

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


_TRACKERS = {
    "rtrl": _Influence,
    "snap1": _Influence,
    "eprop": functools.partial(_Influence, internal_only=True),
    "uoro": _RankOne,
}
