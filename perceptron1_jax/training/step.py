"""The jitted train step: the loss and gradients (explicit BPTT, or ``jax.grad`` for comparison)
with the batch split over a mesh, one optax update behind the non-finite guard, and the step's
metrics; the truncated-BPTT step (one update per window); and the devices a run uses."""

from __future__ import annotations

import functools
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from perceptron1_jax import losses
from perceptron1_jax.bptt import make_value_and_grad
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.model import evaluate
from perceptron1_jax.online import make_online_value_and_grad, run_online_updates
from perceptron1_jax.parallel import (
    check_direction_spec,
    check_mesh,
    direction_mesh,
    make_mesh,
    on_mesh,
    places_directions,
)
from perceptron1_jax.scan import time_mask
from perceptron1_jax.spec import ModelSpec, param_shapes
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.ingredients import run_optimizer
from perceptron1_jax.truncated import run_windows

# The fields of a config that the step's program depends on (with the model and the mesh): the
# gradient, the optimizer and its schedule, clipping, truncation. Runs that agree on them share one step.
STEP_FIELDS = ("grad", "gradient", "compute_dtype", "optimizer", "lr", "momentum", "clip", "clip_value", "weight_decay",
               "schedule", "steps", "warmup_steps", "tbptt_k1", "tbptt_k2", "online_every", "stream")


def batch_accuracy(spec: ModelSpec, outputs, labels, lengths=None):
    """Arg-max accuracy of batch-major ``outputs`` (valid steps only), or None for an MSE head."""
    if spec.loss != "cross_entropy":
        return None
    mask = time_mask(lengths, labels.shape[1]).T if spec.many_to_many and lengths is not None else None
    return losses.accuracy(outputs, labels, mask)


def clip_fired(grads, grad_norm, clip: float | None, clip_value: float | None):
    """Whether clipping changed the gradient: norm above the bound, or any entry above the value."""
    fired = jnp.asarray(False)
    if clip is not None:
        fired = fired | (grad_norm > clip)
    if clip_value is not None:
        biggest = jnp.max(jnp.stack([jnp.max(jnp.abs(g)) for g in jax.tree.leaves(grads)]))
        fired = fired | (biggest > clip_value)
    return fired


