"""A population's step: the run's own step (:func:`~perceptron1_jax.training.step.update_step`,
or the truncated one), ``vmap``-ed over a leading member axis and jitted as one program.

Each member draws its own minibatch and dropout masks from its seed, and trains with its own
values of the varied options (traced scalars; the options every member shares stay constants of
the program). Members are split over the devices, each device running its share under ``vmap``
with no communication between members (a population whose size does not divide by the devices
is padded with frozen copies of member 0); with fewer members than devices the batch is split
instead, as a single run splits it. The compiled program's memory is checked against the memory
the devices have before anything is initialised.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from perceptron1_jax.data import Data, DataInfo
from perceptron1_jax.layers import DropoutDraw
from perceptron1_jax.parallel import AXIS, check_mesh, data_parallel, make_mesh, places_directions, split_like_mesh
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.tasks import Dataset
from perceptron1_jax.training.config import TrainConfig, run_spec, task_info
from perceptron1_jax.training.ingredients import (
    batch_index,
    dropout_key_at,
    init_run_params,
    on_device,
    run_data,
    run_optimizer,
    seed_keys,
    stream_index,
    with_stream_resets,
)
from perceptron1_jax.training.population import VARIED, varied_names
from perceptron1_jax.training.step import (
    one_device_reason,
    online_update,
    run_value_and_grad,
    truncated_update,
    update_step,
)


class Layout(NamedTuple):
    """Where a population's members run: ``mesh``; ``size`` members padded to ``padded`` (a
    multiple of the devices when ``split`` puts members on devices; otherwise the batch is split
    over the mesh, or the mesh is one device)."""

    mesh: Mesh
    size: int
    padded: int
    split: bool


class PopulationData(NamedTuple):
    """The members' data: ``train``/``eval`` (and ``test``, or None) with a leading axis over the
    distinct datasets (one per seed for a task, whose examples come from the seed, or for files
    split by the seed; one for files that every seed reads alike), ``which[k]`` the dataset of
    member ``k``; ``infos[d]`` dataset ``d``'s description (they differ at most in the
    standardization statistics of each seed's training split), ``info`` the first's."""

    train: Dataset
    eval: Dataset
    info: DataInfo
    which: np.ndarray  # (members,) int
    test: Dataset | None = None
    infos: tuple = ()

    def member_info(self, k: int) -> DataInfo:
        """Member ``k``'s data description (its standardization statistics)."""
        return self.infos[int(self.which[k])] if self.infos else self.info


def population_layout(cfg: TrainConfig, size: int, mesh: Mesh | None = None) -> Layout:
    """The :class:`Layout` of ``size`` members on ``mesh`` (default: every local device).
    Truncated BPTT and online updates never split a batch: with fewer members than devices they run on one."""
    if jax.process_count() > 1:
        raise ValueError(f"population: runs in one process, got {jax.process_count()} processes")
    mesh = make_mesh(jax.local_devices()) if mesh is None else mesh
    if places_directions(mesh):
        raise ValueError("mesh: expected a mesh with a 'data' axis (make_mesh()) for a population, which places "
                         "its members or their batches over the devices; got a direction mesh")
    devices = mesh.size
    if devices == 1 or size >= devices:
        return Layout(mesh, size, math.ceil(size / devices) * devices, devices > 1)
    if one_device_reason(cfg) is not None:
        return Layout(make_mesh(list(mesh.devices.flat)[:1]), size, size, False)
    check_mesh(mesh, cfg.batch_size, "batch_size")
    return Layout(mesh, size, size, False)


def describe_layout(layout: Layout) -> str:
    """``8 members split over 2 cpu devices (padded to 8)`` style description."""
    devices = f"{layout.mesh.size} {layout.mesh.devices.flat[0].platform} device{'s' if layout.mesh.size > 1 else ''}"
    if layout.split:
        pad = f", padded to {layout.padded} with frozen copies" if layout.padded > layout.size else ""
        return f"members split over {devices}{pad}"
    return f"batch split over {devices}" if layout.mesh.size > 1 else f"vmap on {devices}"


