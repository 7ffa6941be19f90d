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
from perceptron1_jax.online import start_stream
from perceptron1_jax.spec import ModelSpec, spec_from_dict
from perceptron1_jax.training.config import RESUMABLE_CHANGES, TrainConfig, config_from_dict, run_spec, task_info
from perceptron1_jax.training.ingredients import init_run_params, run_keys, run_optimizer
from perceptron1_jax.training.population import Population, check_population
from perceptron1_jax.training.population_step import init_optimizer_states, member_of
from perceptron1_jax.training.run_folder import logged_entries, saved_config, trim_metrics


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
    from a raw checkpoint payload; a population's stacked over its members."""
    template = init_run_params(run_keys(cfg)[1], cfg, spec)
    if raw.get("population") is not None:
        members = check_population(cfg, Population.from_dict(raw["population"]["population"]))
        template = jax.tree.map(lambda a: jnp.zeros((len(members), *a.shape), a.dtype), template)
        params = serialization.from_state_dict(template, raw["params"])
        opt_template = init_optimizer_states(cfg, members, params, len(members))
    else:
        params = serialization.from_state_dict(template, raw["params"])
        opt_template = run_optimizer(cfg).init(params)
    opt_state = serialization.from_state_dict(opt_template, raw["opt_state"])
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, opt_state)


def restore_stream(template, raw: dict):
    """A stream run's :class:`~perceptron1_jax.online.OnlineStream` from a raw checkpoint payload,
    in the structure of ``template`` (a fresh one; a population's stacked over its real members)."""
    if raw.get("stream") is None:
        raise MismatchError(f"stream: expected {raw['path']} to hold the state and influence of a stream run, "
                            "got none")
    return jax.tree.map(jnp.asarray, serialization.from_state_dict(template, raw["stream"]))


def check_same_population(raw: dict, population: Population | None) -> None:
    """A checkpoint resumed as the same population (or as a single run, neither being one);
    a :class:`MismatchError` otherwise."""
    saved = None if raw.get("population") is None else Population.from_dict(raw["population"]["population"])
    if saved != population:
        raise MismatchError(f"population: expected {_describe_population(saved)} as in the checkpoint being "
                            f"resumed, got {_describe_population(population)}")


def _describe_population(population: Population | None) -> str:
    return "a single run" if population is None else f"the population {population.to_dict()}"


def resume_from(out: Path | None, cfg: TrainConfig, info: DataInfo, spec: ModelSpec, *, writes: bool,
                log: Callable[[str], None], population: Population | None = None):
    """``(params, opt_state, step, status, raw)`` of the newest good checkpoint in ``out`` (None
    when it has none), checked to be ``cfg``'s run (or ``population``) on data described by ``info``
    (:class:`MismatchError`); ``status`` a population's members' status (None for a single run);
    ``raw`` the checkpoint's payload (a stream run's stream: :func:`restore_stream`).
    When this process writes the folder, it first removes the temporaries of killed writes and
    afterwards drops the metrics logged past that step (the resumed run logs them again)."""
    if out is None:
        raise ValueError("out: expected the run folder to resume from, got None")
    for stale in checkpoint.remove_temporaries(out) if writes else ():
        log(f"removed {stale.name}, left by a write that was killed")
    raw = checkpoint.latest_good_checkpoint(out, on_bad=lambda err: log(f"warning: {err}; trying an older one"))
    found = None
    if raw is None:
        written = saved_config(out)
        if written is not None:  # stopped before its first checkpoint: the same config, from the start
            check_resumable(config_from_dict(written), cfg)
            log(f"no checkpoint in {out}: starting its config.json from step 0")
        else:
            log(f"no checkpoint in {out}: starting from step 0")
    else:
        saved = config_from_dict(raw["config"])
        check_resumable(saved, cfg)
        check_same_data(saved_info(raw, saved), info)
        check_same_population(raw, population)
        found = (*restore(cfg, raw, spec), int(raw["step"]),
                 None if population is None else raw["population"]["status"], raw)
        log(f"resumed from {raw['path']} at step {found[2]}")
    start = 0 if found is None else found[2]
    if found is not None and start < cfg.steps and tested_at(out) is not None:
        raise MismatchError(f"steps: expected {start} (the run's test split was scored at its end, step "
                            f"{tested_at(out)}, and a test split is scored once), got {cfg.steps}: start a new run "
                            "to train longer")
    dropped = trim_metrics(out / "metrics.jsonl", start) if writes else 0
    if dropped:
        log(f"dropped {dropped} metrics entries logged after step {start} (the resumed run logs them again)")
    return found


