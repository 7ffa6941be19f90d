"""What defines a training run: :class:`TrainConfig`, its checks, and the model it trains.

Every check raises a ``ValueError`` that names the field, the expected and the received value,
before anything is traced. :func:`check_config` checks what the config alone decides;
:func:`check_run` what it asks of the data once that is loaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import typing
from dataclasses import dataclass
from pathlib import Path

import jax

from perceptron1_jax import online, validate
from perceptron1_jax.data import Data, DataInfo, check_missing, check_tokenizer, is_archive, source_kind
from perceptron1_jax.data.source import check_stream, check_val_fraction
from perceptron1_jax.optim import OPTIMIZERS, SCHEDULES
from perceptron1_jax.spec import SCANS, LayerSpec, ModelSpec, parse_layers  # noqa: F401 (SCANS: the CLI's choices)
from perceptron1_jax.tasks import TASKS, VOCAB, TaskSpec
from perceptron1_jax.truncated import windows

GRAD_SOURCES = ("bptt", "autodiff")
DTYPES = ("float32", "float64")
COMPUTE_DTYPES = ("bfloat16",)  # mixed precision: float32 parameters (bptt.in_compute_dtype)
# Fields that may differ between a checkpoint and a resumed run; everything else defines the run.
RESUMABLE_CHANGES = ("steps", "eval_every", "log_every", "checkpoint_every", "target_accuracy", "gradflow_every",
                     "max_nonfinite", "keep_best", "scan", "tensorboard")  # scan: how time is walked, the same math
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
    weight_decay: float = 0.0  # decoupled weight decay (optax.adamw; add_decayed_weights for SGD, RMSProp)
    schedule: str = "constant"
    warmup_steps: int = 0
    steps: int = 1000  # total optimizer steps of the run (a resumed run stops at the same step)
    eval_every: int = 50
    log_every: int = 10
    checkpoint_every: int = 500
    target_accuracy: float | None = None  # early stop at this eval accuracy; None: task default, 0: never
    seed: int = 0
    grad: str = "bptt"  # "bptt" (explicit) or "autodiff" (jax.grad)
    gradient: str | None = None  # an online gradient instead: "rtrl", "snap1", "eprop", "uoro" (perceptron1_jax.online)
    online_every: int | None = None  # online gradient: update every k steps along each sequence (None: once per batch)
    stream: bool = False  # online_every: each batch lane reads on through the text, state and influence kept
    tbptt_k1: int | None = None  # truncated BPTT: steps forward per update
    tbptt_k2: int | None = None  # truncated BPTT: steps backpropagated per update (default k1)
    dtype: str = "float32"
    gradflow_every: int = 0  # log the ||dL/dh_t|| profile every N steps (0: never)
    layers: str | None = None  # "cell:size,cell:size,..." per layer; None: one layer of cell/hidden
    bidirectional: bool = False  # every layer reads the sequence both ways
    scan: str = "sequential"  # how every layer walks time: "sequential" or "associative" (linear cells)
    dropout: float = 0.0  # inverted dropout on every layer's input after the first and on the head's
    embed_size: int | None = None  # token inputs: embedding size (None: the task's, or DEFAULT_EMBED)
    data: tuple[str, ...] | None = None  # your data: one .npz, one .csv, or text files (language modelling)
    classes: tuple[str, ...] | None = None  # text classification: one file of lines per class
    tokens: str | None = None  # text: "chars" or "words" (None: chars for data, words for classes)
    val_fraction: float = 0.1  # evaluation split of data without one (the last part of a text)
    max_vocab: int | None = None  # text: keep the most frequent tokens (ids, <unk> included)
    missing: str = "error"  # .ts files: a missing value ("?", "NaN") is an "error" or read as "zero"
    max_nonfinite: int = 10  # stop (exit status 3) after this many consecutive non-finite steps
    compute_dtype: str | None = None  # "bfloat16": forward and backward in bfloat16, float32 parameters
    keep_best: bool = False  # also keep best.msgpack: the checkpoint of the lowest evaluation loss
    test: tuple[str, ...] | None = None  # a test split, scored once at the end by the best checkpoint
    standardize: bool | None = None  # float inputs by training statistics (None: on for .ts files only)
    tensorboard: bool = False  # also write the metrics as TensorBoard event files in out/tensorboard

    def __post_init__(self):
        for name in ("data", "classes", "test"):  # one path or a list (TOML, JSON) -> a tuple of str
            value = getattr(self, name)
            if isinstance(value, (str, Path)):
                value = (value,)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.data is not None or self.classes is not None:
            object.__setattr__(self, "task", None)
        if self.test is None and self.data is not None and len(self.data) == 1 and is_archive(self.data[0]):
            object.__setattr__(self, "test", self.data)  # aeon:NAME: its TEST file is the test split

    @property
    def keeps_best(self) -> bool:
        """Whether the run keeps ``best.msgpack`` (``keep_best``, implied by a ``test`` split)."""
        return self.keep_best or self.test is not None

    @property
    def standardizes(self) -> bool:
        """``standardize``, or by default whether the data is a ``.ts`` file (or ``aeon:NAME``)."""
        if self.standardize is not None:
            return self.standardize
        return self.data is not None and source_kind(self.data) == "ts"

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


def config_layers(cfg: TrainConfig) -> tuple[LayerSpec, ...]:
    """``cfg.layers`` parsed, or one layer of ``cfg.cell``/``cfg.hidden``."""
    if cfg.layers is not None:
        return parse_layers(cfg.layers, cfg.bidirectional, cfg.scan)
    return (LayerSpec(cfg.cell, cfg.hidden, cfg.bidirectional, cfg.scan),)


def run_spec(cfg: TrainConfig, info: DataInfo) -> ModelSpec:
    """The model ``cfg`` trains on data described by ``info``: the data fixes inputs, outputs, loss
    and many-to-many; ``cfg`` the layers, dropout and the embedding size."""
    layers = config_layers(cfg)
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
    _check_types(cfg)
    _check_source(cfg)
    _check_choices(cfg)
    _check_numbers(cfg)
    _check_combinations(cfg)
    check_model_options(cfg)
    _check_inert(cfg)
    check_precision(cfg)
    if cfg.task is not None:  # what depends on the data is checked once it is loaded (check_run)
        _check_task_run(cfg)
    return cfg


_POSITIVE_INTS = ("hidden", "batch_size", "num_train", "num_eval", "steps", "eval_every", "log_every",
                  "checkpoint_every", "max_nonfinite")


def _check_types(cfg: TrainConfig) -> None:
    """Each field holds a value of its annotated type (a TOML file or a Python caller can give
    anything): ``lr = true`` or ``momentum = "0.5"`` is refused by name, as on the command line."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        value, hint = getattr(cfg, f.name), hints[f.name]
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
        if value is None and type(None) in typing.get_args(hint):
            continue
        kind = kinds[0]
        if kind is bool:
            ok, want = isinstance(value, bool), "true or false"
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "a positive int" if f.name in _POSITIVE_INTS else "an int"
        elif kind is float:
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif kind is str:
            ok, want = isinstance(value, str), "a string"
        else:  # tuple[str, ...]: file paths (__post_init__ made one path or a list a tuple)
            ok, want = isinstance(value, tuple) and all(isinstance(v, str) for v in value), "file paths"
        if not ok:
            raise ValueError(f"{f.name}: expected {want}, got {type(value).__name__} {value!r}")


