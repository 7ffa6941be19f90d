"""Training: the jitted train step, (truncated) BPTT updates with optax, the loop with evaluation,
early stopping, JSON-lines metrics, a progress bar and exact checkpoint/resume.

Everything that changes between steps is explicit: ``(params, opt_state)`` and the step number.
The minibatch of step ``s`` is a pure function of ``(seed, s)`` (a permutation per epoch from
``fold_in(key, epoch)``), so a run resumed from a checkpoint at step ``k`` replays exactly the
batches of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from jax.sharding import Mesh

from perceptron1_jax import checkpoint, losses, validate
from perceptron1_jax.bptt import make_value_and_grad
from perceptron1_jax.data import Data, DataInfo, chance, check_tokenizer, load_data
from perceptron1_jax.data.source import check_val_fraction
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.model import (
    evaluate,
    init_model,
    scored_units,
)
from perceptron1_jax.optim import OPTIMIZERS, SCHEDULES, make_optimizer
from perceptron1_jax.parallel import check_mesh, data_parallel, first_copy, make_mesh, replicate, shard_batch
from perceptron1_jax.scan import time_mask
from perceptron1_jax.spec import LayerSpec, ModelSpec, parse_layers, spec_from_dict, spec_to_dict
from perceptron1_jax.tasks import TASKS, VOCAB, Dataset, TaskSpec
from perceptron1_jax.truncated import run_windows, windows

GRAD_SOURCES = ("bptt", "autodiff")
DTYPES = ("float32", "float64")
COMPUTE_DTYPES = ("bfloat16",)  # mixed precision: float32 parameters (bptt.in_compute_dtype)
# Fields that may differ between a checkpoint and a resumed run; everything else defines the run.
RESUMABLE_CHANGES = ("steps", "eval_every", "log_every", "checkpoint_every", "target_accuracy", "gradflow_every",
                     "max_nonfinite")
DEFAULT_TARGETS = {"three_step": 0.99, "adding": 0.9, "copy": 0.99, "parity": 0.99, "chars": 0.55}
DEFAULT_EMBED = 32  # embedding size of a token-id data source without --embed-size


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved in every checkpoint)."""

    task: str | None = "three_step"  # None for your data (data, classes, or a Data given to train)
    cell: str = "lstm"
    hidden: int = 32
    seq_len: int | None = None  # None: the task's default
    batch_size: int = 32
    num_train: int = 2048
    num_eval: int = 512
    optimizer: str = "adam"
    lr: float = 1e-2
    momentum: float = 0.9  # SGD only
    clip: float | None = None  # global-norm clipping bound
    clip_value: float | None = None  # per-entry clipping bound
    schedule: str = "constant"
    warmup_steps: int = 0
    steps: int = 1000  # total optimizer steps of the run (a resumed run stops at the same step)
    eval_every: int = 50
    log_every: int = 10
    checkpoint_every: int = 500
    target_accuracy: float | None = None  # early stop at this eval accuracy; None: task default, 0: never
    seed: int = 0
    grad: str = "bptt"  # "bptt" (explicit) or "autodiff" (jax.grad)
    tbptt_k1: int | None = None  # truncated BPTT: steps forward per update
    tbptt_k2: int | None = None  # truncated BPTT: steps backpropagated per update (default k1)
    dtype: str = "float32"
    gradflow_every: int = 0  # log the ||dL/dh_t|| profile every N steps (0: never)
    layers: str | None = None  # "cell:size,cell:size,..." per layer; None: one layer of cell/hidden
    bidirectional: bool = False  # every layer reads the sequence both ways
    dropout: float = 0.0  # inverted dropout on every layer's input after the first and on the head's
    embed_size: int | None = None  # token inputs: embedding size (None: the task's, or DEFAULT_EMBED)
    data: tuple[str, ...] | None = None  # your data: one .npz, one .csv, or text files (language modelling)
    classes: tuple[str, ...] | None = None  # text classification: one file of lines per class
    tokens: str | None = None  # text: "chars" or "words" (None: chars for data, words for classes)
    val_fraction: float = 0.1  # evaluation split of data without one (the last part of a text)
    max_vocab: int | None = None  # text: keep the most frequent tokens (ids, <unk> included)
    max_nonfinite: int = 10  # stop (exit status 3) after this many consecutive non-finite steps
    compute_dtype: str | None = None  # "bfloat16": forward and backward in bfloat16, float32 parameters

    def __post_init__(self):
        for name in ("data", "classes"):  # one path or a list (TOML, JSON) -> a tuple of str
            value = getattr(self, name)
            if isinstance(value, (str, Path)):
                value = (value,)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.data is not None or self.classes is not None:
            object.__setattr__(self, "task", None)

    @property
    def task_spec(self) -> TaskSpec:
        if self.task is None:
            raise ValueError("task: this run trains on data, not a built-in task (see its DataInfo)")
        return TASKS[self.task]

    @property
    def model_spec(self) -> ModelSpec:
        """The model of a task run (the task fixes inputs, outputs and many-to-many); a data run's
        model is :func:`run_spec` of its :class:`~perceptron1_jax.data.DataInfo`."""
        return run_spec(self, task_info(self.task_spec))

    @property
    def time(self) -> int | None:
        """The task's sequence length (``seq_len`` or the task's default); a data run's ``seq_len``."""
        if self.task is None:
            return self.seq_len
        return self.seq_len if self.seq_len is not None else self.task_spec.default_seq_len

    @property
    def target(self) -> float:
        """Early-stop accuracy: ``target_accuracy``, else the task's default (0, never, for data)."""
        if self.target_accuracy is not None:
            return self.target_accuracy
        return DEFAULT_TARGETS[self.task] if self.task is not None else 0.0


