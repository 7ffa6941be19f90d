"""The ``perceptron1`` command: ``train``, ``eval``, ``generate``, ``predict``, ``gradcheck``,
``gradflow`` and ``bench``.

Run as a command (``perceptron1`` or ``python -m perceptron1_jax``) it puts itself under
:data:`perceptron1_jax.bench.ALLOCATOR_ENV` (with glibc's ``mallopt``, in the running process; by
re-executing itself where that cannot be done) and gives itself one host CPU device per core unless
``XLA_FLAGS`` sets a count (set ``PERCEPTRON1_NO_REEXEC=1`` to skip both).

Option precedence for ``train``: the defaults of :class:`TrainConfig`, then (with ``--resume``) the
config saved in the run's checkpoint, then ``--config file.toml``, then the options on the command
line. Bad options and bad data print one line ``perceptron1: error: ...`` and exit with status 2.
``generate`` writes only the prompt and the generated text to standard output.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tomllib
import types
import typing
from pathlib import Path

from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import VARIED, Population, check_population

EXIT_USAGE = 2
EXIT_STATUSES = ("Exit status: 0 done (also when stopped early at the target); 1 a failed write (disk full: the "
                 "previous checkpoint is intact) or an internal error; 2 bad usage, options, data or out folder; 3 "
                 "stopped after --max-nonfinite consecutive non-finite steps (a population: every member); 143 "
                 "(SIGTERM) or 130 (SIGINT, Ctrl-C) stopped by a signal after checkpointing the step reached "
                 "(continue with --resume).")


class UsageError(Exception):
    """A bad option or config: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, status 2
        raise UsageError(message)