def check_precision(cfg: TrainConfig) -> None:
    """A float64 run needs JAX's 64-bit mode: without it every array would silently be float32. The
    library never switches it on behind the caller's back (the command line, owning its process, does)."""
    if cfg.dtype == "float64" and not jax.config.read("jax_enable_x64"):
        raise ValueError("dtype: expected JAX's 64-bit mode on for float64, got it off in this process: call "
                         "jax.config.update('jax_enable_x64', True) before building anything (or set JAX_ENABLE_X64=1)")


def _default(name: str):
    return TrainConfig.__dataclass_fields__[name].default


def _check_inert(cfg: TrainConfig) -> None:
    """An option that cannot act in this combination is refused by name when it differs from its
    default (it would be saved in ``config.json`` and do nothing)."""
    kind = source_kind(cfg.data, cfg.classes) if cfg.task is None and (cfg.data or cfg.classes) else None
    text = kind in ("text", "classes")
    where = f"the task {cfg.task!r}" if cfg.task is not None else f"{kind} data"
    inert = [
        ("cell", cfg.layers is not None, f"layers {cfg.layers!r} names every layer's cell"),
        ("hidden", cfg.layers is not None, f"layers {cfg.layers!r} names every layer's size"),
        ("momentum", cfg.optimizer != "sgd", f"momentum applies to optimizer sgd, not {cfg.optimizer}"),
        ("warmup_steps", cfg.schedule != "warmup_cosine",
         f"warm-up applies to schedule warmup_cosine, not {cfg.schedule}"),
        ("num_train", cfg.task is None, f"{where} brings its own examples (num_train counts a task's)"),
        ("num_eval", cfg.task is None, f"{where} brings its own examples (num_eval counts a task's)"),
        ("val_fraction", cfg.task is not None, f"{where} draws its own evaluation split"),
        ("standardize", cfg.task is not None, f"{where} has fixed inputs (standardize applies to your data)"),
        ("missing", kind != "ts", f"missing values are read from .ts files, not {where}"),
        ("tokens", not text, f"tokens apply to text files (--data text, --classes), not {where}"),
        ("max_vocab", not text, f"a vocabulary is built from text files (--data text, --classes), not {where}"),
        *((name, cfg.gradient is not None, f"the online gradient {cfg.gradient!r} replaces it")
          for name in ("grad", "tbptt_k1", "tbptt_k2", "compute_dtype")),
        ("online_every", cfg.gradient is None, "it times the updates of an online gradient (gradient)"),
        ("stream", cfg.online_every is None, "it carries online learning's state from step to step (online_every)"),
        ("num_train", cfg.stream, "a stream reads the whole training text in order (num_train counts drawn examples)"),
    ]
    for name, cannot_act, why in inert:
        value = getattr(cfg, name)
        if cannot_act and value != _default(name):
            raise ValueError(f"{name}: expected the default {_default(name)!r} here ({why}), got {value!r}")
    if cfg.target_accuracy is not None and not 0 <= cfg.target_accuracy <= 1:
        raise ValueError(f"target_accuracy: expected a number in [0, 1] (0: never stop early), got "
                         f"{cfg.target_accuracy!r}")


