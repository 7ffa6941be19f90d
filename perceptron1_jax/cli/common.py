"""What every subcommand of the ``perceptron1`` command shares: exit statuses, the one-line usage
error, the parser class that raises it, and loading a run (its dtype first) for the commands that
read one."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USAGE = 2


EXIT_STATUSES = ("Exit status: 0 done (also when stopped early at the target); 1 a failed write (disk full: the "
                 "previous checkpoint is intact) or an internal error; 2 bad usage, options, data or out folder; 3 "
                 "stopped after --max-nonfinite consecutive non-finite steps (a population: every member); 143 "
                 "(SIGTERM) or 130 (SIGINT, Ctrl-C) stopped by a signal after checkpointing the step reached "
                 "(continue with --resume).")


class UsageError(Exception):
    """A bad option or config: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump, status 2
        raise UsageError(message)


CELL_NAMES = ("elman", "lstm", "gru", "mingru", "minlstm")  # perceptron1_jax.cells.CELLS, without importing JAX


MEMBER_HELP = "of a population's run: this member (0 to members - 1; population.json lists them)"


def version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("perceptron1_jax")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
        return "(not installed)"


def float64_mode(dtype) -> None:
    """The command owns its process: a float64 run (or a run of float64 read back) turns JAX's
    64-bit mode on before any array exists; the library itself never does (it refuses instead)."""
    if dtype == "float64":
        import jax

        jax.config.update("jax_enable_x64", True)


def run_dtype(path) -> str | None:
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


def plot_or_hint(label: str, draw) -> None:
    """Print where ``draw(plotting_module)`` wrote its PNG, or how to get matplotlib."""
    try:
        from perceptron1_jax import plotting

        print(f"{label}: {draw(plotting)}")
    except ImportError:
        print(f"{label}: not drawn (matplotlib missing): pip install 'perceptron1_jax[plot]'")


def open_run(path, member=None):
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.runs import load_run

    float64_mode(run_dtype(path))
    try:
        return load_run(path, member=member)
    except CheckpointError as err:
        raise UsageError(str(err)) from err
    except ValueError as err:  # "member: ..." -> "--member: ..."
        message = str(err)
        raise UsageError(f"--{message}" if message.startswith("member:") else message) from err


def open_ensemble(path, setting):
    from perceptron1_jax.checkpoint import CheckpointError
    from perceptron1_jax.runs import ensemble_members

    float64_mode(run_dtype(path))
    try:
        runs, left_out = ensemble_members(path, setting)
    except (CheckpointError, ValueError) as err:  # "setting: ..." -> "--setting: ..."
        message = str(err)
        raise UsageError(f"--{message}" if message.startswith("setting:") else message) from err
    if left_out:
        print(f"perceptron1: warning: --ensemble leaves out member{'s' if len(left_out) > 1 else ''} "
              f"{', '.join(map(str, left_out))}, frozen for non-finite values", file=sys.stderr)
    return runs


def require_positive(args, *names: str) -> None:
    """Each ``--name`` option must be a positive int."""
    for name in names:
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(args, name)}")