_HELP = {
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


def _float_list(text: str):
    """``1e-3`` -> 0.001; ``1e-3,3e-3`` -> [0.001, 0.003] (a population's values)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or a comma list of numbers, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _one_value(kind):
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


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    from perceptron1_jax.cells import CELLS
    from perceptron1_jax.data import MISSING, TOKENIZERS
    from perceptron1_jax.optim import OPTIMIZERS, SCHEDULES
    from perceptron1_jax.tasks import TASKS
    from perceptron1_jax.training.config import COMPUTE_DTYPES, DTYPES, GRAD_SOURCES, SCANS

    choices = {"task": list(TASKS), "cell": list(CELLS), "optimizer": list(OPTIMIZERS),
               "schedule": list(SCHEDULES), "grad": list(GRAD_SOURCES), "dtype": list(DTYPES),
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
                                help=_HELP[f.name] if optional else f"{_HELP[f.name]} (default: {default})")
            continue
        many = typing.get_origin(kind) is tuple
        if f.name in VARIED:
            kind, extra = _float_list, " (a comma list trains a population)"
        elif many or f.name in _COMMAS_ALLOWED:
            kind, extra = str, ""
        else:
            kind, extra = _one_value(kind), ""
        parser.add_argument(
            "--" + f.name.replace("_", "-"), dest=f.name, type=kind, choices=choices.get(f.name),
            nargs="+" if many else None, metavar="PATH" if many else ("X[,X...]" if f.name in VARIED else None),
            default=argparse.SUPPRESS, help=f"{_HELP[f.name]}{extra} (default: {default})",
        )


CELL_NAMES = ("elman", "lstm", "gru", "mingru", "minlstm")  # perceptron1_jax.cells.CELLS, without importing JAX
_MEMBER_HELP = "of a population's run: this member (0 to members - 1; population.json lists them)"


def build_parser() -> argparse.ArgumentParser:
    from perceptron1_jax.tasks import TASKS

    parser = _Parser(prog="perceptron1", description="Recurrent networks trained with explicit BPTT (JAX).")
    parser.add_argument("--version", action="version", version=f"perceptron1 {_version()}")
    parser.add_argument("--compile-cache", metavar="DIR|off", help="keep XLA's compiled programs in DIR between "
                        "runs (a second start of the same model skips compiling), or off (default: "
                        "$PERCEPTRON1_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/perceptron1_jax/xla, ~/.cache/... without it)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    task_list = "; ".join(f"{t.name}: {t.description}" for t in TASKS.values())
    train = commands.add_parser(
        "train", help="train a network on a synthetic task or your data",
        description=f"Train a recurrent network on a built-in task ({task_list}) or on your data (--data, "
                    f"--classes). {EXIT_STATUSES}",
    )
    _add_config_options(train)
    train.add_argument("--seeds", type=_one_value(int), help="train a population: this many members per setting, "
                       "seeds --seed, --seed + 1, ... (with comma lists of --lr, --momentum, --clip, --clip-value, "
                       "--dropout, --weight-decay: the grid of every list times the seeds; see docs/populations.md)")
    train.add_argument("--config", type=Path, help="TOML file of options (keys as the long options, '_' or '-')")
    train.add_argument("--out", type=Path, help="run folder for metrics, plots, checkpoints, one run per folder "
                       "(default runs/TASK-LAYERS, e.g. runs/copy-gru64 or runs/book-lstm256-lstm128)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its newest good "
                       "checkpoint (a run stopped before its first checkpoint: its config.json from step 0)")
    train.add_argument("--overwrite", action="store_true", help="replace the run that --out holds (its files are "
                       "removed first); without it, a folder holding another run is refused")
    train.add_argument("--print-config", action="store_true", help="print the effective configuration (defaults, "
                       "the run resumed, --config, these options) as TOML that --config loads, and exit")
    train.add_argument("--no-progress", action="store_true", help="print log lines instead of a progress bar")
    train.add_argument("--no-gradcheck", action="store_true", help="skip the explicit-vs-jax.grad check at step 0")
    scale = train.add_argument_group(
        "devices and processes", "Each step splits its batch over the devices (on a CPU, the command gives itself one "
        "device per core unless XLA_FLAGS sets a count); several processes (hosts) each run the same command with "
        "their own --process-id, and process 0 writes the run folder. See docs/scaling.md.")
    scale.add_argument("--devices", type=int, help="devices per process to split each batch over (default: all)")
    scale.add_argument("--coordinator", help="HOST:PORT of process 0, for a run over several processes "
                                             "(default: JAX_COORDINATOR_ADDRESS, if set)")
    scale.add_argument("--num-processes", type=int, help="how many processes take part (with --coordinator)")
    scale.add_argument("--process-id", type=int, help="this process's index, 0 to --num-processes - 1")

    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its evaluation split or on a file")
    evaluate.add_argument("path", type=Path, help="a checkpoint file or a run folder (its newest checkpoint; with "
                                                  "--data, its best.msgpack when it kept one)")
    evaluate.add_argument("--data", type=Path, nargs="+", metavar="PATH",
                          help="score this labelled file instead (any kind the run trained on; .ts, .npz, .csv, "
                               "text; aeon:NAME for its TEST file), standardized as the run's inputs were")
    evaluate.add_argument("--step", type=int, help="the checkpoint of this step in the run folder")
    evaluate.add_argument("--member", type=int, help=_MEMBER_HELP)

    gen = commands.add_parser(
        "generate", help="write text with a language model run (prompt and text to standard output)",
        description="Read the prompt once, then sample one token per step carrying the model's state; prints "
                    "the prompt followed by the generated text, and nothing else, to standard output.",
    )
    gen.add_argument("run", type=Path, help="a run folder (its newest checkpoint) or a checkpoint file")
    gen.add_argument("--prompt", required=True, help="text to start from (tokenized as the training text)")
    gen.add_argument("--length", type=int, default=200, help="tokens to generate (default: 200)")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature; 0 is greedy (default: 1)")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens (default: all)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same text")
    gen.add_argument("--member", type=int, help=_MEMBER_HELP)

    pred = commands.add_parser(
        "predict", help="predictions of a run for new inputs (.npz, .csv, text lines or one string)",
        description="Predict with a trained run: classifiers print the class and its probability, regression "
                    "models their outputs; --json prints one JSON object per example in input order.",
    )
    pred.add_argument("run", type=Path, help="a run folder (its newest checkpoint) or a checkpoint file")
    source = pred.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="an .npz (xs, optional lengths and resets), a .csv series, or a text "
                                                  "file of one example per line")
    source.add_argument("--text", help="one example as a string")
    pred.add_argument("--member", type=int, help=_MEMBER_HELP)
    pred.add_argument("--ensemble", action="store_true", help="a population's members of one setting together: the "
                      "mean of their probabilities (classifiers) or outputs (regression), leaving out members frozen "
                      "for non-finite values (named on standard error)")
    pred.add_argument("--setting", type=int, help="with --ensemble: the setting whose seeds to average (0 to "
                      "settings - 1, as in summary.json; needed when the population has several)")
    pred.add_argument("--json", action="store_true", help='one JSON object per line: "index" (the example\'s '
                      'position: the line of a text file, from 0), "prediction" and, for classifiers, "probabilities"')

    flow = commands.add_parser(
        "gradflow", help="||dL/dh_t|| through time from one explicit backward pass (table + PNG)",
        description="Gradient flow: the norm of dL/dh_t for every step of one explicit BPTT pass on a "
                    "batch of a task, at initialization or from a checkpoint.",
    )
    flow.add_argument("--cell", choices=[*CELL_NAMES, "all"],
                      help="a cell, or all: elman, lstm and gru (default: all)")
    flow.add_argument("--task", choices=sorted(TASKS), help="(default: copy)")
    flow.add_argument("--seq-len", type=int, help="(default: 100)")
    flow.add_argument("--hidden", type=int, help="(default: 64)")
    flow.add_argument("--batch", type=int, default=32)
    flow.add_argument("--spectral-radius", type=float, help="rescale each W_h block to this spectral radius")
    flow.add_argument("--checkpoint", type=Path, help="use the params, model and data of a run (file or run folder; "
                      "--cell, --task, --seq-len, --hidden, --seed and --spectral-radius are then refused)")
    flow.add_argument("--member", type=int, help=_MEMBER_HELP)
    flow.add_argument("--seed", type=int, help="(default: 0)")
    flow.add_argument("--png", type=Path, default=Path("gradflow.png"), help="where to write the plot")

    bench_parser = commands.add_parser(
        "bench", help="training-step speed and memory vs jax.grad, Flax and PyTorch (if installed)",
        description="Benchmark one training step (forward + loss + backward + Adam) of our explicit BPTT "
                    "against jax.grad through lax.scan, Flax nn.RNN and PyTorch; writes a markdown table and JSON.",
    )
    from perceptron1_jax.bench import add_arguments

    add_arguments(bench_parser)

    check = commands.add_parser("gradcheck", help="explicit BPTT vs jax.grad on random params (float64)")
    check.add_argument("--cell", choices=[*CELL_NAMES, "all"], default="all", help="a cell, or all of them")
    check.add_argument("--batch", type=int, default=4)
    check.add_argument("--seq-len", type=int, default=12)
    check.add_argument("--input", type=int, default=3)
    check.add_argument("--hidden", type=int, default=8)
    check.add_argument("--classes", type=int, default=5)
    check.add_argument("--many-to-many", action="store_true", help="a label at every step")
    check.add_argument("--lengths", action="store_true", help="random sequence lengths")
    check.add_argument("--seed", type=int, default=0)
    return parser


def _read_toml(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except OSError as err:
        raise UsageError(f"--config: cannot read {path} ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config: {path} is not valid TOML ({err})") from err
    return {k.replace("-", "_"): v for k, v in values.items()}


# What an option typed on the command line displaces from the lower sources (the checkpoint or
# config.json resumed, the TOML file): the options it cannot be combined with.
_DISPLACES = {"task": ("data", "classes", "test"), "data": ("task", "classes"), "classes": ("task", "data"),
              "cell": ("layers",), "hidden": ("layers",), "layers": ("cell", "hidden")}


def _train_config(args) -> tuple[TrainConfig, Population | None]:
    """The run's config and, for a population, its :class:`Population` (lists of the varied
    options, from the command line or a TOML file; ``--seeds``; or the run resumed)."""
    from perceptron1_jax import checkpoint
    from perceptron1_jax.training import check_resumable, config_from_dict
    from perceptron1_jax.training.run_folder import saved_config

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(args, f.name)}
    _check_conflicts(given, "")
    if args.resume and args.overwrite:
        raise UsageError("--overwrite: expected either --resume (continue the run) or --overwrite (replace it), "
                         "got both")
    values, saved, lists = {}, None, {}
    if args.resume and args.out is not None:
        try:
            raw = checkpoint.latest_good_checkpoint(args.out)
        except checkpoint.CheckpointError as err:  # a newer format: never skipped
            raise UsageError(str(err)) from err
        if raw is not None:
            saved = raw["config"]
            if raw.get("population") is not None:
                lists = {k: v for k, v in raw["population"]["population"].items() if v is not None}
        else:  # stopped before its first checkpoint: its config.json, from step 0
            saved = saved_config(args.out)
            if saved is None:
                raise UsageError(f"--resume: expected a run folder holding a checkpoint or config.json, got "
                                 f"{args.out} ({'no such folder' if not args.out.exists() else 'none there'}): "
                                 "nothing to resume (leave out --resume to start a new run)")
            if not args.print_config:
                print(f"perceptron1 train: no checkpoint in {args.out}: starting its config.json from step 0")
        values.update(saved)
    if args.config is not None:
        from_file = _read_toml(args.config)
        _check_conflicts(from_file, f"--config: {args.config}: ")
        _merge(values, from_file)
    _merge(values, given)
    given_lists = {name: values[name] for name in (*VARIED, "seeds") if isinstance(values.get(name), list)}
    if "seeds" in values:  # a TOML key
        given_lists["seeds"] = values.pop("seeds")
    if args.seeds is not None:
        given_lists["seeds"] = args.seeds
    if given_lists:
        lists = given_lists
    for name, value in lists.items():
        if name != "seeds":
            if not value:
                raise UsageError(f"--{name.replace('_', '-')}: expected a number or a non-empty list of numbers, "
                                 "got []")
            values[name] = value[0]  # the config holds the first member's value
    _float64_mode(values.get("dtype"))
    try:
        cfg = config_from_dict(values)
        if saved is not None:
            check_resumable(config_from_dict(saved), cfg)
        population = Population(**lists) if lists else None
        if population is not None:
            check_population(cfg, population)
    except (ValueError, TypeError) as err:  # they name the option and both values
        message = str(err)
        if message.startswith("population."):  # "population.seeds: ..." -> "--seeds: ..."
            name, _, rest = message.removeprefix("population.").partition(":")
            message = f"--{name.replace('_', '-')}:{rest}"
        raise UsageError(message) from err
    return cfg, population


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perceptron1_jax")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "(not installed)"


def config_toml(cfg: TrainConfig, population: Population | None) -> str:
    """``cfg`` (and a population's lists and seeds) as TOML that ``--config`` loads back to the same
    run: one key per field that is set (None is a field's default, and TOML has no null)."""
    import json

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v) if isinstance(v, str) else repr(v)

    values = dataclasses.asdict(cfg)
    if cfg.task is None:
        values.pop("task")  # data or classes replace the task
    if cfg.layers is not None:
        values.pop("cell"), values.pop("hidden")  # layers names every layer's cell and size
    if population is not None:
        values.update({k: list(v) for k, v in population.to_dict().items() if k != "seeds" and v is not None})
        values["seeds"] = population.seeds
    return "".join(f"{k} = {value(v)}\n" for k, v in values.items() if v is not None)


def _check_conflicts(options: dict, where: str) -> None:
    """One source (the command line, or a TOML file) may not name both a task and data, or both
    layers and a cell or size: which would win is not for us to guess."""
    def name(key):
        return f"--{key.replace('_', '-')}" if not where else key

    source = sorted({"data", "classes"} & set(options))
    if "task" in options and source:
        raise UsageError(f"{where}{name('task')}: expected no {name('task')} with {name(source[0])} (your data "
                         f"replaces the task), got {name('task')} {options['task']}")
    shorthand = sorted({"cell", "hidden"} & set(options))
    if "layers" in options and shorthand:
        raise UsageError(f"{where}{name(shorthand[0])}: expected no {name('cell')}/{name('hidden')} with "
                         f"{name('layers')} (it names every layer's cell and size), got {name(shorthand[0])} "
                         f"{options[shorthand[0]]}")


def _merge(values: dict, higher: dict) -> None:
    """``values`` updated by the ``higher`` source, whose options also displace the lower ones they
    cannot be combined with (``--cell`` typed over a file's ``layers``, ``--task`` over its ``data``)."""
    for name in higher:
        for displaced in _DISPLACES.get(name, ()):
            if displaced not in higher:
                values.pop(displaced, None)
    values.update(higher)


def _float64_mode(dtype) -> None:
    """The command owns its process: a float64 run (or a run of float64 read back) turns JAX's
    64-bit mode on before any array exists; the library itself never does (it refuses instead)."""
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def _run_dtype(path) -> str | None:
    """The dtype of the run a checkpoint file or run folder holds (None when unreadable: the load
    that follows names the problem)."""
    from perceptron1_jax import checkpoint

    path = Path(path)
    try:
        if path.is_dir():
            found = checkpoint.list_checkpoints(path)
            if not found:
                return None
            path = found[0]
        return checkpoint.read_checkpoint(path)["config"].get("dtype")
    except (checkpoint.CheckpointError, OSError, KeyError, TypeError, AttributeError):
        return None


def describe_spec(spec) -> str:
    """``2 x bidirectional lstm:128 -> lstm:64, dropout 0.2`` style summary of a ModelSpec."""
    layers = " -> ".join(f"{'bi-' if s.bidirectional else ''}{s.cell}:{s.hidden_size}"
                         f"{' (associative scan)' if s.scan == 'associative' else ''}" for s in spec.layers)
    inputs = f"embed {spec.vocab_size}x{spec.embed_size} -> " if spec.tokens else ""
    drop = f", dropout {spec.dropout:g}" if spec.dropout else ""
    return f"{inputs}{layers} -> {spec.loss} head ({spec.num_outputs}){drop}"


def _start_processes(args) -> None:
    """Join a multi-process run when --coordinator/--num-processes/--process-id (or
    JAX_COORDINATOR_ADDRESS) ask for one; before anything runs on JAX."""
    import os

    from perceptron1_jax.parallel import initialize_distributed

    given = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
             "--process-id": args.process_id}
    if all(v is None for v in given.values()) and not os.environ.get("JAX_COORDINATOR_ADDRESS"):
        return
    try:
        initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    except (ValueError, RuntimeError) as err:
        named = ", ".join(f"{k} {v}" for k, v in given.items() if v is not None) or "JAX_COORDINATOR_ADDRESS"
        raise UsageError(f"--coordinator/--num-processes/--process-id: cannot start the multi-process run "
                         f"({named}): {str(err).splitlines()[0]}") from err