def _choice(name, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {list(allowed)}, got {value!r}")


def _check_source(cfg: TrainConfig) -> None:
    """The task, or the files and how to read them."""
    if cfg.task is not None:
        _choice("task", cfg.task, TASKS)
    for name in ("data", "classes"):
        paths = getattr(cfg, name)
        if paths is not None and (not paths or not all(isinstance(p, str) and p for p in paths)):
            raise ValueError(f"{name}: expected one or more file paths, got {paths!r}")
    if cfg.data is not None and cfg.classes is not None:
        raise ValueError(f"classes: expected either data or classes, got both (data={list(cfg.data)})")
    if cfg.tokens is not None:
        check_tokenizer(cfg.tokens)
    if cfg.test is not None:
        if cfg.task is not None:
            raise ValueError(f"test: expected a run on your data (--data or --classes), got the task {cfg.task!r} "
                             "(a task's evaluation split is drawn fresh and never trained on)")
        if not cfg.test or not all(isinstance(p, str) and p for p in cfg.test):
            raise ValueError(f"test: expected one or more file paths, got {cfg.test!r}")
    check_val_fraction(cfg.val_fraction, allow_zero=cfg.test is not None)
    check_missing(cfg.missing)
    if cfg.max_vocab is not None and not (isinstance(cfg.max_vocab, int) and cfg.max_vocab >= 2):
        raise ValueError(f"max_vocab: expected an int >= 2 (ids, <unk> included), got {cfg.max_vocab!r}")


def _check_choices(cfg: TrainConfig) -> None:
    """The options that name one of a list: cell, optimizer, schedule, gradient, dtypes."""
    validate.get_cell(cfg.cell)
    _choice("optimizer", cfg.optimizer, OPTIMIZERS)
    _choice("schedule", cfg.schedule, SCHEDULES)
    _choice("grad", cfg.grad, GRAD_SOURCES)
    _choice("gradient", cfg.gradient, (None, *online.METHODS))
    _choice("dtype", cfg.dtype, DTYPES)
    if cfg.compute_dtype is not None:
        _choice("compute_dtype", cfg.compute_dtype, COMPUTE_DTYPES)
        if cfg.dtype != "float32":
            raise ValueError(f"compute_dtype: expected dtype float32 (the parameters) with compute_dtype "
                             f"{cfg.compute_dtype}, got dtype {cfg.dtype}")


def _check_numbers(cfg: TrainConfig) -> None:
    """Sizes, counts and rates."""
    for name in _POSITIVE_INTS:
        validate.check_positive_int(name, getattr(cfg, name))
    if cfg.gradflow_every:
        validate.check_positive_int("gradflow_every", cfg.gradflow_every)
    for name in ("seq_len", "online_every"):
        if getattr(cfg, name) is not None:
            validate.check_positive_int(name, getattr(cfg, name))
    for name in ("lr", "clip", "clip_value"):
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name}: expected a positive number, got {value!r}")
    if cfg.task is not None and cfg.num_train < cfg.batch_size:
        raise ValueError(f"num_train: expected at least batch_size = {cfg.batch_size} examples, got {cfg.num_train}")
    if cfg.warmup_steps < 0 or cfg.momentum < 0:
        raise ValueError(f"warmup_steps/momentum: expected values >= 0, got {cfg.warmup_steps}/{cfg.momentum}")
    if not (isinstance(cfg.weight_decay, (int, float)) and math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0):
        raise ValueError(f"weight_decay: expected a number >= 0, got {cfg.weight_decay!r}")


