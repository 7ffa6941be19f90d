"""Placements on ``jax.sharding``: a mesh with one axis named ``"data"`` (the loss and gradients of
a batch split over it), or one named ``"direction"`` (the two directions of each bidirectional
layer on two devices, each with the whole batch), and the set-up of several devices and processes.

Under :func:`data_parallel` every device runs the backward (the explicit BPTT, or ``jax.grad``
for comparison) on its slice of the batch (``shard_map``; parameters replicated) and one ``psum``
combines the results. Each device weights its mean loss and gradients by the number of units it
scored: examples (many-to-one), or valid (sequence, step) pairs (many-to-many), which differ
between devices when the sequences have different lengths. The result is the global mean, the same
math as the unsharded call. With more than one device, dropout draws each device's masks from
``fold_in(key, device index)``, so those masks differ from the one-device call's.

Under :func:`direction_parallel` (a :func:`direction_mesh`), each bidirectional layer runs its
forward direction on the first device and its reverse direction on the second, both over the whole
batch (:func:`perceptron1_jax.layers.fused_forward` under ``shard_map``); the layer's output is
gathered once, and its ``dL/dx`` summed once in the backward. Every other piece (embedding, dropout,
one-direction layers, the head and the loss) runs on both devices alike. The math is the one-device
math: no sum is split, so no sum changes order.

Devices: on one CPU, :func:`use_cpu_devices` (before JAX starts its backend) or
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (before JAX is imported) gives N host
devices; the ``perceptron1`` command sets one per core itself (:func:`host_device_env`). Several
processes (hosts): :func:`initialize_distributed`, then a mesh over ``jax.devices()``, where
:func:`shard_batch` and :func:`replicate` build the global arrays from each process's part.
"""

from __future__ import annotations

import dataclasses
import os
import re
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from perceptron1_jax.layers import DIRECTION_AXIS, fold_dropout, fuses
from perceptron1_jax.model import scored_units
from perceptron1_jax.spec import ModelSpec

AXIS = "data"
DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"