def _train_mesh(args):
    """The mesh of --devices: that many devices of every process (default: all)."""
    import jax

    from perceptron1_jax.parallel import make_mesh

    local = len(jax.local_devices())
    if args.devices is None:
        return None  # train's default (run_mesh): every device, one for truncated BPTT
    if not 1 <= args.devices <= local:
        raise UsageError(f"--devices: expected 1 to {local} (the devices of this process), got {args.devices}")
    return make_mesh([d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)[:args.devices]])


def cmd_train(args) -> int:
    import jax

    from perceptron1_jax.training import (
        check_out_dir,
        check_run,
        run_data,
        run_mesh,
    )
    from perceptron1_jax.training.device_choice import describe_devices

    _start_processes(args)
    cfg, population = _train_config(args)
    if args.print_config:
        print(config_toml(cfg, population), end="")
        return 0
    if population is not None:
        return _train_population(args, cfg, population)
    out = _out_folder(args, cfg)
    args.out = out
    writer = jax.process_index() == 0
    try:
        data = run_data(cfg)
        spec = check_run(cfg, data)
        mesh = run_mesh(cfg, _train_mesh(args), spec)
        if writer:
            check_out_dir(out, resume=args.resume, overwrite=args.overwrite)
    except ValueError as err:  # DataError included: names the file, array or line
        raise UsageError(str(err)) from err
    say = print if writer else (lambda *a, **k: None)
    what = f"task {cfg.task}" if cfg.task is not None else f"data {data.info.source} ({data.info.kind})"
    processes = f" in {jax.process_count()} processes" if jax.process_count() > 1 else ""
    split = f"{data.eval.xs.shape[0]} evaluation" if data.test is None else \
        f"{data.eval.xs.shape[0]} validation / {data.test.xs.shape[0]} test"
    scaled = ", inputs standardized" if data.info.input_mean is not None else ""
    devices = describe_devices(cfg, mesh, out, resume=args.resume, default=args.devices is None)
    say(f"perceptron1 train: {what}, {data.train.xs.shape[0]} training / {split} examples of "
        f"{data.train.xs.shape[1]} steps{scaled}, model {describe_spec(spec)}, {cfg.optimizer} lr {cfg.lr}, "
        f"{cfg.steps} steps, gradients from {cfg.grad}, batch split over {devices}{processes}; run folder {out}")
    state, status = _train_until_done(args, cfg, out, data=data, mesh=None if args.devices is None else mesh)
    if state is None:
        return status
    evals = [h for h in state.history if "eval_loss" in h]
    if not writer:
        return 0
    if evals:
        from perceptron1_jax.training import describe_eval

        last = evals[-1]
        verdict = ""
        if state.info.classifier:
            chance = f"chance {state.chance:.3f}"
            if cfg.target > 0:
                reached = "reached" if (last["eval_accuracy"] or 0) >= cfg.target else "did not reach"
                verdict = f" ({reached} the target {cfg.target}; {chance})"
            else:
                verdict = f" ({chance})"
        print(f"final: step {last['step']}, {describe_eval(last, state.info)}{verdict}")
    if state.test is not None:
        from perceptron1_jax.training import describe_test

        which = "the best validation loss" if data.eval.xs.shape[0] else "no validation split: the last step"
        print(f"final: test split, checkpoint of step {state.test['test_checkpoint_step']} ({which}): "
              f"{describe_test(state.test, state.info)}")
    _plot_or_hint("loss curve", lambda plotting: plotting.plot_metrics(out / "metrics.jsonl", out / "metrics.png"))
    return 0


