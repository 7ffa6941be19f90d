"""Data parallelism on ``jax.sharding``: a mesh with one axis named ``"data"``, and the explicit
BPTT of a batch split over it.

Under :func:`sharded_value_and_grad` every device runs the explicit backward on its slice of the
batch (``shard_map``; parameters replicated) and one ``psum`` combines the results. Each device
weights its mean loss and gradients by the number of units it scored: examples (many-to-one),
or valid (sequence, step) pairs (many-to-many), which differ between devices when the sequences
have different lengths. The result is the global mean, the same math as the unsharded call.
Dropout under a mesh draws each device's masks from ``fold_in(key, device index)``, so those
masks differ from the unsharded call's.

On one CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (set before JAX is imported)
gives N host devices.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from perceptron1_jax.bptt import explicit_model
from perceptron1_jax.model import scored_units
from perceptron1_jax.spec import ModelSpec

AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A :class:`jax.sharding.Mesh` with one axis ``"data"`` over ``devices`` (default: every
    local device)."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    return Mesh(np.asarray(devices), (AXIS,))


def check_mesh(mesh, batch: int) -> int:
    """The size of ``mesh``'s ``"data"`` axis; an error naming the mesh or the batch otherwise."""
    if not isinstance(mesh, Mesh) or AXIS not in mesh.axis_names:
        raise TypeError(f"mesh: expected a jax.sharding.Mesh with an axis named {AXIS!r} (make_mesh()), got {mesh!r}")
    size = mesh.shape[AXIS]
    if batch % size:
        raise ValueError(f"xs: expected a batch divisible by the {size} devices of the mesh's {AXIS!r} axis, "
                         f"got batch {batch}")
    return size


@partial(jax.jit, static_argnames=("spec", "mesh", "lean"))
def sharded_value_and_grad(params, xs, targets, lengths, dropout_key, spec: ModelSpec, mesh: Mesh,
                           lean: int | None = None):
    """``(loss, grads)`` of the explicit BPTT with the batch split over ``mesh``'s ``"data"`` axis
    (unchecked; see the module doc). ``xs: (batch, time, ...)`` with ``batch`` divisible by the axis."""

    def local(params, xs, targets, lengths, dropout_key):
        key = None if dropout_key is None else jax.random.fold_in(dropout_key, jax.lax.axis_index(AXIS))
        loss, grads, _ = explicit_model(params, xs, targets, spec, lengths, key, lean=lean)
        weight = scored_units(spec, xs, lengths).astype(loss.dtype)
        total, summed, units = jax.lax.psum((loss * weight, jax.tree.map(lambda g: g * weight, grads), weight), AXIS)
        return total / units, jax.tree.map(lambda g: g / units, summed)

    split = P(AXIS)
    # check_vma=False: the zero initial carries the scans start from are per-device values that the
    # varying-axis check would otherwise ask to be cast; the psum makes the outputs replicated.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), split, split, split, P()), out_specs=(P(), P()),
                         check_vma=False)(params, xs, targets, lengths, dropout_key)