def task_info(task: TaskSpec) -> DataInfo:
    """The :class:`~perceptron1_jax.data.DataInfo` of a built-in task."""
    kind = "language_model" if task.next_token else "classification"
    tokens = task.vocab_size is not None
    return DataInfo(kind, task.num_classes, task.many_to_many, input_size=None if tokens else task.input_size,
                    vocab_size=task.vocab_size, tokens="chars" if tokens else None,
                    vocab=tuple(VOCAB) if tokens else None, source=f"task {task.name}")


def _layers(cfg: TrainConfig) -> tuple[LayerSpec, ...]:
    """``cfg.layers`` parsed, or one layer of ``cfg.cell``/``cfg.hidden``."""
    if cfg.layers is not None:
        return parse_layers(cfg.layers, cfg.bidirectional)
    return (LayerSpec(cfg.cell, cfg.hidden, cfg.bidirectional),)


def run_spec(cfg: TrainConfig, info: DataInfo) -> ModelSpec:
    """The model ``cfg`` trains on data described by ``info``: the data fixes inputs, outputs, loss
    and many-to-many; ``cfg`` the layers, dropout and the embedding size."""
    layers = _layers(cfg)
    if info.vocab_size is not None:
        embed = cfg.embed_size or (TASKS[cfg.task].input_size if cfg.task is not None else DEFAULT_EMBED)
        inputs = {"vocab_size": info.vocab_size, "embed_size": embed}
    else:
        if cfg.embed_size is not None:
            raise ValueError(f"embed_size: expected token inputs (chars, text, integer xs), got float inputs of "
                             f"{info.source or 'the data'}")
        inputs = {"input_size": info.input_size}
    return ModelSpec(layers, info.num_outputs, **inputs, loss=info.loss, many_to_many=info.many_to_many,
                     dropout=cfg.dropout)


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Raise ``ValueError`` naming the first bad field; return the config unchanged."""

    def choice(name, value, allowed):
        if value not in allowed:
            raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")

    if cfg.task is not None:
        choice("task", cfg.task, TASKS)
    for name in ("data", "classes"):
        paths = getattr(cfg, name)
        if paths is not None and (not paths or not all(isinstance(p, str) and p for p in paths)):
            raise ValueError(f"{name}: expected one or more file paths, got {paths!r}")
    if cfg.data is not None and cfg.classes is not None:
        raise ValueError(f"classes: expected either data or classes, got both (data={list(cfg.data)})")
    if cfg.tokens is not None:
        check_tokenizer(cfg.tokens)
    check_val_fraction(cfg.val_fraction)
    if cfg.max_vocab is not None and not (isinstance(cfg.max_vocab, int) and cfg.max_vocab >= 2):
        raise ValueError(f"max_vocab: expected an int >= 2 (ids, <unk> included), got {cfg.max_vocab!r}")
    validate.get_cell(cfg.cell)
    choice("optimizer", cfg.optimizer, OPTIMIZERS)
    choice("schedule", cfg.schedule, SCHEDULES)
    choice("grad", cfg.grad, GRAD_SOURCES)
    choice("dtype", cfg.dtype, DTYPES)
    if cfg.compute_dtype is not None:
        choice("compute_dtype", cfg.compute_dtype, COMPUTE_DTYPES)
        if cfg.dtype != "float32":
            raise ValueError(f"compute_dtype: expected dtype float32 (the parameters) with compute_dtype "
                             f"{cfg.compute_dtype}, got dtype {cfg.dtype}")
    for name in ("hidden", "batch_size", "num_train", "num_eval", "steps", "eval_every", "log_every",
                 "checkpoint_every", "max_nonfinite"):
        validate.check_positive_int(name, getattr(cfg, name))
    if cfg.gradflow_every:
        validate.check_positive_int("gradflow_every", cfg.gradflow_every)
    if cfg.seq_len is not None:
        validate.check_positive_int("seq_len", cfg.seq_len)
    for name in ("lr", "clip", "clip_value"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if cfg.task is not None and cfg.num_train < cfg.batch_size:
        raise ValueError(f"num_train: expected at least batch_size = {cfg.batch_size} examples, got {cfg.num_train}")
    if cfg.warmup_steps < 0 or cfg.momentum < 0:
        raise ValueError(f"warmup_steps/momentum: expected values >= 0, got {cfg.warmup_steps}/{cfg.momentum}")
    if cfg.compute_dtype is not None and cfg.tbptt_k1 is not None:
        raise ValueError(f"compute_dtype: truncated BPTT computes in the parameters' dtype, got compute_dtype "
                         f"{cfg.compute_dtype} with tbptt_k1={cfg.tbptt_k1}")
    if cfg.tbptt_k2 is not None and cfg.tbptt_k1 is None:
        raise ValueError("tbptt_k2: expected tbptt_k1 to be set as well, got tbptt_k1=None")
    if not isinstance(cfg.bidirectional, bool):
        raise ValueError(f"bidirectional: expected true or false, got {cfg.bidirectional!r}")
    if cfg.embed_size is not None and cfg.task is not None and cfg.task_spec.vocab_size is None:
        raise ValueError(f"embed_size: expected a token task (chars), got the float-input task {cfg.task!r}")
    _check_model_options(cfg)
    if cfg.task is None:
        return cfg  # what depends on the data is checked once it is loaded (check_run)
    spec = cfg.model_spec
    if cfg.tbptt_k1 is not None:
        if cfg.task_spec.vocab_size is not None:
            raise ValueError(
                f"tbptt_k1: truncated BPTT supports the float-input tasks, got the token task {cfg.task!r}"
            )
        if cfg.bidirectional or spec.dropout:
            raise ValueError("tbptt_k1: truncated BPTT supports unidirectional layers without dropout, got "
                             f"bidirectional={cfg.bidirectional}, dropout={cfg.dropout}")
        windows(cfg.time, cfg.tbptt_k1, cfg.tbptt_k2, many_to_one=not cfg.task_spec.many_to_many)
    if cfg.task == "three_step" and cfg.time != 3:
        raise ValueError(f"seq_len: expected 3 for the three_step task, got {cfg.time}")
    return cfg


def _check_model_options(cfg: TrainConfig) -> TrainConfig:
    """The model options that do not depend on the data: embedding size, layers, dropout."""
    if cfg.embed_size is not None:
        validate.check_positive_int("embed_size", cfg.embed_size)
    ModelSpec(_layers(cfg), 1, input_size=1, dropout=cfg.dropout)  # checks the layers and the dropout rate
    return cfg


def check_run(cfg: TrainConfig, data: Data) -> ModelSpec:
    """What a config asks of its loaded data (a classifier for a target accuracy, enough examples
    for a batch, float inputs for truncated BPTT), as ``ValueError`` naming the option; returns the
    run's model."""
    info = data.info
    spec = run_spec(cfg, info)
    if cfg.batch_size > data.train.xs.shape[0]:
        raise ValueError(f"batch_size: expected at most the {data.train.xs.shape[0]} training examples of "
                         f"{info.source}, got {cfg.batch_size}")
    if not info.classifier and cfg.target_accuracy:
        raise ValueError(f"target_accuracy: applies to classifiers only, got {cfg.target_accuracy} for the "
                         f"regression data {info.source}")
    if cfg.tbptt_k1 is not None:
        if info.vocab_size is not None or data.train.lengths is not None:
            raise ValueError("tbptt_k1: truncated BPTT supports float inputs without lengths, got "
                             f"{'token ids' if info.vocab_size is not None else 'lengths'} in {info.source}")
        if cfg.bidirectional or cfg.dropout:
            raise ValueError("tbptt_k1: truncated BPTT supports unidirectional layers without dropout, got "
                             f"bidirectional={cfg.bidirectional}, dropout={cfg.dropout}")
        windows(data.train.xs.shape[1], cfg.tbptt_k1, cfg.tbptt_k2, many_to_one=not info.many_to_many)
    return spec