def _out_folder(args, cfg: TrainConfig, suffix: str = "") -> Path:
    """``--out``, by default ``runs/<task or first file>-<layers><suffix>``: the model as it is, each
    layer as ``[bi]<cell><size>`` (``runs/copy-gru4``, ``runs/book-bilstm64-lstm32-population``)."""
    from perceptron1_jax.training.config import config_layers

    if args.out is not None:
        return args.out
    name = cfg.task if cfg.task is not None else Path((cfg.data or cfg.classes)[0]).stem.replace(":", "-")
    layers = "-".join(f"{'bi' if layer.bidirectional else ''}{layer.cell}{layer.hidden_size}"
                      for layer in config_layers(cfg))
    return Path("runs") / f"{name}-{layers}{suffix}"


def _train_until_done(args, cfg: TrainConfig, out: Path, *, usage_errors: tuple = (), **kwargs):
    """``(state, None)`` of :func:`~perceptron1_jax.training.train`, or ``(None, exit status)``
    when it stopped (its message printed); a checkpoint it cannot resume is a usage error."""
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.training import MismatchError, TrainingStopped, WriteFailed, train

    try:
        return train(cfg, out, resume=args.resume, progress=not args.no_progress and sys.stderr.isatty(),
                     check_grads=not args.no_gradcheck, overwrite=args.overwrite, **kwargs), None
    except TrainingStopped as stop:
        print(f"perceptron1: {'error' if isinstance(stop, WriteFailed) else 'stopped'}: {stop}", file=sys.stderr)
        return None, stop.exit_status
    except (CheckpointError, MismatchError, *usage_errors) as err:  # --resume onto a newer format, other data, ...
        raise UsageError(str(err)) from err


