"""The devices a run trains on and how (its placement), by a rule fixed in the code, and their record
``devices.json``.

A run's numbers depend on how many devices sum its gradient (one device and two add in another
order, and training amplifies the difference), so the default devices must never depend on the
machine's load. The default is :func:`~perceptron1_jax.training.step.run_mesh`'s size rule
(:func:`~perceptron1_jax.training.step.default_device_count`): a function of the model's sizes,
the batch, the device count, the platform and the processes, resting on the measurements named at
:data:`~perceptron1_jax.training.step.SPLIT_LIMIT_FLOP` and
:data:`~perceptron1_jax.training.step.DIRECTIONS_RULE`. ``--devices``/``--placement`` (``mesh=``)
override it.

A fresh run with a folder writes ``devices.json``: the device count, the placement, the platform,
how many were available, and why (``reason``). A resumed run reads count and placement back, so it
goes on with the devices it started on, bit for bit, whatever a later version's rule says (a
record without a placement is an older version's: the batch split over its count).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
from jax.sharding import Mesh

from perceptron1_jax.parallel import direction_mesh, make_mesh, places_directions
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.step import (
    DIRECTIONS_RULE,
    PLACEMENTS,
    SPLIT_LIMIT_FLOP,
    one_device_reason,
    placement_of,
    step_matrix_flops,
)

FILE = "devices.json"


def device_reason(cfg: TrainConfig, spec: ModelSpec, mesh: Mesh, *, given: bool) -> str:
    """Why a run trains on ``mesh``: asked for, or which branch of the rule chose it."""
    available = len(jax.devices())
    platform = mesh.devices.flat[0].platform
    if given:
        how = "directions on 2" if places_directions(mesh) else str(mesh.size)
        return f"asked for (--devices, --placement or mesh=): {how} of {available}"
    if one_device_reason(cfg) is not None:
        return f"{one_device_reason(cfg)} runs on one device"
    if available == 1:
        return "the only device"
    if places_directions(mesh):
        return f"placement rule: each layer's directions on its own device: {DIRECTIONS_RULE} (training.step)"
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
    """The mesh the run trains on: for a resumed run on the default devices, the count and placement
    recorded in ``out`` (when those devices exist); else ``mesh``, recorded in ``out`` (None: not
    written)."""
    recorded = read_choice(out) if resume and out is not None else None
    if recorded is not None and not given:
        return recorded_mesh(recorded, mesh)
    if out is not None and recorded is None:
        record = {"devices": mesh.size, "placement": placement_of(mesh), "platform": mesh.devices.flat[0].platform,
                  "available": len(jax.devices()), "reason": device_reason(cfg, spec, mesh, given=given)}
        (Path(out) / FILE).write_text(json.dumps(record, indent=2) + "\n")
    return mesh


def recorded_mesh(recorded: dict, mesh: Mesh) -> Mesh:
    """The mesh of a record (``read_choice``), or ``mesh`` when it already is that one or when this
    machine lacks the recorded devices."""
    count, placement = recorded["devices"], recorded["placement"]
    if count > len(jax.devices()) or (placement == placement_of(mesh) and count == mesh.size):
        return mesh
    return direction_mesh(jax.devices()[:2]) if placement == "directions" else make_mesh(jax.devices()[:count])


def read_choice(out: Path) -> dict | None:
    """``{"devices": count, "placement": ...}`` recorded in ``out`` (None when there is none, or it is
    unreadable; an older record without a placement: the batch split over its count)."""
    try:
        record = json.loads((Path(out) / FILE).read_text())
        devices = record["devices"]
        placement = record.get("placement", "one device" if devices == 1 else "batch split")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (isinstance(devices, int) and devices >= 1 and placement in PLACEMENTS):
        return None
    if placement == "directions" and devices != 2:
        return None
    return {"devices": devices, "placement": placement}


def describe_devices(cfg: TrainConfig, mesh: Mesh, out: Path, *, resume: bool, default: bool) -> str:
    """``batch split over 2 cpu devices``, ``directions on 2 cpu devices`` or ``batch split over 1 cpu
    device (as recorded)``: how a run on ``mesh`` (the ``default`` one, or one asked for) will place
    its steps."""
    recorded = read_choice(out) if resume and default else None
    placed = mesh if recorded is None else recorded_mesh(recorded, mesh)
    platform, count = placed.devices.flat[0].platform, placed.size
    what = "directions on" if places_directions(placed) else "batch split over"
    as_recorded = " (as recorded)" if placed is not mesh else ""
    return f"{what} {count} {platform} device{'s' if count > 1 else ''}{as_recorded}"