def population_data(members: tuple[TrainConfig, ...], data: Data | None = None, *,
                    shapes_only: bool = False) -> PopulationData:
    """Every member's data, each distinct dataset once: ``data`` (made in Python) for all, or
    each seed's :func:`~perceptron1_jax.training.ingredients.run_data`, shared by the seeds whose
    data come out the same (files without a seeded split). ``shapes_only``: a task's data as
    ``jax.ShapeDtypeStruct`` leaves, nothing drawn (what the memory check needs)."""
    dtype = jnp.dtype(members[0].dtype)
    if shapes_only and data is None and members[0].task is not None:
        seeds = list(dict.fromkeys(m.seed for m in members))
        train, evaluation = jax.eval_shape(lambda: tuple(run_data(members[0])[:2]))
        stacked = [Dataset(*(None if a is None else jax.ShapeDtypeStruct((len(seeds), *a.shape), a.dtype)
                             for a in split)) for split in (train, evaluation)]
        return PopulationData(*stacked, task_info(members[0].task_spec),
                              np.asarray([seeds.index(m.seed) for m in members], np.int32))
    if data is not None:
        loaded = [on_device(data, dtype)]
        which = [0] * len(members)
    else:
        loaded, which, by_seed = [], [], {}
        for member in members:
            if member.seed not in by_seed:
                found = run_data(member)
                same = next((i for i, d in enumerate(loaded) if _same_data(d, found)), None)
                if same is None:
                    loaded.append(found)
                    same = len(loaded) - 1
                by_seed[member.seed] = same
            which.append(by_seed[member.seed])
    infos = {dataclasses.replace(d.info, input_mean=None, input_std=None) for d in loaded}
    if len(infos) > 1:
        raise ValueError(f"data: the seeds' splits of {loaded[0].info.source} have different vocabularies (each "
                         "built from its own seeded training split), so their members would be different models; "
                         "a population needs one: give the data from Python (train(cfg, data=load_data(...), "
                         "population=...)) to share one split")

    def stack(part):
        return Dataset(*(None if parts[0] is None else jnp.stack(parts)
                         for parts in zip(*(getattr(d, part) for d in loaded))))

    return PopulationData(stack("train"), stack("eval"), loaded[0].info, np.asarray(which, np.int32),
                          None if loaded[0].test is None else stack("test"), tuple(d.info for d in loaded))


def _same_data(a: Data, b: Data) -> bool:
    pairs = list(zip((*a.train, *a.eval), (*b.train, *b.eval)))
    return a.info == b.info and all(
        (x is None and y is None) or (x is not None and y is not None and x.shape == y.shape and bool(jnp.all(x == y)))
        for x, y in pairs)


def member_of(tree, k: int):
    """Member ``k``'s slice of a tree with a leading member axis."""
    return jax.tree.map(lambda a: a[k], tree)


def first_members(tree, n: int):
    """The first ``n`` members of a tree with a leading member axis (the real ones of a padded state)."""
    return jax.tree.map(lambda a: a[:n], tree)


def pad_members(tree, padded: int):
    """A tree of ``n`` stacked members padded to ``padded`` with copies of member 0."""
    return jax.tree.map(lambda a: jnp.concatenate([a, jnp.repeat(a[:1], padded - a.shape[0], axis=0)]), tree)


def member_split(data: PopulationData, k: int) -> Data:
    """Member ``k``'s :class:`~perceptron1_jax.data.Data` (as its single run loads it)."""
    pick = int(data.which[k])

    def part(split):
        return None if split is None else Dataset(*(None if a is None else a[pick] for a in split))

    return Data(part(data.train), part(data.eval), data.member_info(k), part(data.test))


def population_spec(cfg: TrainConfig, members: tuple[TrainConfig, ...], info: DataInfo) -> ModelSpec:
    """The model every member trains (its dropout rate the largest member's: masks are drawn
    when any member has dropout; each member's own rate rides with its key)."""
    return run_spec(dataclasses.replace(cfg, dropout=max(m.dropout for m in members)), info)


def hyper_values(members: tuple[TrainConfig, ...], padded: int, dtype) -> dict:
    """``{option: (padded,) array}`` of the varied options (padding members repeat member 0)."""
    names = varied_names(members)
    rows = list(members) + [members[0]] * (padded - len(members))
    return {name: jnp.asarray([getattr(m, name) for m in rows], dtype) for name in names}


def make_population_step(cfg: TrainConfig, members: tuple[TrainConfig, ...], spec: ModelSpec,
                         layout: Layout) -> Callable:
    """The jitted ``step(params, opt_state, active, which, seeds, hyper, train, step, stream) ->
    (params, opt_state, metrics, stream)``: every argument but ``train`` (a :class:`PopulationData`'s
    training split) and ``step`` (the step number) has a leading member axis of ``layout.padded``;
    ``active[k]`` False freezes member ``k`` (its state comes back unchanged). ``metrics`` as a
    single run's, each of shape ``(padded,)``; ``stream`` a stream run's stacked
    :class:`~perceptron1_jax.online.OnlineStream` (None otherwise)."""
    names = varied_names(members)
    base = dataclasses.replace(cfg, **{name: getattr(members[0], name) for name in VARIED})
    uses_dropout = any(m.dropout for m in members) or cfg.gradient == "uoro"  # the step's key: dropout's, UORO's
    value_and_grad = run_value_and_grad(cfg, spec)
    if layout.mesh.size > 1 and not layout.split:
        value_and_grad = data_parallel(value_and_grad, spec, layout.mesh)
    elif layout.mesh.size > 1 and uses_dropout and cfg.batch_size % layout.mesh.size == 0:
        # the masks of the single run on this many devices (a batch they cannot split: one device's)
        value_and_grad = split_like_mesh(value_and_grad, spec, layout.mesh.size)

    def member(params, opt_state, active, which, seed, hyper, train, step, stream):
        run_key, _, _, _, shuffle_key = seed_keys(seed)
        if cfg.stream:
            index, start = stream_index(train.labels.shape[1], step, cfg.batch_size)
        else:
            index = batch_index(train.labels.shape[1], shuffle_key, step, cfg.batch_size)
        batch = tuple(None if a is None else a[which, index] for a in train)
        batch = with_stream_resets(batch, start) if cfg.stream else batch
        dropout_key = dropout_key_at(run_key, step) if uses_dropout else None
        if "dropout" in names:
            dropout_key = DropoutDraw(dropout_key, hyper["dropout"])
        run = dataclasses.replace(base, **hyper)
        optimizer = run_optimizer(run)
        if cfg.tbptt_k1 is not None:
            new_params, new_state, metrics = truncated_update(run, spec, optimizer, params, opt_state, batch)
        elif cfg.online_every is not None:
            new_params, new_state, metrics, new_stream = online_update(run, spec, optimizer, params, opt_state,
                                                                       batch, dropout_key, stream)
        else:
            new_params, new_state, metrics = update_step(run, spec, value_and_grad, optimizer, params, opt_state,
                                                         batch, dropout_key)
        keep = lambda new, old: jnp.where(active, new, old)  # noqa: E731
        stream = None if stream is None else jax.tree.map(keep, new_stream, stream)
        return jax.tree.map(keep, new_params, params), jax.tree.map(keep, new_state, opt_state), metrics, stream

    batched = jax.vmap(member, in_axes=(0, 0, 0, 0, 0, 0, None, None, 0))
    if layout.split:
        split = P(AXIS)
        batched = jax.shard_map(batched, mesh=layout.mesh, in_specs=(split,) * 6 + (P(), P(), split),
                                out_specs=split, check_vma=False)
    return jax.jit(batched)