def _check_combinations(cfg: TrainConfig) -> None:
    """Options that exclude or need each other."""
    if cfg.compute_dtype is not None and cfg.tbptt_k1 is not None:
        raise ValueError(f"compute_dtype: truncated BPTT computes in the parameters' dtype, got compute_dtype "
                         f"{cfg.compute_dtype} with tbptt_k1={cfg.tbptt_k1}")
    if cfg.tbptt_k2 is not None and cfg.tbptt_k1 is None:
        raise ValueError("tbptt_k2: expected tbptt_k1 to be set as well, got tbptt_k1=None")
    if cfg.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ValueError("tensorboard: expected tensorboardX installed to write event files (pip install "
                         "'perceptron1_jax[tensorboard]'), got it missing")
    if cfg.embed_size is not None and cfg.task is not None and cfg.task_spec.vocab_size is None:
        raise ValueError(f"embed_size: expected a token task (chars), got the float-input task {cfg.task!r}")


def _check_truncated_layers(cfg: TrainConfig) -> None:
    if cfg.bidirectional or cfg.dropout:
        raise ValueError("tbptt_k1: truncated BPTT supports unidirectional layers without dropout, got "
                         f"bidirectional={cfg.bidirectional}, dropout={cfg.dropout}")


def _check_task_run(cfg: TrainConfig) -> None:
    """What a built-in task asks of the config: truncated BPTT's float inputs and windows, three_step's length."""
    run_spec(cfg, task_info(cfg.task_spec))  # builds the model: a bad layer or size raises here
    if cfg.tbptt_k1 is not None:
        if cfg.task_spec.vocab_size is not None:
            raise ValueError(f"tbptt_k1: truncated BPTT supports the float-input tasks, got token task {cfg.task!r}")
        _check_truncated_layers(cfg)
        windows(cfg.time, cfg.tbptt_k1, cfg.tbptt_k2, many_to_one=not cfg.task_spec.many_to_many)
    if cfg.stream and cfg.task_spec.make_stream is None:
        raise ValueError(f"stream: expected a task whose examples continue each other (chars), got {cfg.task!r}")
    if cfg.task == "three_step" and cfg.time != 3:
        raise ValueError(f"seq_len: expected 3 for the three_step task, got {cfg.time}")


def check_model_options(cfg: TrainConfig) -> TrainConfig:
    """The model options that do not depend on the data: embedding size, layers, dropout."""
    if cfg.embed_size is not None:
        validate.check_positive_int("embed_size", cfg.embed_size)
    ModelSpec(config_layers(cfg), 1, input_size=1, dropout=cfg.dropout)  # checks the layers and the dropout rate
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
        _check_truncated_layers(cfg)
        windows(data.train.xs.shape[1], cfg.tbptt_k1, cfg.tbptt_k2, many_to_one=not info.many_to_many)
    if cfg.gradient is not None:
        online.check_online_training(spec, cfg.gradient, cfg.batch_size, cfg.dtype, cfg.online_every,
                                     data.train.xs.shape[1], data.train.lengths is not None)
    if cfg.stream:
        check_stream(data.train, info, cfg.batch_size)
    return spec


def config_from_dict(values: dict) -> TrainConfig:
    """A config from a plain dict (a TOML file, a checkpoint); unknown keys are an error."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; expected keys among {sorted(known)}")
    return check_config(TrainConfig(**values))
