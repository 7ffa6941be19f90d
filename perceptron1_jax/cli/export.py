"""``perceptron1 export``: a run's parameters as an ``.npz`` or an orbax checkpoint, files that open
without this package (:mod:`perceptron1_jax.export`)."""

from __future__ import annotations

from pathlib import Path

from perceptron1_jax.cli.common import MEMBER_HELP, UsageError, float64_mode, run_dtype


def add_parser(commands) -> None:
    """``perceptron1 export``'s options."""
    export = commands.add_parser(
        "export", help="write a run's parameters as .npz or an orbax checkpoint (no perceptron1_jax needed to read)",
        description="Write the parameters of one checkpoint of a run (the newest; --step N's; or --best) with "
                    "'/'-joined names (layers/0/fwd/W_x, head/W, embed): an .npz file that numpy.load opens, or "
                    "an orbax checkpoint folder that orbax.checkpoint.PyTreeCheckpointer().restore opens. "
                    "perceptron1_jax.load_params reads either back into the model's layout.",
    )
    export.add_argument("run", type=Path, help="a run folder or a checkpoint file")
    export.add_argument("--to", type=Path, required=True, help="the file (.npz) or folder (orbax) to write; it must "
                        "not exist yet")
    export.add_argument("--format", choices=["npz", "orbax"], default="npz", help="(default: npz)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--step", type=int, help="the checkpoint of this step in the run folder")
    which.add_argument("--best", action="store_true", help="the run's best.msgpack (a run trained with --keep-best)")
    export.add_argument("--member", type=int, help=f"{MEMBER_HELP} (default: every member's params, stacked on a "
                        "leading member axis)")


def run(args) -> int:
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.export import checkpoint_file, export_params

    try:
        source = checkpoint_file(args.run, step=args.step, best=args.best)
        float64_mode(run_dtype(source))
        _, step = export_params(source, args.to, format=args.format, member=args.member)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
    except ValueError as err:  # "step: ..." -> "--step: ...": the option as it was typed
        name, _, rest = str(err).partition(":")
        option = f"--{name}" if name in ("step", "best", "to", "member", "format") else name
        raise UsageError(f"{option}:{rest}") from err
    print(f"perceptron1 export: {source} (step {step}) -> {args.to} ({args.format})")
    return 0
