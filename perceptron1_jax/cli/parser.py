"""The ``perceptron1`` parser: the command's own options, then each subcommand's, in the order
``--help`` lists them; :data:`SUBCOMMANDS` maps each name to the module that runs it."""

from __future__ import annotations

import argparse

from perceptron1_jax.cli import bench, export, generate, gradcheck, gradflow, predict, train
from perceptron1_jax.cli import eval as evaluate
from perceptron1_jax.cli.common import Parser, version_text

SUBCOMMANDS = {"train": train, "eval": evaluate, "generate": generate, "predict": predict, "gradflow": gradflow,
               "bench": bench, "gradcheck": gradcheck, "export": export}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="perceptron1", description="Recurrent networks trained with explicit BPTT (JAX).")
    parser.add_argument("--version", action="version", version=f"perceptron1 {version_text()}")
    parser.add_argument("--compile-cache", metavar="DIR|off", help="keep XLA's compiled programs in DIR between "
                        "runs (a second start of the same model skips compiling), or off (default: "
                        "$PERCEPTRON1_COMPILE_CACHE, else $JAX_COMPILATION_CACHE_DIR, else "
                        "$XDG_CACHE_HOME/perceptron1_jax/xla, ~/.cache/... without it)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in SUBCOMMANDS.values():
        module.add_parser(commands)
    return parser