def all_finite(*trees) -> jax.Array:
    """Whether every float entry of ``trees`` is finite (a traced bool)."""
    leaves = [jnp.all(jnp.isfinite(a)) for t in trees for a in jax.tree.leaves(t)
              if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def guarded_update(optimizer, clip, clip_value, params, opt_state, grads, loss):
    """One optax update, applied only when it is finite: a step whose loss, gradients or new
    parameters hold NaN or inf leaves ``(params, opt_state)`` as they were (the non-finite guard).
    Returns ``(params, opt_state, grad_norm, clipped, finite)``."""
    grad_norm = optax.tree.norm(grads)
    updates, new_opt_state = optimizer.update(grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & all_finite(grads, new_params, new_opt_state)
    keep = partial(jax.tree.map, lambda new, old: jnp.where(finite, new, old))
    return (keep(new_params, params), keep(new_opt_state, opt_state), grad_norm,
            clip_fired(grads, grad_norm, clip, clip_value), finite)


def make_train_step(cfg: TrainConfig, optimizer: optax.GradientTransformation, spec: ModelSpec | None = None,
                    mesh: Mesh | None = None) -> Callable:
    """The jitted ``train_step(params, opt_state, batch, dropout_key=None) -> (params, opt_state, metrics)``.

    ``batch = (xs, labels)`` or ``(xs, labels, lengths)``; ``dropout_key`` the step's dropout key
    (None: no dropout); ``spec`` the model (default ``cfg.model_spec``); ``mesh`` the devices the
    batch is split over (:func:`perceptron1_jax.make_mesh`; default: every device). The same
    function runs on one device or many: the gradients of the batch's slices are combined into
    the global mean by one collective (:func:`perceptron1_jax.parallel.data_parallel`) and every
    device applies the same update to its copy of the parameters. ``metrics``: ``loss``,
    ``accuracy`` (classifiers), ``grad_norm`` (global norm before clipping), ``clipped``
    (whether clipping fired) and ``finite`` (whether the update was applied: a step with a
    non-finite loss, gradient or result leaves params and optimizer state unchanged).
    """
    spec = spec or cfg.model_spec
    mesh = make_mesh(jax.devices()) if mesh is None else mesh
    value_and_grad = on_mesh(run_value_and_grad(cfg, spec), spec, mesh)

    @jax.jit
    def train_step(params, opt_state, batch, dropout_key=None):
        check_mesh(mesh, batch[0].shape[0], "batch")  # at trace time: a clear error, not XLA's
        return update_step(cfg, spec, value_and_grad, optimizer, params, opt_state, batch, dropout_key)

    return train_step


def run_value_and_grad(cfg: TrainConfig, spec: ModelSpec) -> Callable:
    """The run's ``value_and_grad(params, xs, targets, key, lengths, resets)``: the online gradient
    ``cfg.gradient`` (:func:`perceptron1_jax.online.make_online_value_and_grad`; the key: UORO's
    signs), else ``cfg.grad``'s (:func:`perceptron1_jax.bptt.make_value_and_grad`; the key: dropout's)."""
    if cfg.gradient is not None:
        return make_online_value_and_grad(spec, cfg.gradient)
    return make_value_and_grad(spec, cfg.grad, compute_dtype=cfg.compute_dtype)


def update_step(cfg: TrainConfig, spec: ModelSpec, value_and_grad: Callable, optimizer, params, opt_state, batch,
                dropout_key=None):
    """One step of :func:`make_train_step` (traceable): ``(params, opt_state, metrics)`` after the
    loss and gradients of ``value_and_grad(params, xs, labels, dropout_key, lengths, resets)`` and one
    guarded update. ``cfg.clip``/``cfg.clip_value`` (and the ``optimizer`` built from ``cfg``)
    may hold traced scalars: a population member's, under ``vmap``."""
    xs, labels, lengths, resets = (*batch, None, None)[:4]
    loss, grads, outputs = value_and_grad(params, xs, labels, dropout_key, lengths, resets)
    params, opt_state, grad_norm, clipped, finite = guarded_update(optimizer, cfg.clip, cfg.clip_value, params,
                                                                   opt_state, grads, loss)
    metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped, "finite": finite}
    if spec.loss == "cross_entropy":
        metrics["accuracy"] = batch_accuracy(spec, outputs, labels, lengths)
    return params, opt_state, metrics


def make_truncated_step(cfg: TrainConfig, optimizer, spec: ModelSpec | None = None) -> Callable:
    """Like :func:`make_train_step` but one optax update per TBPTT(k1, k2) window
    (:func:`perceptron1_jax.run_windows` on the run's model; unidirectional layers, no dropout, no
    lengths)."""
    apply = jax.jit(partial(guarded_update, optimizer, cfg.clip, cfg.clip_value))
    return partial(truncated_update, cfg, spec or cfg.model_spec, optimizer, apply=apply)


def truncated_update(cfg: TrainConfig, spec: ModelSpec, optimizer, params, opt_state, batch, dropout_key=None, *,
                     apply: Callable | None = None):
    """One step of :func:`make_truncated_step` (traceable, as :func:`update_step`): an update per
    window by ``apply`` (default: :func:`guarded_update` of ``optimizer``, unjitted)."""
    apply = apply or partial(guarded_update, optimizer, cfg.clip, cfg.clip_value)
    xs, labels, _, resets = (*batch, None, None)[:4]
    holder = {"opt_state": opt_state, "norms": [], "clipped": [], "finite": []}

    def update(params, loss, grads):
        new, holder["opt_state"], norm, fired, finite = apply(params, holder["opt_state"], grads, loss)
        holder["norms"].append(norm)
        holder["clipped"].append(fired)
        holder["finite"].append(finite)
        return new

    params, results, _ = run_windows(params, xs, labels, spec, cfg.tbptt_k1, cfg.tbptt_k2, update=update,
                                     resets=resets)
    metrics = {
        "loss": jnp.mean(jnp.stack([loss for _, loss, _ in results])),
        "grad_norm": holder["norms"][-1],
        "clipped": jnp.any(jnp.stack(holder["clipped"])),
        "finite": jnp.all(jnp.stack(holder["finite"])),
    }
    if spec.loss == "cross_entropy":
        metrics["accuracy"] = evaluate(params, xs, labels, spec, resets=resets)["accuracy"]
    return params, holder["opt_state"], metrics


def make_online_step(cfg: TrainConfig, optimizer, spec: ModelSpec | None = None) -> Callable:
    """Like :func:`make_train_step` but an optax update every ``cfg.online_every`` steps along each
    batch's sequences by the online gradient ``cfg.gradient``, the state and the influence carried
    across the updates (:func:`perceptron1_jax.online_updates`; many-to-many, no lengths, one device).
    With ``cfg.stream`` they are carried from step to step too: ``train_step(params, opt_state,
    batch, key, stream) -> (params, opt_state, metrics, stream)``, ``stream`` an
    :class:`~perceptron1_jax.online.OnlineStream`."""
    step = partial(online_update, cfg, spec or cfg.model_spec, optimizer)
    if cfg.stream:
        return jax.jit(step)

    def train_step(params, opt_state, batch, key=None):
        return step(params, opt_state, batch, key)[:3]

    return jax.jit(train_step)


def online_update(cfg: TrainConfig, spec: ModelSpec, optimizer, params, opt_state, batch, key=None, stream=None):
    """One step of :func:`make_online_step` (traceable, as :func:`update_step`; ``key``: UORO's
    signs): ``(params, opt_state, metrics, stream)``. Without ``stream`` the batch's sequences are a
    stream that starts from zero state and influence, so a checkpoint between steps holds all there
    is; with it (a stream run's :class:`~perceptron1_jax.online.OnlineStream`) they go on from it,
    and the stream returned is where they ended, or ``stream`` unchanged when a non-finite update
    was skipped (its state would carry the non-finite values on)."""
    xs, labels, _, resets = (*batch, None, None)[:4]

    def update(params, opt_state, loss, grads):
        params, opt_state, norm, fired, finite = guarded_update(optimizer, cfg.clip, cfg.clip_value, params,
                                                                opt_state, grads, loss)
        return params, opt_state, {"loss": loss, "grad_norm": norm, "clipped": fired, "finite": finite}

    params, opt_state, records, ended = run_online_updates(params, xs, labels, spec, cfg.online_every, update,
                                                           opt_state, cfg.gradient, key, resets, stream=stream)
    finite = jnp.all(records["finite"])
    metrics = {"loss": jnp.mean(records["loss"]), "grad_norm": records["grad_norm"][-1],
               "clipped": jnp.any(records["clipped"]), "finite": finite}
    if spec.loss == "cross_entropy":
        metrics["accuracy"] = evaluate(params, xs, labels, spec, resets=resets)["accuracy"]
    if stream is not None:
        ended = jax.tree.map(lambda new, old: jnp.where(finite, new, old), ended, stream)
    return params, opt_state, metrics, ended


def run_step(cfg: TrainConfig, spec: ModelSpec, mesh: Mesh) -> tuple[optax.GradientTransformation, Callable]:
    """``(optimizer, step)`` of ``cfg``'s run: :func:`make_truncated_step` with ``tbptt_k1``,
    :func:`make_online_step` with ``online_every``, else :func:`make_train_step`. Runs that agree
    on :data:`STEP_FIELDS`, the model and the mesh get the same jitted step, so a process that
    trains many runs (a sweep, a test suite) traces and compiles each program once (the last 32
    are kept)."""
    return _shared_step(tuple(getattr(cfg, name) for name in STEP_FIELDS), spec, mesh)


@functools.lru_cache(maxsize=32)
def _shared_step(values: tuple, spec: ModelSpec, mesh: Mesh):
    cfg = TrainConfig(**dict(zip(STEP_FIELDS, values)))
    optimizer = run_optimizer(cfg)
    if cfg.tbptt_k1 is not None:
        return optimizer, make_truncated_step(cfg, optimizer, spec)
    if cfg.online_every is not None:
        return optimizer, make_online_step(cfg, optimizer, spec)
    return optimizer, make_train_step(cfg, optimizer, spec, mesh)


SPLIT_LIMIT_FLOP = 2**27
"""The default mesh on the host CPU splits a batch only while every layer direction's matrix work
per time step and device (:func:`step_matrix_flops`) stays at or below this (134 MFLOP).

Derived from the measurements in ``benchmarks/results/devices_*`` (2-core AMD EPYC, B64, two host
devices against one, ms per training step): splitting made the step 1.68x faster for the LSTM at
H128 (5 MFLOP per device and step), 1.46x for the GRU, 1.08x for Elman, 1.52x for the 2-layer
bidirectional LSTM at H128 (25 MFLOP), still 1.04x to 1.11x faster for the single-layer cells at
H512 (18 to 71 MFLOP), but 0.93x (slower) for the 2-layer bidirectional LSTM at H512 (201 MFLOP):
once one device's products are large, XLA:CPU already spreads them over the cores, and the split
only adds the gradient all-reduce. Accelerators and multi-process runs always split."""


def step_matrix_flops(spec: ModelSpec, batch: int) -> int:
    """The largest per-time-step matrix work of a layer direction for ``batch`` rows:
    ``2 * batch * sum(rows * cols)`` over its 2-D parameters (``x_t W_x`` and ``h W_h``)."""
    return max(2 * batch * sum(shape[0] * shape[1] for shape in direction.values() if len(shape) == 2)
               for layer in param_shapes(spec)["layers"] for direction in layer.values())


def default_device_count(spec: ModelSpec, batch: int, devices: int, platform: str, processes: int = 1) -> int:
    """How many of ``devices`` the default mesh splits a batch over (see :data:`SPLIT_LIMIT_FLOP`):
    all of them, except in one host CPU process whose split would give a device more than
    ``SPLIT_LIMIT_FLOP`` per step (a batch they do not divide stays refused by name)."""
    if platform != "cpu" or processes > 1 or devices == 1 or batch % devices:
        return devices
    return 1 if step_matrix_flops(spec, batch // devices) > SPLIT_LIMIT_FLOP else devices


PLACEMENTS = ("one device", "batch split", "directions")
"""Where a run's step runs: on one device, with its batch split over a ``"data"`` mesh, or with each
bidirectional layer's two directions on the two devices of a ``"direction"`` mesh."""


def default_placement(spec: ModelSpec, batch: int, devices: int, platform: str, processes: int = 1) -> str:
    """The default placement (:data:`PLACEMENTS`) of a run on ``devices``: ``"directions"`` where
    :data:`DIRECTIONS_RULE` holds, else the batch split over :func:`default_device_count` of them."""
    if (platform == "cpu" and processes == 1 and devices == 2 and all_bidirectional(spec)
            and (len(spec.layers) == 1 or batch <= DIRECTIONS_MAX_STACKED_BATCH)):
        return "directions"
    return "one device" if default_device_count(spec, batch, devices, platform, processes) == 1 else "batch split"


DIRECTIONS_MAX_STACKED_BATCH = 16
DIRECTIONS_RULE = ("every recurrent layer bidirectional (sequential scan), one layer or a batch of at most "
                   f"{DIRECTIONS_MAX_STACKED_BATCH}, two host CPU devices, one process")
"""Where the default placement puts each bidirectional layer's directions on the two devices.

Derived from ``benchmarks/results/placement_*`` (``python benchmarks/placement.py``; 2-core AMD EPYC,
two host devices, LSTM, T128, one training step with Adam). One bidirectional layer: placing the
directions beat splitting the batch at every size, H 64 to 512, B 16 and 64 (1.07x to 1.30x), and
again in two repeats at B64 H128 (1.04x, 1.06x). Two layers: at B16 it won by 1.04x to 1.23x; at
B64 the grid gave 1.03x to 1.08x, but repeats at H128 gave 0.96x and 0.99x, and ``perceptron1
bench --model`` 0.83x to 0.93x (three runs): a stacked model's output gather and ``dL/dx`` sum per
layer cost about what the halved batch saves there, so stacks with larger batches keep the split.
Models that mix in one-direction layers, more than two devices, accelerators and several
processes were not measured, and keep the batch split too."""


def all_bidirectional(spec: ModelSpec) -> bool:
    """Whether every recurrent layer of ``spec`` is bidirectional with the sequential scan: the
    layers a direction mesh places (:func:`perceptron1_jax.parallel.check_direction_spec`)."""
    return all(layer.bidirectional and layer.scan == "sequential" for layer in spec.layers)


def placement_of(mesh: Mesh) -> str:
    """The :data:`PLACEMENTS` entry of ``mesh``."""
    return "directions" if places_directions(mesh) else "one device" if mesh.size == 1 else "batch split"


def one_device_reason(cfg: TrainConfig) -> str | None:
    """Why ``cfg``'s step runs on one device (``"truncated BPTT (tbptt_k1)"``,
    ``"online learning (online_every)"``: several updates per step, one after the other), or None."""
    if cfg.tbptt_k1 is not None:
        return "truncated BPTT (tbptt_k1)"
    return "online learning (online_every)" if cfg.online_every is not None else None


def run_mesh(cfg: TrainConfig, mesh: Mesh | None = None, spec: ModelSpec | None = None) -> Mesh:
    """The devices a run's step runs on: ``mesh``; by default (:func:`default_placement`, given the
    run's ``spec``) every device (of every process) splitting the batch, one host CPU device where
    splitting was measured not to pay, or the two directions of each bidirectional layer on two
    host CPU devices where that was measured to pay; one device for truncated BPTT and for online
    updates (``online_every``). A ``ValueError`` names a ``batch_size`` that does not divide by the
    mesh, a multi-device mesh for those two, or a direction mesh for a model it cannot place."""
    single = one_device_reason(cfg)
    if single is not None:
        if mesh is not None and mesh.size > 1:
            raise ValueError(f"devices: {single} runs on one device, got a mesh of {mesh.size}")
        return make_mesh(jax.local_devices()[:1])
    if mesh is None:
        devices = jax.devices()
        placement = "batch split" if spec is None else default_placement(
            spec, cfg.batch_size, len(devices), devices[0].platform, jax.process_count())
        mesh = (direction_mesh(devices[:2]) if placement == "directions"
                else make_mesh(devices[:1] if placement == "one device" else devices))
    check_mesh(mesh, cfg.batch_size, "batch_size")
    if places_directions(mesh):
        check_direction_spec(spec or cfg.model_spec)
    return mesh


def gradient_agreement(cfg: TrainConfig, params, batch, spec: ModelSpec | None = None) -> float:
    """Max relative difference between the explicit BPTT and ``jax.grad`` gradients on a batch
    ``(xs, labels[, lengths[, resets]])``."""
    spec = spec or cfg.model_spec
    xs, labels, lengths, resets = (*batch, None, None)[:4]
    _, ours, _ = _jitted_value_and_grad(spec, "bptt")(params, xs, labels, None, lengths, resets)
    _, ref, _ = _jitted_value_and_grad(spec, "autodiff")(params, xs, labels, None, lengths, resets)
    return max_relative_error(ours, ref)


@functools.lru_cache(maxsize=32)
def _jitted_value_and_grad(spec: ModelSpec, grad: str) -> Callable:
    return jax.jit(make_value_and_grad(spec, grad))
