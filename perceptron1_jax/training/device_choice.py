"""The default devices of a run on host CPU devices, measured at its start.

On a CPU the ``perceptron1`` command gives itself one host device per core, and a run splits each
batch over them by default. Whether that pays depends on the model (the size rule of
:func:`perceptron1_jax.training.step.default_device_count`) and on the machine's state: on a
shared machine whose second core is busy the split only adds the gradient all-reduce
(docs/performance.md#the-default-devices). So a fresh run of at least :data:`PROBE_MIN_STEPS`
steps that the size rule would split times its own training step on all the devices and on one
(:data:`PROBE_STEPS` steps each after a warm-up, median) and keeps the faster. The choice is
written to ``devices.json`` in the run folder; a resumed run reads it back (same devices, so the
same numbers, bit for bit). An explicit mesh (``--devices``, ``mesh=``) is never second-guessed.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import jax
from jax.sharding import Mesh

from perceptron1_jax.data import Data
from perceptron1_jax.parallel import make_mesh, replicate, shard_batch
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.ingredients import dropout_key_of, get_batch, run_keys
from perceptron1_jax.training.step import run_step

PROBE_STEPS = 3  # timed steps per candidate (after one warm-up step that compiles it)
PROBE_MIN_STEPS = 500  # shorter runs keep the size rule's choice: the probe would cost more than it can save
FILE = "devices.json"


def measures(cfg: TrainConfig, mesh: Mesh) -> bool:
    """Whether a run on the default ``mesh`` measures its devices: host CPU devices of one process,
    more than one, a full (not truncated) BPTT run of at least :data:`PROBE_MIN_STEPS` steps."""
    return (mesh.size > 1 and mesh.devices.flat[0].platform == "cpu" and jax.process_count() == 1
            and cfg.tbptt_k1 is None and cfg.steps >= PROBE_MIN_STEPS)


def step_seconds(cfg: TrainConfig, spec: ModelSpec, data: Data, params, mesh: Mesh) -> float:
    """Median seconds of :data:`PROBE_STEPS` training steps of ``cfg`` on ``mesh`` (after a warm-up
    step), from ``params`` on the run's first batch; the run's own state is not touched."""
    optimizer, step_fn = run_step(cfg, spec, mesh)
    params, opt_state = replicate((params, optimizer.init(params)), mesh)
    batch = shard_batch(get_batch(data.train, run_keys(cfg)[4], 0, cfg.batch_size), mesh)
    key = dropout_key_of(cfg, 0)
    jax.block_until_ready(step_fn(params, opt_state, batch, key))
    times = []
    for _ in range(PROBE_STEPS):
        start = time.perf_counter()
        jax.block_until_ready(step_fn(params, opt_state, batch, key))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def choose_devices(cfg: TrainConfig, spec: ModelSpec, data: Data, params, mesh: Mesh, out: Path | None, *,
                   resume: bool, log) -> Mesh:
    """The mesh a run on the default ``mesh`` trains on: the one recorded in ``out`` (a resume),
    else, where :func:`measures`, the faster of ``mesh`` and its first device (recorded and
    logged), else ``mesh``."""
    recorded = None if out is None else read_choice(out)
    if recorded is not None:
        return make_mesh(list(mesh.devices.flat)[:recorded]) if recorded <= mesh.size else mesh
    if resume or not measures(cfg, mesh):
        return mesh
    candidates = {n: make_mesh(list(mesh.devices.flat)[:n]) for n in (mesh.size, 1)}
    seconds = {n: step_seconds(cfg, spec, data, params, m) for n, m in candidates.items()}
    chosen = min(seconds, key=lambda n: (seconds[n], n))
    log(f"devices: a training step took {1e3 * seconds[mesh.size]:.1f} ms with the batch split over {mesh.size} "
        f"and {1e3 * seconds[1]:.1f} ms on one: training on {chosen} (--devices overrides)")
    if out is not None:
        (out / FILE).write_text(json.dumps({"devices": chosen, "ms_per_step": {str(n): 1e3 * s
                                                                                for n, s in seconds.items()}}) + "\n")
    return candidates[chosen]


def read_choice(out: Path) -> int | None:
    """The device count recorded in ``out`` (None when there is none, or it is unreadable)."""
    try:
        devices = json.loads((Path(out) / FILE).read_text())["devices"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return devices if isinstance(devices, int) and devices >= 1 else None


def describe_devices(cfg: TrainConfig, mesh: Mesh, out: Path, *, resume: bool, default: bool) -> str:
    """``2 cpu devices``, ``... or 1 (the faster, measured first)`` or ``1 cpu device (as recorded)``:
    what a run on ``mesh`` (the ``default`` one, or one asked for) will split its batches over."""
    platform = mesh.devices.flat[0].platform
    devices = f"{mesh.size} {platform} device{'s' if mesh.size > 1 else ''}"
    if not default:
        return devices
    recorded = read_choice(out) if resume else None
    if recorded is not None and recorded < mesh.size:
        return f"{recorded} {platform} device{'s' if recorded > 1 else ''} (as recorded)"
    if recorded is None and not resume and measures(cfg, mesh):
        return devices + " or 1 (the faster, measured first)"
    return devices