def _train_population(args, cfg: TrainConfig, population: Population) -> int:
    """``train`` of a population: one program for every member (see docs/populations.md)."""
    from perceptron1_jax.training import member_configs

    out = _out_folder(args, cfg, "-population")
    try:
        members = len(member_configs(cfg, population))
        mesh = _train_mesh(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    print(f"perceptron1 train: population of {members} members ({population.seeds} seeds per setting), "
          f"{'task ' + cfg.task if cfg.task is not None else 'data'}, {cfg.steps} steps; run folder {out}")
    state, status = _train_until_done(args, cfg, out, mesh=mesh, population=population,
                                      usage_errors=(ValueError,))  # bad members, data, memory
    if state is None:
        return status
    settings = len(state.summary['settings'])
    print(f"summary: {out / 'summary.json'} ({settings} setting{'s' if settings != 1 else ''} over "
          f"{population.seeds} seeds)")
    return 0


def _plot_or_hint(label: str, draw) -> None:
    """Print where ``draw(plotting_module)`` wrote its PNG, or how to get matplotlib."""
    try:
        from perceptron1_jax import plotting

        print(f"{label}: {draw(plotting)}")
    except ImportError:
        print(f"{label}: not drawn (matplotlib missing): pip install 'perceptron1_jax[plot]'")


def _load_run(path, member=None):
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.runs import load_run

    _float64_mode(_run_dtype(path))
    try:
        return load_run(path, member=member)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
    except ValueError as err:  # "member: ..." -> "--member: ..."
        message = str(err)
        raise UsageError(f"--{message}" if message.startswith("member:") else message) from err


def _ensemble_members(path, setting):
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.runs import ensemble_members

    _float64_mode(_run_dtype(path))
    try:
        runs, left_out = ensemble_members(path, setting)
    except (CheckpointError, ValueError) as err:  # "setting: ..." -> "--setting: ..."
        message = str(err)
        raise UsageError(f"--{message}" if message.startswith("setting:") else message) from err
    if left_out:
        print(f"perceptron1: warning: --ensemble leaves out member{'s' if len(left_out) > 1 else ''} "
              f"{', '.join(map(str, left_out))}, frozen for non-finite values", file=sys.stderr)
    return runs


def cmd_eval(args) -> int:
    from perceptron1_jax.data import chance, load_heldout
    from perceptron1_jax.training import check_same_data, describe_eval, evaluate_split, run_data

    run = _load_run(_eval_checkpoint(args), args.member)
    if args.data is not None:
        try:
            split = load_heldout(args.data, run.info, seq_len=run.config.seq_len, missing=run.config.missing)
        except ValueError as err:
            raise UsageError(str(err)) from err
        info, what, baseline = run.info, f"data {', '.join(map(str, args.data))} ({split.xs.shape[0]} examples)", ""
    else:
        try:
            data = run_data(run.config)
            check_same_data(run.info, data.info)
        except ValueError as err:
            raise UsageError(str(err)) from err
        if data.eval.xs.shape[0] == 0:
            raise UsageError(f"{args.path}: its run has no evaluation split (val_fraction 0): give --data PATH")
        split, info = data.eval, data.info
        baseline = f" (chance {chance(data):.3f})" if data.info.classifier else ""
        what = f"task {run.config.task}" if run.config.task is not None else f"data {data.info.source}"
    scores = evaluate_split(run.params, split, run.spec)
    entry = {"eval_loss": scores["loss"], "eval_accuracy": scores.get("accuracy")}
    print(f"{run.path}: step {run.step}, {what}, model {describe_spec(run.spec)}: "
          f"{describe_eval(entry, info)}{baseline}")
    return 0


def _eval_checkpoint(args) -> Path:
    """The checkpoint ``eval`` reads: ``--step N``'s, else with ``--data`` the run's best (when it
    kept one), else the path given (a run folder: its newest)."""
    from perceptron1_jax.checkpoint import BEST, checkpoint_path

    if args.step is not None:
        if not args.path.is_dir():
            raise UsageError(f"--step: expected a run folder to pick the checkpoint of step {args.step} from, got "
                             f"the file {args.path}")
        path = checkpoint_path(args.path, args.step)
        if not path.is_file():
            raise UsageError(f"--step: expected a step with a checkpoint in {args.path}, got {args.step} "
                             f"(no {path.name})")
        return path
    if args.data is not None and args.path.is_dir() and (args.path / BEST).is_file():
        return args.path / BEST
    return args.path


def cmd_generate(args) -> int:
    from perceptron1_jax.generate import generate

    run = _load_run(args.run, args.member)
    try:
        text = generate(run, args.prompt, args.length, temperature=args.temperature, top_k=args.top_k,
                        seed=args.seed, warn=lambda message: print(f"perceptron1: warning: {message}", file=sys.stderr))
    except ValueError as err:  # "top_k: ..." -> "--top-k: ...": the option as it was typed
        name, _, rest = str(err).partition(":")
        option = f"--{name.replace('_', '-')}" if name in ("prompt", "length", "temperature", "top_k") else name
        raise UsageError(f"{option}:{rest}") from err
    print(text)
    return 0


def cmd_predict(args) -> int:
    import json

    from perceptron1_jax.prediction import (
        ensemble_predictions,
        file_inputs,
        predict_examples,
        prediction_records,
        text_inputs,
    )

    if args.ensemble and args.member is not None:
        raise UsageError(f"--ensemble: expected either --ensemble or --member, got --member {args.member} too")
    if args.setting is not None and not args.ensemble:
        raise UsageError(f"--setting: expected --ensemble with it (a setting's seeds averaged), got --setting "
                         f"{args.setting} alone")
    runs = _ensemble_members(args.run, args.setting) if args.ensemble else [_load_run(args.run, args.member)]
    run = runs[0]
    try:
        inputs = file_inputs(run, args.data) if args.data is not None else text_inputs(run, [args.text])
        result = ensemble_predictions(runs, *inputs) if args.ensemble else predict_examples(run, *inputs)
        records = prediction_records(run, result)
    except ValueError as err:
        raise UsageError(str(err)) from err
    names = run.info.class_names
    for i, record in enumerate(records):
        if args.json:
            print(json.dumps({"index": i, **record}))
        elif run.info.classifier and not run.spec.many_to_many:
            label = record["prediction"]
            name = f" {names[label]}" if names else ""
            print(f"{i}: class {label}{name} (probability {record['probabilities'][label]:.3f})")
        else:
            print(f"{i}: {record['prediction']}")
    return 0


def _require_positive(args, *names: str) -> None:
    """Each ``--name`` option must be a positive int."""
    for name in names:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(args, name)}")


