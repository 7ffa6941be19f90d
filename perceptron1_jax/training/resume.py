"""Reading checkpoints back: a run resumed from its folder (the newest good checkpoint, after the
checks that it is the same run on the same data), and :func:`load_checkpoint` for everyone else."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
from flax import serialization

from perceptron1_jax import checkpoint
from perceptron1_jax.data import DataInfo
from perceptron1_jax.spec import ModelSpec, spec_from_dict
from perceptron1_jax.training.config import RESUMABLE_CHANGES, TrainConfig, config_from_dict, run_spec, task_info
from perceptron1_jax.training.ingredients import init_run_params, run_keys, run_optimizer
from perceptron1_jax.training.run_folder import trim_metrics


class MismatchError(ValueError):
    """A checkpoint from another run configuration or other data: names the field that differs."""


def check_resumable(saved: TrainConfig, cfg: TrainConfig) -> None:
    """A resumed run may change only :data:`RESUMABLE_CHANGES`; anything else is a
    :class:`MismatchError`."""
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUMABLE_CHANGES:
            continue
        old, new = getattr(saved, f.name), getattr(cfg, f.name)
        if old != new:
            raise MismatchError(f"{f.name}: expected {old!r} as in the checkpoint being resumed, got {new!r}")
    if cfg.schedule != "constant" and saved.steps != cfg.steps:
        raise MismatchError(f"steps: expected {saved.steps} (the {cfg.schedule} schedule spans the run), "
                            f"got {cfg.steps}")


def check_same_data(saved: DataInfo, info: DataInfo) -> None:
    """The data of a resumed run must be described as the checkpoint's was; a difference is a
    :class:`MismatchError` naming the field (``source``, a description for humans, may differ)."""
    for f in dataclasses.fields(DataInfo):
        if f.name == "source":
            continue
        old, new = getattr(saved, f.name), getattr(info, f.name)
        if old != new:
            if isinstance(old, tuple) and isinstance(new, tuple):  # a vocabulary: say where it differs
                at = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
                old, new = (f"{len(seq)} entries with {repr(seq[at]) if at < len(seq) else 'nothing'} at index {at}"
                            for seq in (old, new))
            raise MismatchError(f"data: its {f.name} differs from the checkpoint's: expected {old}, got {new}")


def saved_info(raw: dict, cfg: TrainConfig) -> DataInfo:
    """The DataInfo of a raw checkpoint (a task run's from its task when the file has none)."""
    if raw.get("data") is not None:
        return DataInfo.from_dict(raw["data"])
    return task_info(cfg.task_spec)


def restore(cfg: TrainConfig, raw: dict, spec: ModelSpec | None = None):
    """Params and optax state of ``cfg``'s run (model ``spec``, default ``cfg.model_spec``) rebuilt
    from a raw checkpoint payload."""
    template = init_run_params(run_keys(cfg)[1], cfg, spec)
    params = serialization.from_state_dict(template, raw["params"])
    opt_state = serialization.from_state_dict(run_optimizer(cfg).init(params), raw["opt_state"])
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, opt_state)


def resume_from(out: Path | None, cfg: TrainConfig, info: DataInfo, spec: ModelSpec, *, writes: bool,
                log: Callable[[str], None]):
    """``(params, opt_state, step)`` of the newest good checkpoint in ``out`` (None when it has
    none), checked to be ``cfg``'s run on data described by ``info`` (:class:`MismatchError`).
    When this process writes the folder, it first removes the temporaries of killed writes and
    afterwards drops the metrics logged past that step (the resumed run logs them again)."""
    if out is None:
        raise ValueError("out: expected the run folder to resume from, got None")
    for stale in checkpoint.remove_temporaries(out) if writes else ():
        log(f"removed {stale.name}, left by a write that was killed")
    raw = checkpoint.latest_good_checkpoint(out, on_bad=lambda err: log(f"warning: {err}; trying an older one"))
    found = None
    if raw is None:
        log(f"no checkpoint in {out}: starting from step 0")
    else:
        saved = config_from_dict(raw["config"])
        check_resumable(saved, cfg)
        check_same_data(saved_info(raw, saved), info)
        found = (*restore(cfg, raw, spec), int(raw["step"]))
        log(f"resumed from {raw['path']} at step {found[2]}")
    start = 0 if found is None else found[2]
    dropped = trim_metrics(out / "metrics.jsonl", start) if writes else 0
    if dropped:
        log(f"dropped {dropped} metrics entries logged after step {start} (the resumed run logs them again)")
    return found


def load_checkpoint(path) -> dict:
    """Load a checkpoint file, or the newest good one of a run folder (``--out``).

    Returns a dict with ``params``, ``opt_state`` (the optax state), ``step``, ``config`` (a
    :class:`TrainConfig`), ``spec`` (the :class:`~perceptron1_jax.ModelSpec` the params fit),
    ``data`` (the :class:`~perceptron1_jax.data.DataInfo` of what it trained on, vocabulary included),
    ``key`` (the run's PRNG key data) and ``path``. Raises
    :class:`~perceptron1_jax.checkpoint.CheckpointError` for a missing, truncated or corrupted file.
    """
    path = Path(path)
    if path.is_dir():
        found = checkpoint.list_checkpoints(path)
        if not found:
            raise checkpoint.CheckpointError(f"checkpoint: no ckpt_*.msgpack files in {path}")
        raw = checkpoint.read_checkpoint(found[0])
    else:
        raw = checkpoint.read_checkpoint(path)
    cfg = config_from_dict(raw["config"])
    spec, info = spec_from_dict(raw["spec"]), saved_info(raw, cfg)
    if spec != run_spec(cfg, info):
        raise checkpoint.CheckpointError(f"checkpoint {raw['path']}: its spec {spec} does not match its config")
    params, opt_state = restore(cfg, raw, spec)
    return {"params": params, "opt_state": opt_state, "step": int(raw["step"]), "config": cfg, "spec": spec,
            "data": info, "key": raw["key"], "path": raw["path"]}
