"""``perceptron1 gradflow``: ||dL/dh_t|| through time from one explicit backward pass, at
initialization or from a checkpoint (a table, its fitted decay rate, and a plot)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from perceptron1_jax.cli.common import (
    CELL_NAMES,
    MEMBER_HELP,
    UsageError,
    float64_mode,
    plot_or_hint,
    require_positive,
    run_dtype,
)


def add_parser(commands) -> None:
    """``perceptron1 gradflow``'s options."""
    from perceptron1_jax.tasks import TASKS

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
    flow.add_argument("--member", type=int, help=MEMBER_HELP)
    flow.add_argument("--seed", type=int, help="(default: 0)")
    flow.add_argument("--png", type=Path, default=Path("gradflow.png"), help="where to write the plot")
    flow.add_argument("--alignment", metavar="METHOD[,METHOD...]", help="also the alignment of online gradients "
                      "(rtrl, snap1, eprop, uoro; docs/online.md) with the explicit BPTT on the same batch: per "
                      "parameter, the cosine and the norm ratio (one-direction layers)")


def run(args) -> int:
    _check_args(args)
    runs = _checkpoint_run(args) if args.checkpoint is not None else _fresh_runs(args)
    batches = [_batch(args, cfg) for cfg, *_ in runs]
    profiles = _profiles(runs, batches)
    source = runs[0][0].task or "data"
    _print_table(profiles, source)
    title = f"gradient flow through time, task {source}"
    plot_or_hint("plot", lambda plotting: plotting.plot_gradient_flow(profiles, args.png, title))
    if args.alignment is not None:
        for (_, params, label, spec), batch in zip(runs, batches):
            _print_alignment(label, _alignment_of(args, params, spec, batch))
    return 0


def _alignment_of(args, params, spec, batch) -> dict:
    """:func:`~perceptron1_jax.alignment.model_gradient_alignment` on the run's batch."""
    import jax

    from perceptron1_jax.alignment import model_gradient_alignment

    try:
        return model_gradient_alignment(params, batch.xs, batch.labels, spec, batch.lengths,
                                        methods=[m.strip() for m in args.alignment.split(",")],
                                        key=jax.random.key(args.seed or 0), resets=batch.resets)
    except ValueError as err:  # "methods: ..." / "spec: ..." / "method: ..." (RTRL's memory)
        name, _, rest = str(err).partition(":")
        raise UsageError(f"--alignment:{rest}" if name in ("methods", "spec", "method") else str(err)) from err


def _print_alignment(label: str, table: dict) -> None:
    methods = list(table)
    print(f"alignment with the explicit BPTT gradient, {label}: cosine (|online| / |bptt|)")
    print(f"{'parameter':22} " + " ".join(f"{m:>20}" for m in methods))
    for group in table[methods[0]]:
        cells = [f"{table[m][group]['cosine']:.3f} ({table[m][group]['norm_ratio']:.2f})" for m in methods]
        print(f"{group:22} " + " ".join(f"{c:>20}" for c in cells))


def _check_args(args) -> None:
    """Refuse what --checkpoint fixes (or --member without it); fill in the defaults; check sizes."""
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
    require_positive(args, "seq_len", "hidden", "batch")
    if args.spectral_radius is not None and not args.spectral_radius > 0:
        raise UsageError(f"--spectral-radius: expected a positive number, got {args.spectral_radius}")
    if args.alignment is not None:
        from perceptron1_jax.online import METHODS

        given = [m.strip() for m in args.alignment.split(",")]
        if [m for m in given if m not in METHODS]:
            raise UsageError(f"--alignment: expected one or more of {','.join(METHODS)}, got {args.alignment}")


def _checkpoint_run(args) -> list[tuple]:
    """``[(config, params, label, spec)]`` of the run --checkpoint names."""
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.training import load_checkpoint

    float64_mode(run_dtype(args.checkpoint))
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
    return [(cfg, loaded["params"], f"{cfg.layers or cfg.cell} (step {loaded['step']})", loaded["spec"])]


def _fresh_runs(args) -> list[tuple]:
    """``[(config, params, label, spec)]`` per cell at initialization (rescaled by --spectral-radius)."""
    from perceptron1_jax.diagnostics import set_spectral_radius
    from perceptron1_jax.training import TrainConfig, check_config, init_run_params
    from perceptron1_jax.training.ingredients import run_keys

    runs = []
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
    return runs


def _profiles(runs, batches) -> dict:
    """``{label: (time,) ||dL/dh_t||}`` of each run on its batch."""
    import jax
    import numpy as np

    from perceptron1_jax.training.evaluation import gradient_flow_of

    profiles = {}
    for (cfg, params, label, spec), batch in zip(runs, batches):
        flow = gradient_flow_of(cfg, params, batch.xs, batch.labels, batch.lengths, batch.resets, spec=spec)
        profiles[label] = np.asarray(jax.device_get(flow.dh_norm))
    return profiles


def _batch(args, cfg):
    """The first --batch examples of the run's training split: the task's (sized to --batch) or the
    run's own files."""
    from perceptron1_jax.tasks import Dataset
    from perceptron1_jax.training import run_data
    from perceptron1_jax.training.ingredients import run_keys, task_datasets

    if cfg.task is not None:
        _, _, k_train, k_eval, _ = run_keys(cfg)
        sized = dataclasses.replace(cfg, num_train=max(args.batch, cfg.batch_size))
        data = task_datasets(sized, k_train, k_eval)[0]
    else:
        try:
            data = run_data(cfg).train
        except ValueError as err:
            raise UsageError(str(err)) from err
    return Dataset(*(None if part is None else part[: args.batch] for part in data))


def _print_table(profiles: dict, source: str) -> None:
    from perceptron1_jax.diagnostics import decay_rate

    time = next(iter(profiles.values())).size
    lags = sorted({lag for lag in (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000) if lag < time} | {time - 1})
    print(f"||dL/dh_t|| at lag T - t (task {source}, T = {time})")
    print(f"{'lag':>6} " + " ".join(f"{label:>28}" for label in profiles))
    for lag in lags:
        print(f"{lag:>6} " + " ".join(f"{norms[time - 1 - lag]:>28.3e}" for norms in profiles.values()))
    print(f"{'rate':>6} " + " ".join(f"{decay_rate(norms):>28.4f}" for norms in profiles.values()))
    print("rate: geometric factor per step back fitted to the profile (< 1 vanishing, > 1 exploding)")