def cmd_gradcheck(args) -> int:
    import jax

    _require_positive(args, "batch", "seq_len", "input", "hidden", "classes")
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)  # float64 for this command only; restored below
    try:
        return _gradcheck_table(args)
    finally:
        jax.config.update("jax_enable_x64", previous)


def _gradcheck_table(args) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import perceptron1_jax as p1
    from perceptron1_jax.diagnostics import max_relative_error

    rng = np.random.default_rng(args.seed)
    cells = list(CELL_NAMES) if args.cell == "all" else [args.cell]
    print(f"explicit BPTT vs jax.grad, float64, batch {args.batch}, time {args.seq_len}, input {args.input}, "
          f"hidden {args.hidden}, classes {args.classes}, "
          f"{'many-to-many' if args.many_to_many else 'many-to-one'}{', random lengths' if args.lengths else ''}")
    print(f"{'cell':6} {'parameter':14} {'max relative error':>20}")
    worst = 0.0
    for cell in cells:
        params = p1.init_params(jax.random.key(args.seed), cell, args.input, args.hidden, args.classes,
                                dtype=jnp.float64)
        params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(rng.standard_normal(a.shape)), params)
        xs = jnp.asarray(rng.standard_normal((args.batch, args.seq_len, args.input)))
        shape = (args.batch, args.seq_len) if args.many_to_many else (args.batch,)
        labels = jnp.asarray(rng.integers(0, args.classes, shape), jnp.int32)
        lengths = jnp.asarray(rng.integers(1, args.seq_len + 1, args.batch), jnp.int32) if args.lengths else None
        _, ours = p1.bptt(params, xs, labels, cell, lengths)
        ref = jax.grad(p1.loss)(params, xs, labels, cell, lengths)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(ref), strict=True):
            err = max_relative_error(a, b)
            worst = max(worst, err)
            print(f"{cell:6} {'/'.join(k.key for k in path):14} {err:20.2e}")
    print(f"worst: {worst:.2e} ({'PASS' if worst < 1e-6 else 'FAIL'} at rtol 1e-6)")
    return 0 if worst < 1e-6 else 1