def config_from_dict(values: dict) -> TrainConfig:
    """A config from a plain dict (a TOML file, a checkpoint); unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; expected keys among {sorted(known)}")
    return check_config(TrainConfig(**values))


# --------------------------------------------------------------------------- model pieces


def init_run_params(key, cfg: TrainConfig, spec: ModelSpec | None = None):
    """Fresh params of the run's model (:func:`perceptron1_jax.init_model` of ``spec``, by default
    ``cfg.model_spec``)."""
    return init_model(key, spec or cfg.model_spec, jnp.dtype(cfg.dtype))


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


def _apply(optimizer, clip, clip_value, params, opt_state, grads, loss):
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
    value_and_grad = data_parallel(make_value_and_grad(spec, cfg.grad, compute_dtype=cfg.compute_dtype), spec, mesh)

    @jax.jit
    def train_step(params, opt_state, batch, dropout_key=None):
        xs, labels, lengths = (*batch, None)[:3]
        check_mesh(mesh, xs.shape[0], "batch")  # at trace time: a clear error, not XLA's
        loss, grads, outputs = value_and_grad(params, xs, labels, dropout_key, lengths)
        params, opt_state, grad_norm, clipped, finite = _apply(optimizer, cfg.clip, cfg.clip_value, params,
                                                               opt_state, grads, loss)
        metrics = {"loss": loss, "grad_norm": grad_norm, "clipped": clipped, "finite": finite}
        if spec.loss == "cross_entropy":
            metrics["accuracy"] = batch_accuracy(spec, outputs, labels, lengths)
        return params, opt_state, metrics

    return train_step


def make_truncated_step(cfg: TrainConfig, optimizer, spec: ModelSpec | None = None) -> Callable:
    """Like :func:`make_train_step` but one optax update per TBPTT(k1, k2) window
    (:func:`perceptron1_jax.run_windows` on the run's model; unidirectional layers, no dropout, no
    lengths)."""
    apply = jax.jit(partial(_apply, optimizer, cfg.clip, cfg.clip_value))
    spec = spec or cfg.model_spec

    def train_step(params, opt_state, batch, dropout_key=None):
        xs, labels = batch[:2]
        holder = {"opt_state": opt_state, "norms": [], "clipped": [], "finite": []}

        def update(params, loss, grads):
            new, holder["opt_state"], norm, fired, finite = apply(params, holder["opt_state"], grads, loss)
            holder["norms"].append(norm)
            holder["clipped"].append(fired)
            holder["finite"].append(finite)
            return new

        params, results, _ = run_windows(params, xs, labels, spec, cfg.tbptt_k1, cfg.tbptt_k2, update=update)
        metrics = {
            "loss": jnp.mean(jnp.stack([loss for _, loss, _ in results])),
            "grad_norm": holder["norms"][-1],
            "clipped": jnp.any(jnp.stack(holder["clipped"])),
            "finite": jnp.all(jnp.stack(holder["finite"])),
        }
        if spec.loss == "cross_entropy":
            metrics["accuracy"] = evaluate(params, xs, labels, spec)["accuracy"]
        return params, holder["opt_state"], metrics

    return train_step


@partial(jax.jit, static_argnames=("batch_size",))
def get_batch(data: Dataset, shuffle_key, step, batch_size: int):
    """Minibatch of step ``step``: epoch ``e = step // (n // batch_size)`` walks the permutation
    drawn from ``fold_in(shuffle_key, e)`` (the tail of ``n % batch_size`` examples is dropped)."""
    n = data.labels.shape[0]
    per_epoch = n // batch_size
    epoch, position = step // per_epoch, step % per_epoch
    order = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
    index = jax.lax.dynamic_slice(order, (position * batch_size,), (batch_size,))
    return data.xs[index], data.labels[index], None if data.lengths is None else data.lengths[index]


EVAL_CHUNK = 1024  # examples per evaluation call (bounds the memory of a big split)


def evaluate_split(params, data: Dataset, spec: ModelSpec, chunk: int = EVAL_CHUNK) -> dict:
    """``{"loss", "accuracy"}`` (classifiers) or ``{"loss"}`` (MSE) on a whole split, no dropout:
    the mean over every scored example (many-to-one) or valid step (many-to-many), computed in
    chunks of ``chunk`` examples."""
    n = data.xs.shape[0]
    totals, count = {}, 0.0
    for start in range(0, n, chunk):
        part = Dataset(*(None if a is None else a[start:start + chunk] for a in data))
        scores = evaluate(params, part.xs, part.labels, spec, part.lengths)
        size = float(scored_units(spec, part.xs, part.lengths))
        for k, v in scores.items():
            totals[k] = totals.get(k, 0.0) + float(v) * size
        count += size
    return {k: v / count for k, v in totals.items()}


def make_evaluate(cfg: TrainConfig, spec: ModelSpec | None = None) -> Callable:
    """``evaluate(params, data) -> {"loss", "accuracy"}`` on a whole split (:func:`evaluate_split`)."""
    spec = spec or cfg.model_spec
    return lambda params, data: evaluate_split(params, data, spec)


def gradient_flow_of(cfg: TrainConfig, params, xs, labels, lengths=None, spec: ModelSpec | None = None):
    """:class:`~perceptron1_jax.diagnostics.GradientFlow` of the first layer's forward direction
    (the gradient that has crossed every layer above) on one batch."""
    from perceptron1_jax.diagnostics import model_gradient_flow

    return model_gradient_flow(params, xs, labels, spec or cfg.model_spec, lengths)[0]["fwd"]


def gradient_agreement(cfg: TrainConfig, params, batch, spec: ModelSpec | None = None) -> float:
    """Max relative difference between the explicit BPTT and ``jax.grad`` gradients on a batch
    ``(xs, labels[, lengths])``."""
    spec = spec or cfg.model_spec
    xs, labels, lengths = (*batch, None)[:3]
    _, ours, _ = jax.jit(make_value_and_grad(spec, "bptt"))(params, xs, labels, None, lengths)
    _, ref, _ = jax.jit(make_value_and_grad(spec, "autodiff"))(params, xs, labels, None, lengths)
    return max_relative_error(ours, ref)


# --------------------------------------------------------------------------- the loop


@dataclass
class RunState:
    """What a run holds between steps (and what a checkpoint restores)."""

    params: Any
    opt_state: Any
    step: int
    history: list = field(default_factory=list)  # the metrics records written this session
    stopped_early: bool = False
    info: DataInfo | None = None  # what the run trained on
    spec: ModelSpec | None = None  # the model it trained
    chance: float | None = None  # eval accuracy of always guessing the most frequent class


def _optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    return make_optimizer(
        cfg.optimizer, cfg.lr, momentum=cfg.momentum, clip=cfg.clip, clip_value=cfg.clip_value,
        schedule=cfg.schedule, total_steps=cfg.steps, warmup_steps=cfg.warmup_steps,
    )


def _keys(cfg: TrainConfig):
    """``(run key, init, train data, eval data, shuffle)`` keys, all from ``cfg.seed``."""
    key = jax.random.key(cfg.seed)
    return (key, *jax.random.split(key, 4))


def dropout_key_of(cfg: TrainConfig, step: int):
    """The dropout key of step ``step`` (a pure function of ``(seed, step)``), None without dropout."""
    if not cfg.dropout:
        return None
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 0xD50), step)


def _datasets(cfg: TrainConfig, k_train, k_eval) -> tuple[Dataset, Dataset]:
    spec, dtype = cfg.task_spec, jnp.dtype(cfg.dtype)
    return (Dataset(*spec.make(k_train, cfg.num_train, cfg.time, dtype)),
            Dataset(*(spec.make_eval or spec.make)(k_eval, cfg.num_eval, cfg.time, dtype)))


def on_device(data: Data, dtype) -> Data:
    """``data`` as device arrays: float inputs and targets in ``dtype``, ids, labels and lengths int32."""

    def put(array):
        if array is None:
            return None
        array = np.asarray(array)
        return jnp.asarray(array, dtype if np.issubdtype(array.dtype, np.floating) else jnp.int32)

    return Data(Dataset(*map(put, data.train)), Dataset(*map(put, data.eval)), data.info)


def run_data(cfg: TrainConfig) -> Data:
    """The data of ``cfg``'s run: the task's splits drawn from the seed, or its files loaded
    (:func:`perceptron1_jax.data.load_data`), on the device in ``cfg.dtype``."""
    if cfg.task is not None:
        _, _, k_train, k_eval, _ = _keys(cfg)
        return Data(*_datasets(cfg, k_train, k_eval), task_info(cfg.task_spec))
    if cfg.data is None and cfg.classes is None:
        raise ValueError("data: this run trained on data given in Python (train(..., data=...)); give it again")
    loaded = load_data(cfg.data, cfg.classes, tokens=cfg.tokens, seq_len=cfg.seq_len, val_fraction=cfg.val_fraction,
                       seed=cfg.seed, max_vocab=cfg.max_vocab)
    return on_device(loaded, jnp.dtype(cfg.dtype))


def restore(cfg: TrainConfig, raw: dict, spec: ModelSpec | None = None):
    """Params and optax state of ``cfg``'s run (model ``spec``, default ``cfg.model_spec``) rebuilt
    from a raw checkpoint payload."""
    template = init_run_params(_keys(cfg)[1], cfg, spec)
    params = serialization.from_state_dict(template, raw["params"])
    opt_state = serialization.from_state_dict(_optimizer(cfg).init(params), raw["opt_state"])
    return jax.tree.map(jnp.asarray, params), jax.tree.map(jnp.asarray, opt_state)


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


def _saved_info(raw: dict, cfg: TrainConfig) -> DataInfo:
    """The DataInfo of a raw checkpoint (a task run's from its task when the file has none)."""
    if raw.get("data") is not None:
        return DataInfo.from_dict(raw["data"])
    return task_info(cfg.task_spec)


class TrainingStopped(Exception):
    """The run stopped before ``cfg.steps`` with its state checkpointed (in ``out``, if given).

    ``exit_status`` is what the command line exits with; ``state`` the :class:`RunState` reached.
    """

    exit_status = 1

    def __init__(self, message: str, state: RunState):
        super().__init__(message)
        self.state = state


class NonFiniteStop(TrainingStopped):
    """``max_nonfinite`` consecutive steps had a non-finite loss or gradient (exit status 3)."""

    exit_status = 3


class SignalStop(TrainingStopped):
    """SIGTERM or SIGINT arrived: the step finished and was checkpointed (exit status 128 + signal)."""

    def __init__(self, message: str, state: RunState, signum: int):
        super().__init__(message, state)
        self.exit_status = 128 + signum


class WriteFailed(TrainingStopped):
    """A checkpoint or metrics write failed mid-run (a full disk): the previous checkpoint is intact."""


def check_out_dir(out) -> Path:
    """Create the run folder ``out`` and make sure a file can be written in it, before any training;
    a ``ValueError`` naming the path otherwise."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a folder for the run, got the file {out}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out: cannot create the folder {out} ({err.strerror or err})") from err
    probe = out / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out: cannot write in the folder {out} ({err.strerror or err})") from err
    return out


def trim_metrics(path: Path, step: int) -> int:
    """Drop the entries of ``metrics.jsonl`` logged after ``step`` (a run killed after its last
    checkpoint logged them; the resumed run logs them again) and a torn last line. Returns how
    many lines were dropped; the file is replaced atomically."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(entry, dict) and entry.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


@contextlib.contextmanager
def _stop_requests():
    """``{"signal": None}``, set to SIGTERM/SIGINT's number when one arrives during the block
    (handlers installed only in the main thread, and not for a signal the process ignores, as
    ``nohup`` makes it; the previous ones restored after)."""
    request = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        request["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield request
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train(
    cfg: TrainConfig,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    check_grads: bool = True,
    params=None,
    data: Data | None = None,
    mesh: Mesh | None = None,
) -> RunState:
    """Train ``cfg`` for ``cfg.steps`` total steps; write metrics/checkpoints under ``out``.

    The data is ``cfg``'s task, its files (``cfg.data``/``cfg.classes``), or ``data``: a
    :class:`~perceptron1_jax.data.Data` made in Python (e.g. :func:`perceptron1_jax.data.from_arrays`;
    give it again to resume) or already loaded by :func:`run_data`.

    Writes ``out/metrics.jsonl`` (one JSON object per logged step and per evaluation:
    ``eval_loss``, the mean cross-entropy in nats per scored token or the MSE, and ``eval_accuracy``
    for classifiers) and ``out/ckpt_<step>.msgpack`` every ``checkpoint_every`` steps and at the
    end. With ``resume``, continues from the newest good checkpoint in ``out`` (bit for bit what an
    uninterrupted run would do; metrics logged after that checkpoint are dropped, as the resumed
    run logs them again). Stops early when the eval accuracy reaches ``cfg.target``
    (classifiers). ``params`` replaces the seed's initial parameters (same structure as
    :func:`init_run_params`'s), e.g. a rescaled ``W_h``.

    Faults: a step with a non-finite loss, gradient or result is not applied (and logged); after
    ``cfg.max_nonfinite`` in a row the run checkpoints its last finite state and raises
    :class:`NonFiniteStop`. SIGTERM or SIGINT finishes the current step, checkpoints it and
    raises :class:`SignalStop`. A failed write raises :class:`WriteFailed` (the previous
    checkpoint stays intact). An ``out`` that cannot be written is a ``ValueError`` before
    training starts.

    Devices: each step splits the batch over ``mesh`` (default: every device, of every process;
    :func:`make_train_step`), so ``cfg.batch_size`` must divide by its size; truncated BPTT runs
    on one device. A checkpoint holds one copy of the parameters, so a run resumes on any number
    of devices. In a multi-process run (:func:`perceptron1_jax.parallel.initialize_distributed`)
    every process runs this with the same arguments and feeds its devices their part of each
    batch; only process 0 logs and writes to ``out``. The returned parameters are single-device
    arrays.
    """
    if data is not None and cfg.task is not None and data.info != task_info(cfg.task_spec):
        cfg = dataclasses.replace(cfg, task=None)  # your data replaces the config's task
    check_config(cfg)
    writes = out is not None and jax.process_index() == 0  # only process 0 logs and writes to out
    if jax.process_index() != 0:
        log, progress = (lambda message: None), False
    out = check_out_dir(out) if writes else None if out is None else Path(out)
    data = run_data(cfg) if data is None else on_device(data, jnp.dtype(cfg.dtype))
    spec = check_run(cfg, data)
    truncated = cfg.tbptt_k1 is not None
    mesh = run_mesh(cfg, mesh)
    info, (train_data, eval_data) = data.info, data[:2]
    if cfg.bidirectional and info.next_token:
        log(f"warning: bidirectional layers on the next-token data {info.source!r} read the token they predict "
            "(the backward direction sees step t+1): accuracy will not mean prediction")
    key, k_init, _, _, k_shuffle = _keys(cfg)
    template, optimizer = init_run_params(k_init, cfg, spec), _optimizer(cfg)
    if params is None:
        params = template
    elif jax.tree.structure(params) != jax.tree.structure(template) or any(
        a.shape != b.shape or a.dtype != b.dtype for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(template))
    ):
        raise ValueError(f"params: expected the structure, shapes and dtypes of init_model for {spec}, "
                         f"got {jax.tree.map(lambda a: (a.shape, str(a.dtype)), params)}")
    opt_state = optimizer.init(params)
    start, last_saved = 0, None  # last_saved: the step of the newest checkpoint of this run
    if resume:
        if out is None:
            raise ValueError("out: expected the run folder to resume from, got None")
        for stale in checkpoint.remove_temporaries(out) if writes else ():
            log(f"removed {stale.name}, left by a write that was killed")
        raw = checkpoint.latest_good_checkpoint(out, on_bad=lambda err: log(f"warning: {err}; trying an older one"))
        if raw is None:
            log(f"no checkpoint in {out}: starting from step 0")
        else:
            saved = config_from_dict(raw["config"])
            check_resumable(saved, cfg)
            check_same_data(_saved_info(raw, saved), info)
            params, opt_state = restore(cfg, raw, spec)
            start = last_saved = int(raw["step"])
            log(f"resumed from {raw['path']} at step {start}")
        dropped = trim_metrics(out / "metrics.jsonl", start) if writes else 0
        if dropped:
            log(f"dropped {dropped} metrics entries logged after step {start} (the resumed run logs them again)")
    if writes:
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
        (out / "data.json").write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True))

    if truncated:
        train_step = make_truncated_step(cfg, optimizer, spec)
    else:
        train_step = make_train_step(cfg, optimizer, spec, mesh)
    if check_grads and start == 0:
        batch = get_batch(train_data, k_shuffle, 0, cfg.batch_size)
        log(f"explicit BPTT vs jax.grad on the first batch: max relative difference "
            f"{gradient_agreement(cfg, params, batch, spec):.1e} ({cfg.dtype})")
    if not truncated:  # one copy per device
        params, opt_state = replicate((params, opt_state), mesh)
    state = RunState(params, opt_state, start, info=info, spec=spec, chance=chance(data))

    metrics_file = open(out / "metrics.jsonl", "a") if writes else None
    bar = _progress_bar(cfg.steps, start, progress)
    say = bar.write if bar is not None else log

    def write_failed(what: str, err: OSError) -> WriteFailed:
        kept = f"the checkpoint of step {last_saved} is intact" if last_saved is not None else "no checkpoint yet"
        return WriteFailed(f"{what} in {out}: {err.strerror or err}; stopped at step {state.step}, {kept}", state)

    def record(entry):
        state.history.append(entry)
        if metrics_file is not None:
            try:
                metrics_file.write(json.dumps(entry, allow_nan=False) + "\n")
                metrics_file.flush()
            except OSError as err:
                raise write_failed("cannot write metrics", err) from err

    def save():
        nonlocal last_saved
        if writes:
            try:
                checkpoint.save_checkpoint(out, step=state.step, params=state.params, opt_state=state.opt_state,
                                           key=key, config=dataclasses.asdict(cfg), spec=spec_to_dict(spec),
                                           data=info.to_dict())
            except OSError as err:  # the write is atomic: the previous checkpoint is untouched
                raise write_failed("cannot write a checkpoint", err) from err
            last_saved = state.step

    tick, tick_step, nonfinite = _time.perf_counter(), start, 0
    try:
        with _stop_requests() as stop:
            while state.step < cfg.steps:
                batch = get_batch(train_data, k_shuffle, state.step, cfg.batch_size)
                state.params, state.opt_state, metrics = train_step(
                    state.params, state.opt_state, batch if truncated else shard_batch(batch, mesh),
                    dropout_key_of(cfg, state.step))
                state.step += 1
                if not bool(metrics["finite"]):
                    nonfinite += 1
                    say(f"step {state.step}: non-finite loss or gradients (loss {float(metrics['loss']):.4g}): "
                        f"update skipped ({nonfinite} in a row)")
                    record({"step": state.step, "nonfinite": True})
                    if nonfinite >= cfg.max_nonfinite:
                        save()
                        raise NonFiniteStop(
                            f"step {state.step}: {nonfinite} consecutive steps with a non-finite loss or gradient "
                            f"(max_nonfinite {cfg.max_nonfinite}): stopped; the parameters are those of the last "
                            f"finite update" + (f", checkpointed at step {state.step}" if out is not None else ""),
                            state)
                else:
                    nonfinite = 0
                if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                    now = _time.perf_counter()
                    rate = (state.step - tick_step) / max(now - tick, 1e-9)
                    tick, tick_step = now, state.step
                    entry = {"step": state.step, **{k: _scalar(v) for k, v in metrics.items() if k != "finite"},
                             "steps_per_sec": rate}
                    record(entry)
                    accuracy = f", accuracy {_fmt(entry['accuracy'], '.3f')}" if "accuracy" in entry else ""
                    if bar is not None:
                        bar.set_postfix(loss=_fmt(entry["loss"], ".4f"), it_s=f"{rate:.0f}",
                                        **({"acc": _fmt(entry["accuracy"], ".3f")} if accuracy else {}))
                    else:
                        say(f"step {state.step}: loss {_fmt(entry['loss'], '.4f')}{accuracy}, "
                            f"grad norm {_fmt(entry['grad_norm'], '.3g')}")
                if cfg.gradflow_every and state.step % cfg.gradflow_every == 0:
                    flow = gradient_flow_of(cfg, first_copy(state.params), *batch, spec=spec)
                    record({"step": state.step,
                            "gradflow_dh_norm": [_scalar(v) for v in jax.device_get(flow.dh_norm)],
                            "gradflow_recurrent": [_scalar(v) for v in jax.device_get(flow.recurrent_contribution)]})
                if bar is not None:
                    bar.update(1)
                if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                    scores = {k: _scalar(v) for k, v in evaluate_split(first_copy(state.params), eval_data,
                                                                       spec).items()}
                    entry = {"step": state.step, "eval_loss": scores["loss"]}
                    if "accuracy" in scores:
                        entry["eval_accuracy"] = scores["accuracy"]
                    record(entry)
                    say(f"step {state.step}: {describe_eval(entry, info)}")
                    if info.classifier and cfg.target > 0 and (scores["accuracy"] or 0) >= cfg.target:
                        say(f"reached the target accuracy {cfg.target} at step {state.step}: stopping")
                        state.stopped_early = True
                        break
                if state.step % cfg.checkpoint_every == 0:
                    save()
                if stop["signal"] is not None:
                    if last_saved != state.step:
                        save()
                    name = signal.Signals(stop["signal"]).name
                    where = f"; checkpoint of step {state.step} in {out}: continue with --resume" if out else ""
                    raise SignalStop(f"stopped by {name} after step {state.step}{where}", state, stop["signal"])
            if last_saved != state.step:
                save()
    finally:
        state.params, state.opt_state = first_copy((state.params, state.opt_state))
        if bar is not None:
            bar.close()
        if metrics_file is not None:
            metrics_file.close()
    return state


