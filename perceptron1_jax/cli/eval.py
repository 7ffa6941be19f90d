"""``perceptron1 eval``: a checkpoint's scores on its run's evaluation split or on a labelled file."""

from __future__ import annotations

from pathlib import Path

from perceptron1_jax.cli.common import MEMBER_HELP, UsageError, describe_spec, open_run


def add_parser(commands) -> None:
    """``perceptron1 eval``'s options."""
    evaluate = commands.add_parser("eval", help="evaluate a checkpoint on its evaluation split or on a file")
    evaluate.add_argument("path", type=Path, help="a checkpoint file or a run folder (its newest checkpoint; with "
                                                  "--data, its best.msgpack when it kept one)")
    evaluate.add_argument("--data", type=Path, nargs="+", metavar="PATH",
                          help="score this labelled file instead (any kind the run trained on; .ts, .npz, .csv, "
                               "text; aeon:NAME for its TEST file), standardized as the run's inputs were")
    evaluate.add_argument("--step", type=int, help="the checkpoint of this step in the run folder")
    evaluate.add_argument("--member", type=int, help=MEMBER_HELP)


def run(args) -> int:
    from perceptron1_jax.data import chance, load_heldout
    from perceptron1_jax.training import check_same_data, describe_eval, evaluate_split, run_data

    run = open_run(_eval_checkpoint(args), args.member)
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