def cmd_gradflow(args) -> int:
    import jax
    import numpy as np

    from perceptron1_jax.diagnostics import decay_rate, set_spectral_radius
    from perceptron1_jax.training import TrainConfig, check_config, init_run_params, load_checkpoint, run_data
    from perceptron1_jax.training.evaluation import gradient_flow_of
    from perceptron1_jax.training.ingredients import run_keys, task_datasets

    if args.checkpoint is not None:
        fixed = [f"--{name.replace('_', '-')}" for name in ("cell", "task", "seq_len", "hidden", "seed",
                                                           "spectral_radius") if getattr(args, name) is not None]
        if fixed:
            raise UsageError(f"{fixed[0]}: expected none with --checkpoint (the run's own model, data and "
                             f"parameters are used), got {fixed[0]} {getattr(args, fixed[0][2:].replace('-', '_'))}")
    elif args.member is not None:
        raise UsageError(f"--member: expected --checkpoint with it (a population's member), got --member "
                         f"{args.member} alone")
    defaults = {"cell": "all", "task": "copy", "seq_len": 100, "hidden": 64, "seed": 0}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    _require_positive(args, "seq_len", "hidden", "batch")
    if args.spectral_radius is not None and not args.spectral_radius > 0:
        raise UsageError(f"--spectral-radius: expected a positive number, got {args.spectral_radius}")
    runs = []
    if args.checkpoint is not None:
        from perceptron1_jax.checkpoint import CheckpointError

        _float64_mode(_run_dtype(args.checkpoint))
        try:
            loaded = load_checkpoint(args.checkpoint, member=args.member)
        except CheckpointError as err:
            raise UsageError(str(err)) from err
        except ValueError as err:
            raise UsageError(f"--{err}") from err
        if "members" in loaded:
            raise UsageError(f"--member: expected a member 0 to {len(loaded['members']) - 1} of the population in "
                             f"{loaded['path']}, got none")
        cfg = loaded["config"]
        runs.append((cfg, loaded["params"], f"{cfg.layers or cfg.cell} (step {loaded['step']})", loaded["spec"]))
    else:
        cells = ["elman", "lstm", "gru"] if args.cell == "all" else [args.cell]  # the cells with a W_h
        for cell in cells:
            try:
                cfg = check_config(TrainConfig(task=args.task, cell=cell, hidden=args.hidden, seq_len=args.seq_len,
                                               seed=args.seed, batch_size=args.batch, num_train=args.batch,
                                               num_eval=args.batch))
            except (ValueError, TypeError) as err:
                raise UsageError(str(err)) from err
            params = init_run_params(run_keys(cfg)[1], cfg)
            label = f"{cell} at init"
            if args.spectral_radius is not None:
                try:
                    params = set_spectral_radius(params, args.spectral_radius)
                except ValueError as err:  # a cell without W_h
                    raise UsageError(f"--spectral-radius: {cell} has no recurrent matrix W_h to rescale "
                                     "(its recurrence is elementwise)") from err
                label += f", spectral radius {args.spectral_radius:g}"
            runs.append((cfg, params, label, cfg.model_spec))
    profiles = {}
    for cfg, params, label, spec in runs:
        if cfg.task is not None:
            _, _, k_train, k_eval, _ = run_keys(cfg)
            sized = dataclasses.replace(cfg, num_train=max(args.batch, cfg.batch_size))
            data, _ = task_datasets(sized, k_train, k_eval)
        else:
            try:
                data = run_data(cfg).train  # the run's own files
            except ValueError as err:
                raise UsageError(str(err)) from err
        lengths = None if data.lengths is None else data.lengths[: args.batch]
        resets = None if data.resets is None else data.resets[: args.batch]
        flow = gradient_flow_of(cfg, params, data.xs[: args.batch], data.labels[: args.batch], lengths, resets,
                                spec=spec)
        profiles[label] = np.asarray(jax.device_get(flow.dh_norm))
    time = next(iter(profiles.values())).size
    lags = sorted({lag for lag in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lag < time} | {time - 1})
    source = runs[0][0].task or "data"
    print(f"||dL/dh_t|| at lag T - t (task {source}, T = {time})")
    print(f"{'lag':>6} " + " ".join(f"{label:>28}" for label in profiles))
    for lag in lags:
        print(f"{lag:>6} " + " ".join(f"{norms[time - 1 - lag]:>28.3e}" for norms in profiles.values()))
    print(f"{'rate':>6} " + " ".join(f"{decay_rate(norms):>28.4f}" for norms in profiles.values()))
    print("rate: geometric factor per step back fitted to the profile (< 1 vanishing, > 1 exploding)")
    title = f"gradient flow through time, task {source}"
    _plot_or_hint("plot", lambda plotting: plotting.plot_gradient_flow(profiles, args.png, title))
    return 0


