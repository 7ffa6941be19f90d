"""The options of a run (``train``'s, one per :class:`~perceptron1_jax.training.config.TrainConfig`
field, with its help text, type and choices) and the value parsers they share."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import VARIED

HELP = {
    "task": "task to train on (see --help of 'train' for the list)",
    "cell": "recurrent cell: elman, lstm, gru, mingru or minlstm (Feng et al. 2024)",
    "hidden": "hidden size",
    "seq_len": "sequence length / lag (default: the task's)",
    "batch_size": "minibatch size",
    "num_train": "training examples generated from the seed",
    "num_eval": "held-out evaluation examples",
    "optimizer": "sgd (with --momentum), adam or rmsprop (optax)",
    "lr": "learning rate (> 0)",
    "momentum": "SGD momentum (0 for plain SGD)",
    "clip": "clip gradients by global norm to this bound (optax.clip_by_global_norm)",
    "clip_value": "clip every gradient entry to [-v, v] (optax.clip)",
    "weight_decay": "decoupled weight decay (adam: optax.adamw; sgd, rmsprop: optax.add_decayed_weights)",
    "schedule": "learning-rate schedule: constant, cosine or warmup_cosine",
    "warmup_steps": "warm-up steps of warmup_cosine",
    "steps": "total optimizer steps of the run (a --resume stops at the same step)",
    "eval_every": "evaluate on the held-out split every N steps",
    "log_every": "log metrics every N steps",
    "checkpoint_every": "write a checkpoint every N steps (and at the end)",
    "target_accuracy": "stop early at this eval accuracy (default: the task's; 0: never)",
    "seed": "seed of every random choice (params, data, shuffling)",
    "grad": "gradient source: bptt (explicit) or autodiff (jax.grad)",
    "gradient": "an online gradient instead of --grad, computed forward in time over each batch's sequences: "
                "rtrl (exact), snap1, eprop or uoro (docs/online.md)",
    "online_every": "with --gradient: update every K steps along each batch's sequences, the state and influence "
                    "carried across the updates (true online learning; many-to-many, K divides the length)",
    "stream": "with --online-every: each lane of the batch reads on through the training text, one window per "
              "step, the state and influence carried from step to step and saved in every checkpoint (text, chars)",
    "tbptt_k1": "truncated BPTT: steps forward per update",
    "tbptt_k2": "truncated BPTT: steps backpropagated per update (default k1)",
    "dtype": "float32 or float64",
    "gradflow_every": "log the ||dL/dh_t|| profile to metrics.jsonl every N steps (0: never)",
    "layers": "stacked layers as cell:size per layer, e.g. lstm:128,lstm:64 (default: one layer of --cell/--hidden)",
    "bidirectional": "every layer also reads the sequence backwards (outputs [h_fwd, h_bwd])",
    "scan": "how every layer walks time: sequential (lax.scan), or associative (an associative scan of depth log T "
            "forwards and backwards, for cells linear in h: mingru, minlstm; pays on accelerators)",
    "dropout": "inverted dropout rate on each layer's input after the first and on the head's input",
    "embed_size": "embedding size of token inputs (default: the task's, or 32 for data)",
    "data": "train on your data: one .npz (xs, labels or targets, ...), one .csv series, one .ts file (the "
            "UCR/UEA archives' format), aeon:NAME (a dataset shipped inside aeon's package: its TRAIN file, and "
            "its TEST file as --test; pip install 'perceptron1_jax[archives]'), or text files (language modelling)",
    "classes": "text classification: one file of lines per class (one example per line)",
    "tokens": "text tokens: chars or words (default: chars for --data text, words for --classes)",
    "val_fraction": "evaluation split of data without one (language modelling: the end of the text); with --test, "
                    "the validation split (0: none, the last checkpoint is tested)",
    "max_vocab": "text: keep the most frequent tokens (ids, <unk> included; default: all)",
    "missing": ".ts files: a missing value ('?' or NaN) is an error, or read as zero",
    "max_nonfinite": "stop with exit status 3 after this many consecutive steps with a non-finite loss or gradient "
                     "(each such step is skipped)",
    "compute_dtype": "mixed precision: forward and backward in bfloat16, parameters and the update in float32",
    "keep_best": "also keep best.msgpack in --out: the checkpoint of the lowest evaluation loss (eval, predict "
                 "and generate read it as a file)",
    "test": "a test split of the same kind as --data/--classes, never seen in training: evaluations use a "
            "validation split carved from the training data (--val-fraction, stratified by class; 0: none), "
            "the best checkpoint is kept (--keep-best) and scored once on the test split at the end "
            "(--data aeon:NAME sets it to NAME's TEST file)",
    "tensorboard": "also write the metrics as TensorBoard event files in --out/tensorboard (tensorboard --logdir "
                   "runs/; pip install 'perceptron1_jax[tensorboard]')",
    "standardize": "standardize each input feature by the training split's mean and standard deviation, saved "
                   "with the run and applied by eval, predict and the test split (default: on for .ts files and "
                   "aeon:NAME, off otherwise)",
}


def _base_type(annotation):
    """``int | None`` -> int; ``str`` -> str."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