def make_mesh(devices=None) -> Mesh:
    """A :class:`jax.sharding.Mesh` with one axis ``"data"`` over ``devices`` (default: every
    local device)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    return Mesh(np.asarray(devices), (AXIS,))


def direction_mesh(devices=None) -> Mesh:
    """A :class:`jax.sharding.Mesh` with one axis ``"direction"`` over two devices (default: the
    first two local devices): each bidirectional layer's forward direction on the first, its
    reverse direction on the second (:func:`direction_parallel`)."""
    devices = jax.local_devices()[:2] if devices is None else list(devices)
    if len(devices) != 2:
        raise ValueError(f"devices: expected two devices (one per direction), got {len(devices)}")
    return Mesh(np.asarray(devices), (DIRECTION_AXIS,))


def places_directions(mesh) -> bool:
    """Whether ``mesh`` places directions (a :func:`direction_mesh`) rather than splitting the batch."""
    return isinstance(mesh, Mesh) and DIRECTION_AXIS in mesh.axis_names


def check_direction_spec(spec: ModelSpec, name: str = "mesh") -> None:
    """A ``ValueError`` (naming ``name``) unless some layer of ``spec`` runs its two directions in one
    scan (bidirectional, sequential scan): the layers a :func:`direction_mesh` places."""
    if not any(fuses(layer, forms=dataclasses.replace(spec.forms, fused_directions=True)) for layer in spec.layers):
        kinds = ", ".join(f"{'bidirectional' if layer.bidirectional else 'one-direction'} {layer.scan}"
                          for layer in spec.layers)
        raise ValueError(f"{name}: a direction mesh places the two directions of bidirectional layers with the "
                         f"sequential scan on two devices; expected such a layer, got layers: {kinds}")


def check_mesh(mesh, batch: int, name: str = "xs") -> int:
    """How many slices ``mesh`` cuts a batch into: the size of its ``"data"`` axis, 1 for a
    :func:`direction_mesh`; an error naming the mesh or the batch (``name``) otherwise."""
    if places_directions(mesh):
        return 1
    if not isinstance(mesh, Mesh) or AXIS not in mesh.axis_names:
        raise TypeError(f"mesh: expected a jax.sharding.Mesh with an axis named {AXIS!r} (make_mesh()) or "
                        f"{DIRECTION_AXIS!r} (direction_mesh()), got {mesh!r}")
    size = mesh.shape[AXIS]
    if batch % size:
        raise ValueError(f"{name}: expected a batch divisible by the {size} devices of the mesh's {AXIS!r} axis, "
                         f"got batch {batch}")
    return size


def data_parallel(value_and_grad, spec: ModelSpec, mesh: Mesh):
    """``value_and_grad(params, xs, targets, dropout_key, lengths, resets) -> (loss, grads, outputs)``
    (any function of that signature, as :func:`perceptron1_jax.bptt.make_value_and_grad` makes)
    with the batch split over ``mesh``'s ``"data"`` axis: the same signature, the global mean
    loss and gradients (replicated), the batch-major ``outputs`` split like the batch.
    Traceable; the batch must divide by the axis."""
    size = mesh.shape[AXIS]

    def local(params, xs, targets, dropout_key, lengths, resets):
        weighted = _weighted_slice(value_and_grad, spec, size, jax.lax.axis_index(AXIS), params, xs, targets,
                                   dropout_key, lengths, resets)
        return (*_global_mean(jax.lax.psum(weighted[:3], AXIS)), weighted[3])

    split = P(AXIS)
    # check_vma=False: the zero initial carries the scans start from are per-device values that the
    # varying-axis check would otherwise ask to be cast; the psum makes loss and gradients replicated.
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), split, split, P(), split, split),
                            out_specs=(P(), P(), split), check_vma=False)

    def value_and_grad_split(params, xs, targets, dropout_key=None, lengths=None, resets=None):
        return sharded(params, xs, targets, dropout_key, lengths, resets)

    return value_and_grad_split


def direction_parallel(value_and_grad, spec: ModelSpec, mesh: Mesh):
    """``value_and_grad`` (the signature of :func:`data_parallel`'s) with each bidirectional layer's
    directions on the two devices of ``mesh`` (:func:`direction_mesh`), both over the whole batch;
    loss, gradients and outputs replicated. Traceable: the arguments are constrained to be
    replicated over ``mesh``, and the layers find it as the abstract mesh in context."""
    check_direction_spec(spec)
    everywhere = NamedSharding(mesh, P())

    def value_and_grad_directions(params, xs, targets, dropout_key=None, lengths=None, resets=None):
        params, xs, targets, lengths, resets = jax.lax.with_sharding_constraint(
            (params, xs, targets, lengths, resets), everywhere)
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return value_and_grad(params, xs, targets, dropout_key, lengths, resets)

    return value_and_grad_directions


def on_mesh(value_and_grad, spec: ModelSpec, mesh: Mesh):
    """``value_and_grad`` placed on ``mesh``: :func:`direction_parallel` for a :func:`direction_mesh`,
    else :func:`data_parallel`."""
    return (direction_parallel if places_directions(mesh) else data_parallel)(value_and_grad, spec, mesh)


def split_like_mesh(value_and_grad, spec: ModelSpec, size: int):
    """``value_and_grad`` computed as :func:`data_parallel` over ``size`` devices computes it,
    on one device: the batch cut into ``size`` consecutive slices (``vmap``), each slice's
    dropout masks drawn from ``fold_in(key, slice index)``, the weighted means combined. A
    population member split off on its own device trains exactly as the single run whose batch
    ``data_parallel`` splits over ``size`` devices (its dropout masks are those)."""

    def split(params, xs, targets, dropout_key, lengths, resets=None):
        def cut(a):
            return None if a is None else a.reshape(size, a.shape[0] // size, *a.shape[1:])

        weighted = jax.vmap(partial(_weighted_slice, value_and_grad, spec, size),
                            in_axes=(0, None, 0, 0, None, 0, 0))(jnp.arange(size), params, cut(xs), cut(targets),
                                                                 dropout_key, cut(lengths), cut(resets))
        outputs = weighted[3].reshape(-1, *weighted[3].shape[2:])
        return (*_global_mean(jax.tree.map(lambda a: jnp.sum(a, axis=0), weighted[:3])), outputs)

    return split


def _weighted_slice(value_and_grad, spec, size, index, params, xs, targets, dropout_key, lengths, resets=None):
    """One slice's ``(loss * w, grads * w, w, outputs)``, ``w`` the units it scores; its dropout
    masks from ``fold_in(key, index)`` when there is more than one slice."""
    if dropout_key is not None and size > 1:
        dropout_key = fold_dropout(dropout_key, index)
    loss, grads, outputs = value_and_grad(params, xs, targets, dropout_key, lengths, resets)
    weight = scored_units(spec, xs, lengths).astype(loss.dtype)
    return loss * weight, jax.tree.map(lambda g: g * weight, grads), weight, outputs


def _global_mean(sums):
    """``(loss, grads)`` from the summed ``(loss * w, grads * w, w)`` (gradients in their dtype)."""
    total, summed, units = sums
    return total / units, jax.tree.map(lambda g: (g / units).astype(g.dtype), summed)


def _global(tree, sharding: NamedSharding):
    """Arrays of ``tree`` placed with ``sharding``. One process: a device copy. Several: every
    process holds the same full values and gives each of its devices its part (no transfer
    between processes)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        if a is None:
            return None
        host = np.asarray(jax.device_get(a))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, tree)


