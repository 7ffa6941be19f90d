"""``perceptron1 predict``: a run's (or an ensemble's) predictions for new inputs."""

from __future__ import annotations

from pathlib import Path

from perceptron1_jax.cli.common import MEMBER_HELP, UsageError, open_ensemble, open_run


def add_parser(commands) -> None:
    """``perceptron1 predict``'s options."""
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
    pred.add_argument("--member", type=int, help=MEMBER_HELP)
    pred.add_argument("--ensemble", action="store_true", help="a population's members of one setting together: the "
                      "mean of their probabilities (classifiers) or outputs (regression), leaving out members frozen "
                      "for non-finite values (named on standard error)")
    pred.add_argument("--setting", type=int, help="with --ensemble: the setting whose seeds to average (0 to "
                      "settings - 1, as in summary.json; needed when the population has several)")
    pred.add_argument("--json", action="store_true", help='one JSON object per line: "index" (the example\'s '
                      'position: the line of a text file, from 0), "prediction" and, for classifiers, "probabilities"')


def run(args) -> int:
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
    runs = open_ensemble(args.run, args.setting) if args.ensemble else [open_run(args.run, args.member)]
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
