"""The ``perceptron1`` command: ``train``, ``eval``, ``generate``, ``predict``, ``gradcheck``,
``gradflow``, ``bench`` and ``export``, one module each; :mod:`~perceptron1_jax.cli.parser` puts
their options together, :mod:`~perceptron1_jax.cli.options` holds a run's options and
:mod:`~perceptron1_jax.cli.common` what every subcommand shares.

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

import sys

from perceptron1_jax.cli.common import CELL_NAMES, EXIT_USAGE, UsageError, describe_spec
from perceptron1_jax.cli.parser import SUBCOMMANDS, build_parser
from perceptron1_jax.cli.train_config import config_toml

__all__ = ["CELL_NAMES", "EXIT_USAGE", "UsageError", "build_parser", "config_toml", "describe_spec", "entry", "main"]


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        command = SUBCOMMANDS[args.command].run
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