def init_population(cfg: TrainConfig, members: tuple[TrainConfig, ...], spec: ModelSpec, layout: Layout,
                    params=None):
    """``(params, opt_state)`` stacked over ``layout.padded`` members: member ``k``'s are those
    its single run starts from (padding members copy member 0's), or ``params[k]`` of the
    members' stacked ``params`` (checked: a ``ValueError`` naming the expected shapes)."""
    if params is None:
        params = [init_run_params(seed_keys(m.seed)[1], m, spec) for m in members]
        params = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    else:
        template = init_run_params(seed_keys(members[0].seed)[1], members[0], spec)
        if jax.tree.structure(params) != jax.tree.structure(template) or any(
                a.shape != (len(members), *b.shape) or a.dtype != b.dtype
                for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template))):
            raise ValueError(f"params: expected the members' params stacked on a leading axis of {len(members)} "
                             f"(each as init_model gives them for {spec}), got "
                             f"{jax.tree.map(lambda a: (a.shape, str(a.dtype)), params)}")
        params = jax.tree.map(jnp.asarray, params)
    params = pad_members(params, layout.padded)
    return params, init_optimizer_states(cfg, members, params, layout.padded)


def init_optimizer_states(cfg: TrainConfig, members, params, padded: int):
    """The stacked optax states of stacked ``params`` (each member's own optimizer)."""
    base = dataclasses.replace(cfg, **{name: getattr(members[0], name) for name in VARIED})
    hyper = hyper_values(members, padded, jnp.dtype(cfg.dtype))
    return jax.vmap(lambda p, h: run_optimizer(dataclasses.replace(base, **h)).init(p))(params, hyper)


def member_shardings(layout: Layout):
    """``(member axis, replicated)`` shardings of a population's arrays on ``layout.mesh``."""
    mesh = layout.mesh
    return NamedSharding(mesh, P(AXIS) if layout.split else P()), NamedSharding(mesh, P())


def check_memory(step: Callable, args: tuple, layout: Layout, available: int | None = None):
    """The compiled ``step`` for ``args`` (arrays or ``jax.ShapeDtypeStruct``), after checking that
    its memory (arguments, outputs and scratch, on every device of the mesh) fits in what the
    devices have (``available`` bytes; default :func:`available_memory`); a ``ValueError`` with
    both figures otherwise."""
    compiled = step.lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:  # a backend that does not say: nothing to check against
        return compiled
    per_device = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes + analysis.temp_size_in_bytes
                  - analysis.alias_size_in_bytes)
    shared_host = layout.mesh.devices.flat[0].platform == "cpu"
    needed = per_device * (layout.mesh.size if shared_host else 1)
    have = available_memory(layout.mesh) if available is None else available
    if have is not None and needed > have:
        raise ValueError(f"population: {layout.size} members need {needed / 2**30:.2f} GiB for the step "
                         f"({'in all' if shared_host else 'per device'}), the devices have {have / 2**30:.2f} GiB "
                         "free: train fewer members, or on more devices")
    return compiled


def available_memory(mesh: Mesh) -> int | None:
    """Free bytes for a step on ``mesh``: the host's available memory (CPU devices share it), or
    the least any accelerator of the mesh has left; None when the platform does not say."""
    device = mesh.devices.flat[0]
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):
            return None
    free = []
    for d in mesh.devices.flat:
        stats = d.memory_stats() or {}
        if "bytes_limit" in stats:
            free.append(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    return min(free) if free else None
