"""``python -m perceptron1_jax``: the ``perceptron1`` command.

A SIGTERM or SIGINT ends the process at once with one line and status 128 + signal (during the
seconds of importing JAX, and in the commands that write nothing). ``train`` replaces these
handlers, once its options are read, by ones that only record the signal
(:func:`perceptron1_jax.training.state.stop_requests`): it stops after checkpointing."""

import os
import signal
import sys


def _stopped_while_starting(signum, frame):  # pragma: no cover - exercised in subprocesses
    sys.stderr.write(f"perceptron1: stopped by {signal.Signals(signum).name}\n")
    os._exit(128 + signum)


for _signum in (signal.SIGTERM, signal.SIGINT):
    if signal.getsignal(_signum) is not signal.SIG_IGN:
        signal.signal(_signum, _stopped_while_starting)

from perceptron1_jax.cli import entry  # noqa: E402 - after the handlers: importing JAX takes seconds

entry()
