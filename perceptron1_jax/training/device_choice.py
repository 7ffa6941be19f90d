"""The devices a run trains on, by a rule fixed in the code, and their record ``devices.json``.

A run's numbers depend on how many devices sum its gradient (one device and two add in another
order, and training amplifies the difference), so the default devices must never depend on the
machine's load. The default is :func:`~perceptron1_jax.training.step.run_mesh`'s size rule
(:func:`~perceptron1_jax.training.step.default_device_count`): a function of the model's sizes,
the batch, the device count, the platform and the processes, resting on the measurements named at
:data:`~perceptron1_jax.training.step.SPLIT_LIMIT_FLOP`. ``--devices`` (``mesh=``) overrides it.

A fresh run with a folder writes ``devices.json``: the device count, the platform, how many were
available, and why (``reason``). A resumed run reads the count back, so it goes on with the
devices it started on, bit for bit, whatever a later version's rule says.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from jax.sharding import Mesh

from perceptron1_jax.parallel import make_mesh
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.step import SPLIT_LIMIT_FLOP, step_matrix_flops

FILE = "devices.json"


def device_reason(cfg: TrainConfig, spec: ModelSpec, mesh: Mesh, *, given: bool) -> str:
    """Why a run trains on ``mesh``: asked for, or which branch of the size rule chose it."""
    available = len(jax.devices())
    platform = mesh.devices.flat[0].platform
    if given:
        return f"asked for (--devices or mesh=): {mesh.size} of {available}"
    if cfg.tbptt_k1 is not None:
        return "truncated BPTT runs on one device"
    if available == 1:
        return "the only device"
    if platform != "cpu" or jax.process_count() > 1:
        return "accelerators and multi-process runs split the batch over every device"
    if cfg.batch_size % available:
        return f"batch_size {cfg.batch_size} does not divide over the {available} devices"
    flops = step_matrix_flops(spec, cfg.batch_size // available)
    verdict = "at most" if flops <= SPLIT_LIMIT_FLOP else "above"
    return (f"size rule: a layer direction's matrix work per device and step is {flops} FLOP split over "
            f"{available} host CPU devices, {verdict} the limit 2^27 (training.step.SPLIT_LIMIT_FLOP)")


def choose_devices(cfg: TrainConfig, spec: ModelSpec, mesh: Mesh, out: Path | None, *, resume: bool,
                   given: bool) -> Mesh:
    """The mesh the run trains on: for a resumed run on the default devices, the count recorded
    in ``out`` (when those devices exist); else ``mesh``, recorded in ``out`` (None: not written)."""
    recorded = read_choice(out) if resume and out is not None else None
    if recorded is not None and not given and recorded != mesh.size and recorded <= len(jax.devices()):
        return make_mesh(jax.devices()[:recorded])
    if out is not None and recorded is None:
        record = {"devices": mesh.size, "platform": mesh.devices.flat[0].platform, "available": len(jax.devices()),
                  "reason": device_reason(cfg, spec, mesh, given=given)}
        (Path(out) / FILE).write_text(json.dumps(record, indent=2) + "\n")
    return mesh


def read_choice(out: Path) -> int | None:
    """The device count recorded in ``out`` (None when there is none, or it is unreadable)."""
    try:
        devices = json.loads((Path(out) / FILE).read_text())["devices"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return devices if isinstance(devices, int) and devices >= 1 else None


def describe_devices(cfg: TrainConfig, mesh: Mesh, out: Path, *, resume: bool, default: bool) -> str:
    """``2 cpu devices`` or ``1 cpu device (as recorded)``: what a run on ``mesh`` (the ``default``
    one, or one asked for) will split its batches over."""
    platform = mesh.devices.flat[0].platform
    count = mesh.size
    recorded = read_choice(out) if resume and default else None
    if recorded is not None and recorded != mesh.size and recorded <= len(jax.devices()):
        return f"{recorded} {platform} device{'s' if recorded > 1 else ''} (as recorded)"
    return f"{count} {platform} device{'s' if count > 1 else ''}"