def tested_at(out: Path) -> int | None:
    """The step at which the run in ``out`` scored its test split (None: not yet)."""
    scored = logged_entries(out, "test_loss")
    return int(scored[0]["step"]) if scored else None


def load_checkpoint(path, member: int | None = None) -> dict:
    """Load a checkpoint file, or the newest good one of a run folder (``--out``).

    Returns a dict with ``params``, ``opt_state`` (the optax state), ``step``, ``config`` (a
    :class:`TrainConfig`), ``spec`` (the :class:`~perceptron1_jax.ModelSpec` the params fit),
    ``data`` (the :class:`~perceptron1_jax.data.DataInfo` of what it trained on, vocabulary included),
    ``key`` (the run's PRNG key data), ``stream`` (a stream run's
    :class:`~perceptron1_jax.online.OnlineStream`, to go on with ``online_updates(..., stream=)``;
    None otherwise, and in ``best.msgpack``) and ``path``. Raises
    :class:`~perceptron1_jax.checkpoint.CheckpointError` for a missing, truncated or corrupted file.

    A population's checkpoint: with ``member=k``, member ``k``'s params and optax state shaped as
    its single run's, its own config (seed and values) and spec; without, the stacked params and
    state (leading member axis), and also ``members`` (their configs), ``population`` and
    ``status``. ``member`` on a single run's checkpoint is a ``ValueError``. Of a population's
    ``best.msgpack``, member ``k``'s ``step`` is the step of its own best evaluation.
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
    members = None
    if raw.get("population") is not None:
        members = check_population(cfg, Population.from_dict(raw["population"]["population"]))
        cfg = dataclasses.replace(cfg, dropout=max(m.dropout for m in members))
    if spec != run_spec(cfg, info):
        raise checkpoint.CheckpointError(f"checkpoint {raw['path']}: its spec {spec} does not match its config")
    params, opt_state = restore(cfg, raw, spec)
    stream = None if raw.get("stream") is None else restore_stream(jax.eval_shape(lambda: start_stream(
        params if members is None else member_of(params, 0), spec, cfg.gradient, cfg.batch_size)), raw)
    loaded = {"params": params, "opt_state": opt_state, "step": int(raw["step"]), "config": cfg, "spec": spec,
              "data": info, "key": raw["key"], "stream": stream, "path": raw["path"]}
    if members is None:
        if member is not None:
            raise ValueError(f"member: expected no member for the single run {raw['path']}, got {member}")
        return loaded
    if member is None:
        return {**loaded, "members": members, "population": Population.from_dict(raw["population"]["population"]),
                "status": raw["population"]["status"]}
    if isinstance(member, bool) or not isinstance(member, int) or not 0 <= member < len(members):
        raise ValueError(f"member: expected 0 to {len(members) - 1} (the members of {raw['path']}), got {member!r}")
    member_data = raw["population"].get("member_data")
    if member_data is not None:
        info = DataInfo.from_dict(member_data[member])
    step = loaded["step"]
    if raw.get("best") is not None:  # best.msgpack stacks each member's own best: its step is the member's
        step = raw["population"]["status"][member].get("best_step") or step
    return {**loaded, "params": member_of(params, member), "opt_state": member_of(opt_state, member),
            "stream": None if stream is None else member_of(stream, member),
            "config": members[member], "spec": run_spec(members[member], info), "member": member, "data": info,
            "step": step}
