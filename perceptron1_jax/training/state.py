"""What a run holds between steps (:class:`RunState`), the ways it stops before its last step
(exceptions carrying that state and the command line's exit status), and the signals that ask it to."""

from __future__ import annotations

import contextlib
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import jax

from perceptron1_jax.data import DataInfo
from perceptron1_jax.spec import ModelSpec


@dataclass
class RunState:
    """What a run holds between steps (and what a checkpoint restores)."""

    params: Any
    opt_state: Any
    step: int
    history: list = field(default_factory=list)  # the metrics records written this session
    stopped_early: bool = False
    info: DataInfo | None = None  # what the run trained on
    spec: ModelSpec | None = None  # the model it trained
    chance: float | None = None  # eval accuracy of always guessing the most frequent class
    test: dict | None = None  # the test split's scores of the best checkpoint, once the run has a test split
    stream: Any = None  # a stream run's OnlineStream: the state and influence carried to the next step

    def checkpoint_parts(self):
        """``(params, opt_state, population)`` as a checkpoint holds them (no population here)."""
        return self.params, self.opt_state, None

    def checkpoint_stream(self):
        """The :class:`~perceptron1_jax.online.OnlineStream` a checkpoint holds (None: not a stream run)."""
        return self.stream


@dataclass
class PopulationState(RunState):
    """A population's :class:`RunState`: ``params`` and ``opt_state`` with a leading member axis
    (while training, padded to a multiple of the devices; ``size`` members are real), each
    member's ``status`` (``stopped``: None, ``"nonfinite"`` or ``"target"``; ``nonfinite``: its
    consecutive non-finite steps; ``target_step``: the step it first reached the target accuracy;
    with a best checkpoint, ``best_step`` and ``best_loss``: its lowest evaluation loss)
    and, once done, the ``summary`` over seeds (``summary.json``)."""

    members: tuple = ()  # the members' TrainConfigs
    population: Any = None  # the Population
    status: list = field(default_factory=list)
    summary: dict | None = None
    member_infos: tuple = ()  # each member's DataInfo when they differ (standardization per seed's split)

    @property
    def size(self) -> int:
        return len(self.members)

    def checkpoint_parts(self):
        """The real members' stacked ``(params, opt_state)`` and the population's description and status."""
        return (*jax.tree.map(lambda a: a[:self.size], (self.params, self.opt_state)), self.population_parts())

    def checkpoint_stream(self):
        """The real members' stacked :class:`~perceptron1_jax.online.OnlineStream` (None: not a stream run)."""
        return None if self.stream is None else jax.tree.map(lambda a: a[:self.size], self.stream)

    def population_parts(self) -> dict:
        """What a checkpoint says of the population: its description, its members' status and,
        when they differ, each member's data description (``member_data``)."""
        parts = {"population": self.population.to_dict(), "status": self.status}
        if len(set(self.member_infos)) > 1:
            parts["member_data"] = [info.to_dict() for info in self.member_infos]
        return parts


class TrainingStopped(Exception):
    """The run stopped before ``cfg.steps`` with its state checkpointed (in ``out``, if given).

    ``exit_status`` is what the command line exits with; ``state`` the :class:`RunState` reached.
    """

    exit_status = 1

    def __init__(self, message: str, state: RunState):
        super().__init__(message)
        self.state = state


class NonFiniteStop(TrainingStopped):
    """``max_nonfinite`` consecutive steps had a non-finite loss or gradient (exit status 3)."""

    exit_status = 3


class SignalStop(TrainingStopped):
    """SIGTERM or SIGINT arrived: the step finished and was checkpointed (exit status 128 + signal)."""

    def __init__(self, message: str, state: RunState, signum: int):
        super().__init__(message, state)
        self.exit_status = 128 + signum


class WriteFailed(TrainingStopped):
    """A checkpoint or metrics write failed mid-run (a full disk): the previous checkpoint is intact."""


_LISTENING: list[dict] = []  # the requests of the stop_requests blocks open now (outermost first)


def stop_requested() -> bool:
    """Whether a SIGTERM/SIGINT has arrived during the open :func:`stop_requests` block."""
    return bool(_LISTENING) and _LISTENING[0]["signal"] is not None


@contextlib.contextmanager
def stop_requests():
    """``{"signal": None}``, set to SIGTERM/SIGINT's number when one arrives during the block
    (handlers installed only in the main thread, and not for a signal the process ignores, as
    ``nohup`` makes it; the previous ones restored after). The handlers only record the signal,
    so it never interrupts a compile or a write; the training loop acts on it at its next step.
    A block inside another (the command line listens from its start, :func:`train` inside it)
    shares the outer block's request."""
    if _LISTENING:
        yield _LISTENING[0]
        return
    request = {"signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        request["signal"] = signum

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)
                if signal.getsignal(sig) is not signal.SIG_IGN}
    _LISTENING.append(request)
    try:
        yield request
    finally:
        _LISTENING.pop()
        for sig, old in previous.items():
            signal.signal(sig, old)