def replicate(tree, mesh: Mesh):
    """Every array of ``tree`` (parameters, optimizer state) replicated over ``mesh``."""
    return _global(tree, NamedSharding(mesh, P()))


def shard_batch(batch, mesh: Mesh):
    """Every array of ``batch`` (leading axis: the batch) split over ``mesh``'s ``"data"`` axis (on
    every device of a :func:`direction_mesh`)."""
    return _global(batch, NamedSharding(mesh, P() if places_directions(mesh) else P(AXIS)))


def use_cpu_devices(count: int | None = None) -> int:
    """Give this process ``count`` host CPU devices (default: one per core it may run on), so
    ``make_mesh()`` spreads a batch over the cores. Call it before anything runs on JAX (it sets
    ``jax_num_cpu_devices``); returns the count. Accelerators are unaffected."""
    count = available_cores() if count is None else count
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected a positive int (host CPU devices), got {count!r}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as err:  # the backend already started
        raise RuntimeError(f"use_cpu_devices: call it before JAX runs anything ({err})") from err
    return count


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def host_device_env(env: dict) -> dict:
    """``env`` with one host device per core added to ``XLA_FLAGS``, unless it already sets a count
    (what the ``perceptron1`` command re-executes itself under)."""
    flags = env.get("XLA_FLAGS", "")
    if re.search(re.escape(DEVICE_COUNT_FLAG) + r"=", flags):
        return dict(env)
    return {**env, "XLA_FLAGS": f"{flags} {DEVICE_COUNT_FLAG}={available_cores()}".strip()}


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Join a multi-process run (:func:`jax.distributed.initialize`); on CPU, collectives go over
    gloo. ``None`` arguments come from the environment JAX reads (``JAX_COORDINATOR_ADDRESS``, a
    cluster's own variables such as SLURM's). Call it before anything runs on JAX."""
    for name, value in (("num_processes", num_processes), ("process_id", process_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    if num_processes == 0:
        raise ValueError("num_processes: expected at least 1, got 0")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id: expected 0 to {num_processes - 1} (num_processes {num_processes}), "
                         f"got {process_id}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)


def first_copy(tree):
    """Each array of ``tree`` as its first local copy (one device, no transfer): replicated
    parameters as plain single-device arrays, for evaluation and for the caller."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)
