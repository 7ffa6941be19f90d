"""Online gradients through time: the gradient of :func:`~perceptron1_jax.loss` computed forward
in time, beside the explicit BPTT, without keeping the history (memory independent of T).

The network is a single recurrent layer (any cell, built-in or registered) with a softmax readout,
as :func:`~perceptron1_jax.bptt` (:func:`online_grad`), or a stack of one-direction layers with its
head, as :func:`~perceptron1_jax.model_bptt` (:func:`model_online_grad`). Write ``s_t`` for the
carries after step t (``(h, c)`` for the LSTM; every layer's, flattened per example to ``S``
numbers) and ``theta`` for the recurrent parameters (every parameter but the head's, flattened,
``P`` numbers). The step is ``s_t = f(theta, s_{t-1}, x_t)`` (the model's own
:func:`~perceptron1_jax.model.step_forward`: lengths hold the carry, resets zero it), with

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
from BPTT (tested, so that a method falling back to BPTT is caught). How the influence is carried
is :mod:`perceptron1_jax.influence`'s: for one layer of a built-in cell (float inputs) SnAp-1 and
e-prop keep a parameter's influence on the ``K`` carries of the unit it feeds, from the cell's own
backward step, at their papers' ``O(P)`` cost per step (``K P`` numbers per example); for stacks,
token inputs and user cells, and for exact RTRL, ``J_s`` and ``J_theta`` are formed in full at
every step (row by row, ``S`` reverse-mode passes: ``O(S P)`` per example) with a dense
``(B, S, P)`` influence, masked by the pattern for the approximations. UORO takes one forward-mode
and one reverse-mode pass per step (``O(P)``), its own cost.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from perceptron1_jax import influence, losses, validate
from perceptron1_jax.cells import CELLS
from perceptron1_jax.layers import head_forward
from perceptron1_jax.model import (
    as_model_params,
    batch_major,
    forward,
    from_model_params,
    init_model,
    single_carries0,
    single_layer_spec,
)
from perceptron1_jax.spec import ModelSpec

METHODS = ("rtrl", "snap1", "eprop", "uoro")
FEEDBACK = ("symmetric", "random")
MAX_INFLUENCE_BYTES = 4 << 30  # the influence of exact RTRL (B * S * P numbers) beyond this is refused


def _check_method(method: str, feedback: str, key) -> None:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    if feedback not in FEEDBACK:
        raise ValueError(f"feedback: expected one of {list(FEEDBACK)}, got {feedback!r}")
    if feedback == "random" and method != "eprop":
        raise ValueError(f"feedback: expected 'symmetric' for method {method!r} (random feedback is e-prop's), "
                         "got 'random'")
    if (method == "uoro" or feedback == "random") and key is None:
        raise ValueError(f"key: expected a jax.random key for method {method!r} "
                         f"({'its random signs' if method == 'uoro' else 'its random feedback matrix'}), got None")


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
    _check_method(method, feedback, key)
    c = validate.check_inputs(params, xs, cell, labels, lengths, h0, need_labels=True, resets=resets)
    spec = single_layer_spec(cell, c.sizes, c.many_to_many)
    value, grads = _run(as_model_params(params), c.xs, c.labels, spec, c.lengths, single_carries0(c.carry0),
                        c.resets, method, key, feedback)
    return value, from_model_params(grads)


def model_online_grad(params, xs, targets, spec: ModelSpec, lengths=None, *, method: str, key=None, resets=None,
                      carries0=None, feedback: str = "symmetric"):
    """``(value, grads)`` of :func:`~perceptron1_jax.model_loss` (without dropout), as
    :func:`~perceptron1_jax.model_bptt` returns them, computed forward in time by ``method`` for a
    stack of one-direction layers (tokens or floats, either head, many-to-one or many-to-many).

    The state is every layer's carry, ``theta`` every parameter but the head's (the embedding
    included), and the step the stack's own (:func:`~perceptron1_jax.model.step_forward`). Exact
    RTRL is exact for any stack, and SnAp-1 for stacks of diagonal recurrences (tested): a
    parameter of layer 1 touches the units of the layers above it within the same step, so its
    pattern keeps those rows. Arguments otherwise as :func:`online_grad`.
    """
    _check_method(method, feedback, key)
    c = validate.check_model_inputs(params, xs, spec, targets, lengths, None, need_targets=True, resets=resets,
                                    carries0=carries0)
    _check_one_direction(c.spec)
    return _run(params, c.xs, c.targets, c.spec, c.lengths, c.carries0, c.resets, method, key, feedback)


class OnlineStream(NamedTuple):
    """Where a stream stands between two calls of :func:`online_updates`: every layer's carry
    flattened per example ``state: (batch, S)``, the method's ``influence`` and the next step
    ``step`` (int32; UORO's signs at step t come from ``fold_in(key, t)``). A pytree: it can be
    saved with the parameters and passed back to go on."""

    state: jax.Array
    influence: Any
    step: jax.Array


def online_updates(params, xs, targets, spec: ModelSpec, *, every: int, update, carry, method: str, key=None,
                   resets=None, feedback: str = "symmetric", stream: OnlineStream | None = None):
    """True online learning (Williams & Zipser 1989): walk the sequences forward and update the
    parameters every ``every`` steps by the method's gradient of those steps' loss, carrying the
    state and the influence across the updates. The influence is not restarted at an update: what
    it gathered under earlier parameters is kept, as RTRL does online, so an update's gradient
    reaches back to the sequence's start (truncated BPTT's stops at the window's border).

    Args:
      params, xs, targets, spec, resets: as :func:`model_online_grad` for a many-to-many model
        (``targets`` at every step; no lengths); ``xs: (batch, time, ...)``.
      every: steps per update, a divisor of ``time``; update ``j`` scores the steps
        ``[j * every, (j + 1) * every)`` (their mean loss).
      update: ``update(params, carry, loss, grads) -> (params, carry, record)``, traceable: one
        update (an optax step; ``carry`` its state).
      carry: ``update``'s starting ``carry``.
      method, key, feedback: as :func:`model_online_grad`.
      stream: where a previous call's stream stood (its returned :class:`OnlineStream`): these steps go
        on from its state and influence, as if the two calls' sequences were one. None: a new
        stream from zero state and influence at step 0.

    Returns:
      ``(params, carry, records, stream)``: after the last update, ``records`` stacked over the
      ``time // every`` updates (a leading axis), and the :class:`OnlineStream` to go on from.
    """
    _check_method(method, feedback, key)
    c = validate.check_model_inputs(params, xs, spec, targets, None, None, need_targets=True, resets=resets)
    _check_one_direction(c.spec)
    if not c.spec.many_to_many:
        raise ValueError("spec: expected a many-to-many model (a target at every step to update on), got "
                         "many_to_many=False")
    time = c.xs.shape[1]
    validate.check_positive_int("every", every)
    if time % every:
        raise ValueError(f"every: expected a divisor of the sequence length {time}, got {every}")
    if stream is not None:
        _check_stream(stream, params, c.spec, method, c.xs.shape[0])
    return run_online_updates(params, c.xs, c.targets, c.spec, every, update, carry, method, key, c.resets,
                              feedback, stream)


def run_online_updates(params, xs, targets, spec: ModelSpec, every: int, update, carry, method: str, key=None,
                       resets=None, feedback: str = "symmetric", stream: OnlineStream | None = None):
    """:func:`online_updates` unchecked (traceable): the training step's with ``TrainConfig(online_every=...)``."""
    pattern, compact = _prepare(params, spec, method, xs.shape[0])
    return _updates(params, carry, xs, targets, resets, key, pattern, stream, spec=spec, every=every, update=update,
                    method=method, feedback=feedback, compact=compact)


def start_stream(params, spec: ModelSpec, method: str, batch: int) -> OnlineStream:
    """A new :class:`OnlineStream` of ``batch`` examples: zero state and influence at step 0, what
    :func:`online_updates` starts from without ``stream`` (and a stream training run at its first step)."""
    pattern, compact = _prepare(params, spec, method, batch)
    return _fresh_stream(params, spec, method, pattern, compact, batch, params["head"]["W"].dtype)


def _check_stream(stream, params, spec: ModelSpec, method: str, batch: int) -> None:
    """A ``ValueError`` naming a ``stream`` that is not what this call's walk carries."""
    expected = jax.eval_shape(lambda: start_stream(params, spec, method, batch))

    def shapes(tree):
        return jax.tree.map(lambda a: (np.shape(a), str(getattr(a, "dtype", type(a).__name__))), tree)

    given = shapes(stream) if isinstance(stream, OnlineStream) else repr(stream)
    if not isinstance(stream, OnlineStream) or jax.tree.structure(stream) != jax.tree.structure(expected) or \
            given != shapes(expected):
        raise ValueError(f"stream: expected the OnlineStream of a previous call with this model, method and batch "
                         f"({shapes(expected)}), got {given}")


def _fresh_stream(params, spec, method, pattern, compact, batch, dtype) -> OnlineStream:
    walk = _Walk(params, spec, method, "symmetric", pattern, None, compact)
    state, influence = walk.start(_start_state(spec, None, batch, dtype))
    return OnlineStream(state, influence, jnp.zeros((), jnp.int32))


@functools.partial(jax.jit, static_argnames=("spec", "every", "update", "method", "feedback", "compact"))
def _updates(params, carry, xs, targets, resets, key, pattern, stream, *, spec, every, update, method, feedback,
             compact):
    batch, time = xs.shape[:2]
    dtype = params["head"]["W"].dtype

    def chunks(a):  # (batch, time, ...) -> (time // every, batch, every, ...)
        return None if a is None else jnp.swapaxes(a.reshape(batch, time // every, every, *a.shape[2:]), 0, 1)

    weights = losses.position_weights(jnp.zeros((batch, every)), None, dtype)
    valid = jnp.ones((batch, every), bool)

    def body(state, inputs):
        params, carry, carried = state
        xs_j, targets_j, resets_j, t0 = inputs
        walk = _Walk(params, spec, method, feedback, pattern, key, compact)
        carried, loss, grads = walk(carried, xs_j, targets_j, weights, valid, resets_j, t0)
        params, carry, record = update(params, carry, loss, grads)
        return (params, carry, carried), record

    if stream is None:
        stream = _fresh_stream(params, spec, method, pattern, compact, batch, dtype)
    starts = stream.step + every * jnp.arange(time // every, dtype=jnp.int32)
    (params, carry, (state, influence)), records = jax.lax.scan(
        body, (params, carry, (stream.state, stream.influence)), (chunks(xs), chunks(targets), chunks(resets), starts))
    return params, carry, records, OnlineStream(state, influence, stream.step + time)


def _check_one_direction(spec: ModelSpec, name: str = "spec", why: str = "an online gradient") -> None:
    both = [k for k, layer in enumerate(spec.layers) if layer.bidirectional]
    if both:
        raise ValueError(f"{name}: expected one-direction layers for {why} (it cannot read the future), got "
                         f"a bidirectional layer {both[0]}")


def make_online_value_and_grad(spec: ModelSpec, method: str):
    """``fn(params, xs, targets, key=None, lengths=None, resets=None) -> (loss, grads, outputs)``
    (unchecked, traceable), as :func:`~perceptron1_jax.bptt.make_value_and_grad`'s: the gradient by
    ``method`` (symmetric feedback; ``key`` UORO's random signs), ``outputs`` the head's, batch-major,
    from the model's forward pass. The training step's gradient with ``TrainConfig(gradient=...)``."""

    def value_and_grad(params, xs, targets, key=None, lengths=None, resets=None):
        loss, grads = _run(params, xs, targets, spec, lengths, None, resets, method, key, "symmetric")
        return loss, grads, batch_major(spec, forward(params, xs, spec, lengths, resets=resets).outputs)

    return value_and_grad


def check_online_training(spec: ModelSpec, method: str, batch: int, dtype, every: int | None = None,
                          time: int | None = None, lengths: bool = False) -> None:
    """A ``ValueError`` naming what ``method`` cannot train: an unknown method, a bidirectional layer,
    dropout, an exact RTRL influence that would not fit (with the figure it needs); with an update
    every ``every`` steps (``online_every``), a many-to-one model, data with ``lengths``, or an
    ``every`` that does not divide the sequences' ``time``."""
    if method not in METHODS:
        raise ValueError(f"gradient: expected one of {list(METHODS)} or None, got {method!r}")
    _check_one_direction(spec, "gradient", f"the online gradient {method!r}")
    if spec.dropout:
        raise ValueError(f"dropout: expected 0 with the online gradient {method!r}, got {spec.dropout}")
    if every is not None and not spec.many_to_many:
        raise ValueError("online_every: expected a many-to-many task (a target at every step to update on), got "
                         "a many-to-one one, whose one target is read after the last step (leave online_every unset)")
    if every is not None and lengths:
        raise ValueError("online_every: expected sequences without lengths (every stretch of steps has targets to "
                         "update on), got data with lengths")
    if every is not None and time is not None and time % every:
        raise ValueError(f"online_every: expected a divisor of the sequence length {time}, got {every}")
    if method == "rtrl":
        shapes = jax.eval_shape(lambda: init_model(jax.random.key(0), spec, jnp.dtype(dtype)))
        params = sum(leaf.size for name, part in shapes.items() if name != "head" for leaf in jax.tree.leaves(part))
        _check_influence_fits(batch, influence.state_size(spec), params, jnp.dtype(dtype), "gradient")


def _run(params, xs, targets, spec, lengths, carries0, resets, method, key, feedback):
    pattern, compact = _prepare(params, spec, method, xs.shape[0])
    return _online(params, xs, targets, lengths, carries0, resets, key, pattern, spec=spec, method=method,
                   feedback=feedback, compact=compact)


def _prepare(params, spec: ModelSpec, method: str, batch: int):
    """``(pattern, compact)``: the method's pattern (SnAp-1's, e-prop's; None for the others) and
    whether :class:`~perceptron1_jax.influence.Compact` carries the influence (its pattern is then
    the compact one), after checking that exact RTRL's influence fits."""
    dtype = jnp.dtype(params["head"]["W"].dtype)
    if method == "rtrl":
        recurrent = sum(leaf.size for k, v in params.items() if k != "head" for leaf in jax.tree.leaves(v))
        _check_influence_fits(batch, influence.state_size(spec), recurrent, dtype)
    if influence.compact_applies(spec, method):
        return influence.compact_masks(spec, str(dtype)), True
    return (None if method in ("rtrl", "uoro") else influence.immediate_pattern(spec, str(dtype))), False


def _check_influence_fits(batch: int, state: int, params: int, dtype, name: str = "method") -> None:
    needed = batch * state * params * dtype.itemsize
    if needed > MAX_INFLUENCE_BYTES:
        raise ValueError(f"{name}: exact RTRL's influence needs batch {batch} x state {state} x params {params} x "
                         f"{dtype.itemsize} bytes = {needed / 2**30:.1f} GiB, over the {MAX_INFLUENCE_BYTES >> 30} GiB "
                         "allowed: use a smaller batch or hidden size, or an approximation (snap1, eprop, uoro)")


def _top(spec: ModelSpec) -> slice:
    """Where the top layer's ``h`` sits in ``s``."""
    start = influence.state_size(spec) - spec.layers[-1].hidden_size * CELLS[spec.layers[-1].cell].carry_size
    return slice(start, start + spec.layers[-1].hidden_size)


@functools.partial(jax.jit, static_argnames=("spec", "method", "feedback", "compact"))
def _online(params, xs, targets, lengths, carries0, resets, key, pattern, *, spec, method, feedback, compact):
    batch, time = xs.shape[:2]
    dtype = params["head"]["W"].dtype
    valid = (jnp.ones((batch, time), bool) if lengths is None
             else jnp.arange(time, dtype=lengths.dtype)[None, :] < lengths[:, None])
    weights = losses.position_weights(targets if spec.loss == "cross_entropy" else targets[..., 0],
                                      valid if spec.many_to_many and lengths is not None else None, dtype)
    walk = _Walk(params, spec, method, feedback, pattern, key, compact)
    _, value, grads = walk(walk.start(_start_state(spec, carries0, batch, dtype)), xs, targets, weights, valid,
                           resets, 0)
    return value, grads


def _start_state(spec: ModelSpec, carries0, batch: int, dtype):
    """``(B, S)``: every layer's starting carry, flattened (zeros where none is given)."""
    if carries0 is None:
        return jnp.zeros((batch, influence.state_size(spec)), dtype)
    return jnp.concatenate([part.astype(dtype) if given is not None else jnp.zeros((batch, hidden), dtype)
                            for given, (carry_size, hidden) in zip(carries0, influence.state_parts(spec))
                            for part in (given["fwd"] if given is not None else (None,) * carry_size)], axis=-1)


class _Walk:
    """Steps forward in time from ``(state, influence)`` at fixed parameters, summing the loss and
    the method's gradient: the whole sequence (:func:`online_grad`) or one stretch between two
    updates (:func:`online_updates`)."""

    def __init__(self, params, spec, method, feedback, pattern, key, compact=False):
        self.head, self.spec, self.key = params["head"], spec, key
        self.theta, self.unravel = ravel_pytree({k: v for k, v in params.items() if k != "head"})
        if compact:
            self.tracker = influence.Compact(spec, self.unravel(self.theta), pattern, internal_only=method == "eprop")
        else:
            self.tracker = influence.DENSE[method](influence.stack_step(spec, self.unravel, self.head), self.theta,
                                                   pattern, influence.observable(spec))
        self.back = self.head["W"] if feedback == "symmetric" else jax.random.normal(
            jax.random.fold_in(key, 1), self.head["W"].shape, self.head["W"].dtype) / jnp.sqrt(
            jnp.asarray(self.head["W"].shape[0], self.head["W"].dtype))

    def start(self, s0):
        """The carried ``(state, influence)`` at the stream's start: ``s0`` and no influence."""
        return s0, self.tracker.start(s0.shape[0], s0.dtype)

    def scored(self, s, target, weight):
        """The head at state ``s``: ``(loss, dL/dW, dL/db, dL/ds)``."""
        top = _top(self.spec)
        value, dout = losses.WEIGHTED[self.spec.loss](head_forward(self.head, s[:, top]), target, weight)
        ds = jnp.zeros_like(s).at[:, top].set(dout @ self.back.T)
        return value, s[:, top].T @ dout, dout.sum(0), ds

    def __call__(self, carried, xs, targets, weights, valid, resets, t0):
        """``(carried, loss, grads)`` after the steps ``xs: (batch, time, ...)``, the first of them
        the stream's step ``t0`` (UORO's signs at step t come from ``fold_in(key, t)``)."""
        spec, tracker = self.spec, self.tracker
        batch, time = xs.shape[:2]

        def body(state, inputs):
            (s, influence), g_theta, g_w, g_b, value = state
            x_t, valid_t, reset_t, t = inputs
            s, influence = tracker.update(s, influence, x_t, valid_t, reset_t,
                                          None if self.key is None else jax.random.fold_in(self.key, t))
            if spec.many_to_many:
                v, dw, db, ds = self.scored(s, targets[:, t - t0], weights[:, t - t0])
                g_theta, g_w, g_b, value = g_theta + tracker.gradient(ds, influence), g_w + dw, g_b + db, value + v
            return ((s, influence), g_theta, g_w, g_b, value), None

        no_resets = jnp.zeros((batch, time), bool) if resets is None else resets
        start = (carried, jnp.zeros_like(self.theta), jnp.zeros_like(self.head["W"]), jnp.zeros_like(self.head["b"]),
                 jnp.zeros((), self.theta.dtype))
        inputs = (jnp.swapaxes(xs, 0, 1), valid.T, no_resets.T, t0 + jnp.arange(time, dtype=jnp.int32))
        (carried, g_theta, g_w, g_b, value), _ = jax.lax.scan(body, start, inputs)
        if not spec.many_to_many:  # the target is read at each sequence's last valid step: the final state
            value, g_w, g_b, ds = self.scored(carried[0], targets, weights)
            g_theta = g_theta + tracker.gradient(ds, carried[1])
        return carried, value, {**self.unravel(g_theta), "head": {"W": g_w, "b": g_b}}