def cmd_bench(args) -> int:
    from perceptron1_jax.bench import run_from_args

    try:
        run_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        commands = {"train": cmd_train, "eval": cmd_eval, "generate": cmd_generate, "predict": cmd_predict,
                    "gradcheck": cmd_gradcheck, "gradflow": cmd_gradflow, "bench": cmd_bench}
        command = commands[args.command]
        from perceptron1_jax.compile_cache import cache_folder, use_cache

        use_cache(cache_folder(args.compile_cache), warn=lambda m: print(f"perceptron1: warning: {m}", file=sys.stderr))
        if args.command != "train":
            return command(args)
        from perceptron1_jax.training.state import stop_requests

        with stop_requests():  # from the start: a signal in start-up stops at step 0, checkpointed (train())
            return command(args)
    except UsageError as err:
        print(f"perceptron1: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # e.g. `perceptron1 predict ... | head`: the reader left; stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("perceptron1: interrupted (the last checkpoint in --out is intact; use --resume)", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script entry: re-run under the allocator settings that keep XLA:CPU's per-call
    scratch buffer in the heap (see :mod:`perceptron1_jax.bench`) and with one host device per
    core (:func:`perceptron1_jax.parallel.host_device_env`), then :func:`main`."""
    from perceptron1_jax.bench import reexec_with_allocator_env

    reexec_with_allocator_env(["-m", "perceptron1_jax", *sys.argv[1:]], host_devices=True, in_process=True)
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