def run_mesh(cfg: TrainConfig, mesh: Mesh | None = None) -> Mesh:
    """The devices a run splits its batches over: ``mesh``, by default every device (of every
    process); one device for truncated BPTT. A ``ValueError`` names a ``batch_size`` that does not
    divide by the mesh, or a multi-device mesh for truncated BPTT."""
    if cfg.tbptt_k1 is not None:
        if mesh is not None and mesh.size > 1:
            raise ValueError(f"devices: truncated BPTT (tbptt_k1) runs on one device, got a mesh of {mesh.size}")
        return make_mesh(jax.local_devices()[:1])
    mesh = make_mesh(jax.devices()) if mesh is None else mesh
    check_mesh(mesh, cfg.batch_size, "batch_size")
    return mesh


def _fmt(value, spec: str) -> str:
    return "nan" if value is None else format(value, spec)


def describe_eval(entry: dict, info: DataInfo) -> str:
    """``eval loss 1.2345 (1.781 bits/token), eval accuracy 0.612`` / ``eval MSE 0.0123 (RMSE 0.111)``."""
    loss = entry["eval_loss"]
    if loss is None:
        return "eval loss nan (non-finite)"
    if not info.classifier:
        return f"eval loss (MSE) {loss:.4g} (RMSE {math.sqrt(loss):.4g})"
    bits = f" ({loss / math.log(2):.3f} bits/{info.tokens[:-1] if info.tokens else 'token'})" if info.next_token else ""
    return f"eval loss {loss:.4f}{bits}, eval accuracy {_fmt(entry['eval_accuracy'], '.3f')}"


def _scalar(value):
    """A metric as a JSON value: a bool, a float, or None for NaN and inf (strict JSON has neither)."""
    value = np.asarray(jax.device_get(value))
    if value.dtype == np.bool_:
        return bool(value)
    return float(value) if np.isfinite(value) else None


def _progress_bar(total, initial, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; keep working without it
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)


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
    spec, info = spec_from_dict(raw["spec"]), _saved_info(raw, cfg)
    if spec != run_spec(cfg, info):
        raise checkpoint.CheckpointError(f"checkpoint {raw['path']}: its spec {spec} does not match its config")
    params, opt_state = restore(cfg, raw, spec)
    return {"params": params, "opt_state": opt_state, "step": int(raw["step"]), "config": cfg, "spec": spec,
            "data": info, "key": raw["key"], "path": raw["path"]}