# Options whose value is itself a comma list (layers), or paths, which may hold commas.
_COMMAS_ALLOWED = ("layers", "data", "classes")


def float_list(text: str):
    """``1e-3`` -> 0.001; ``1e-3,3e-3`` -> [0.001, 0.003] (a population's values)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def one_value(kind):
    """``kind``, refusing a comma list: only the population options vary between members."""

    def parse(text: str):
        if "," in text:
            raise argparse.ArgumentTypeError(
                f"expected one value, got the list {text!r}: a population varies only --seeds, "
                f"{', '.join('--' + n.replace('_', '-') for n in VARIED)} (this option sets the shapes or the "
                "program every member shares)")
        return kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")  # argparse names the type in its messages
    return parse


def add_config_options(parser: argparse.ArgumentParser) -> None:
    from perceptron1_jax.cells import CELLS
    from perceptron1_jax.data import MISSING, TOKENIZERS
    from perceptron1_jax.online import METHODS as ONLINE_METHODS
    from perceptron1_jax.optim import OPTIMIZERS, SCHEDULES
    from perceptron1_jax.tasks import TASKS
    from perceptron1_jax.training.config import COMPUTE_DTYPES, DTYPES, GRAD_SOURCES, SCANS

    choices = {"task": list(TASKS), "cell": list(CELLS), "optimizer": list(OPTIMIZERS),
               "schedule": list(SCHEDULES), "grad": list(GRAD_SOURCES), "dtype": list(DTYPES),
               "gradient": list(ONLINE_METHODS),
               "tokens": list(TOKENIZERS), "compute_dtype": list(COMPUTE_DTYPES), "missing": list(MISSING),
               "scan": list(SCANS)}
    defaults = TrainConfig()
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        kind = _base_type(hints[f.name])
        default = getattr(defaults, f.name)
        if kind is bool:
            optional = kind is not hints[f.name]  # bool | None: --name / --no-name, unset by default
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=argparse.SUPPRESS,
                                action=argparse.BooleanOptionalAction,  # --name / --no-name: either beats a file
                                help=HELP[f.name] if optional else f"{HELP[f.name]} (default: {default})")
            continue
        many = typing.get_origin(kind) is tuple
        if f.name in VARIED:
            kind, extra = float_list, " (a comma list trains a population)"
        elif many or f.name in _COMMAS_ALLOWED:
            kind, extra = str, ""
        else:
            kind, extra = one_value(kind), ""
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=kind, choices=choices.get(f.name),
            nargs="+" if many else None, metavar="PATH" if many else ("X[,X...]" if f.name in VARIED else None),
            default=argparse.SUPPRESS, help=f"{HELP[f.name]}{extra} (default: {default})",
        )
