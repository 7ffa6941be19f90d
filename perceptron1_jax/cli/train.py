"""``perceptron1 train``: a run or a population on a task or your data, over the devices and
processes asked for; its start line, its final scores and its loss curve."""

from __future__ import annotations

import sys
from pathlib import Path

from perceptron1_jax.cli.common import EXIT_STATUSES, UsageError, describe_spec, plot_or_hint
from perceptron1_jax.cli.options import add_config_options, one_value
from perceptron1_jax.cli.train_config import config_toml, train_config
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.population import Population


def add_parser(commands) -> None:
    """``perceptron1 train``'s options."""
    from perceptron1_jax.tasks import TASKS

    task_list = "; ".join(f"{t.name}: {t.description}" for t in TASKS.values())
    train = commands.add_parser(
        "train", help="train a network on a synthetic task or your data",
        description=f"Train a recurrent network on a built-in task ({task_list}) or on your data (--data, "
                    f"--classes). {EXIT_STATUSES}",
    )
    add_config_options(train)
    train.add_argument("--seeds", type=one_value(int), help="train a population: this many members per setting, "
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
    scale.add_argument("--placement", choices=("batch", "directions"),
                       help="batch: split each batch over --devices; directions: each bidirectional layer's two "
                            "directions on two devices, each with the whole batch (default: a fixed rule of the "
                            "model's sizes, recorded in OUT/devices.json; see docs/scaling.md)")
    scale.add_argument("--coordinator", help="HOST:PORT of process 0, for a run over several processes "
                                             "(default: JAX_COORDINATOR_ADDRESS, if set)")
    scale.add_argument("--num-processes", type=int, help="how many processes take part (with --coordinator)")
    scale.add_argument("--process-id", type=int, help="this process's index, 0 to --num-processes - 1")


def start_processes(args) -> None:
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


def train_mesh(args, spec):
    """The mesh of --devices and --placement: that many devices of every process (default: all), or
    a direction mesh; None (neither given): train's default (run_mesh)."""
    import jax

    from perceptron1_jax.parallel import check_direction_spec, direction_mesh, make_mesh

    local = len(jax.local_devices())
    if args.placement == "directions":
        if args.devices not in (None, 2) or local < 2 or jax.process_count() > 1:
            raise UsageError(f"--placement directions: expected two devices of one process, got --devices "
                             f"{args.devices or local} of {local} in {jax.process_count()} process(es)")
        try:
            check_direction_spec(spec, "--placement directions")
        except ValueError as err:
            raise UsageError(str(err)) from err
        return direction_mesh()
    if args.devices is None:
        return None if args.placement is None else make_mesh(jax.devices())
    if not 1 <= args.devices <= local:
        raise UsageError(f"--devices: expected 1 to {local} (the devices of this process), got {args.devices}")
    return make_mesh([d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)[:args.devices]])


def run(args) -> int:
    import jax

    from perceptron1_jax.training import (
        check_out_dir,
        check_run,
        run_data,
        run_mesh,
    )
    from perceptron1_jax.training.device_choice import describe_devices

    start_processes(args)
    cfg, population = train_config(args)
    if args.print_config:
        print(config_toml(cfg, population), end="")
        return 0
    if population is not None:
        return train_population(args, cfg, population)
    out = out_folder(args, cfg)
    args.out = out
    writer = jax.process_index() == 0
    try:
        data = run_data(cfg)
        spec = check_run(cfg, data)
        given = train_mesh(args, spec)
        mesh = run_mesh(cfg, given, spec)
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
    devices = describe_devices(cfg, mesh, out, resume=args.resume, default=given is None)
    say(f"perceptron1 train: {what}, {data.train.xs.shape[0]} training / {split} examples of "
        f"{data.train.xs.shape[1]} steps{scaled}, model {describe_spec(spec)}, {cfg.optimizer} lr {cfg.lr}, "
        f"{cfg.steps} steps, gradients from {cfg.gradient or cfg.grad}, {devices}{processes}; run folder {out}")
    state, status = train_until_done(args, cfg, out, data=data, mesh=None if given is None else mesh)
    if state is None:
        return status
    if writer:
        _report(cfg, data, state, out)
    return 0


def _report(cfg: TrainConfig, data, state, out: Path) -> None:
    """The final lines: the last evaluation against the target and chance, the test score, the plot."""
    evals = [h for h in state.history if "eval_loss" in h]
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
    plot_or_hint("loss curve", lambda plotting: plotting.plot_metrics(out / "metrics.jsonl", out / "metrics.png"))


def out_folder(args, cfg: TrainConfig, suffix: str = "") -> Path:
    """``--out``, by default ``runs/<task or first file>-<layers><suffix>``: the model as it is, each
    layer as ``[bi]<cell><size>`` (``runs/copy-gru4``, ``runs/book-bilstm64-lstm32-population``)."""
    from perceptron1_jax.training.config import config_layers

    if args.out is not None:
        return args.out
    name = cfg.task if cfg.task is not None else Path((cfg.data or cfg.classes)[0]).stem.replace(":", "-")
    layers = "-".join(f"{'bi' if layer.bidirectional else ''}{layer.cell}{layer.hidden_size}"
                      for layer in config_layers(cfg))
    return Path("runs") / f"{name}-{layers}{suffix}"


def train_until_done(args, cfg: TrainConfig, out: Path, *, usage_errors: tuple = (), **kwargs):
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


def train_population(args, cfg: TrainConfig, population: Population) -> int:
    """``train`` of a population: one program for every member (see docs/populations.md)."""
    from perceptron1_jax.training import member_configs

    out = out_folder(args, cfg, "-population")
    try:
        members = len(member_configs(cfg, population))
        if args.placement == "directions":
            raise UsageError("--placement directions: expected a single run; a population places its members "
                             "(or their batches) over the devices")
        mesh = train_mesh(args, None)
    except ValueError as err:
        raise UsageError(str(err)) from err
    print(f"perceptron1 train: population of {members} members ({population.seeds} seeds per setting), "
          f"{'task ' + cfg.task if cfg.task is not None else 'data'}, {cfg.steps} steps; run folder {out}")
    state, status = train_until_done(args, cfg, out, mesh=mesh, population=population,
                                      usage_errors=(ValueError,))  # bad members, data, memory
    if state is None:
        return status
    settings = len(state.summary['settings'])
    print(f"summary: {out / 'summary.json'} ({settings} setting{'s' if settings != 1 else ''} over "
          f"{population.seeds} seeds)")
    return 0
