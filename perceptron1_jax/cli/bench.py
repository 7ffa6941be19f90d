"""``perceptron1 bench``: the training-step benchmark (:mod:`perceptron1_jax.bench`)."""

from __future__ import annotations

from perceptron1_jax.cli.common import UsageError


def add_parser(commands) -> None:
    """``perceptron1 bench``'s options."""
    bench_parser = commands.add_parser(
        "bench", help="training-step speed and memory vs jax.grad, Flax and PyTorch (if installed)",
        description="Benchmark one training step (forward + loss + backward + Adam) of our explicit BPTT "
                    "against jax.grad through lax.scan, Flax nn.RNN and PyTorch; writes a markdown table and JSON.",
    )
    from perceptron1_jax.bench import add_arguments

    add_arguments(bench_parser)


def run(args) -> int:
    from perceptron1_jax.bench import run_from_args

    try:
        run_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    return 0
