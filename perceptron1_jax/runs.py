"""A trained run, loaded for use: its params, model, data description and config.

``load_run("runs/my-run")`` reads the newest good checkpoint of a run folder (or one checkpoint
file); :func:`perceptron1_jax.generate.generate` and :func:`perceptron1_jax.prediction.predict_examples`
take the result.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from perceptron1_jax.data import DataInfo, Vocabulary
from perceptron1_jax.spec import ModelSpec
from perceptron1_jax.training import TrainConfig, load_checkpoint


class Run(NamedTuple):
    params: Any  # the model's params (pinned layout of spec)
    spec: ModelSpec
    info: DataInfo  # what it trained on: kind, sizes, tokenizer and vocabulary
    config: TrainConfig
    step: int
    path: str  # the checkpoint file

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary of a run on text (a ``ValueError`` for a run on arrays)."""
        if self.info.vocab is None:
            raise ValueError(f"run: expected a run trained on text (with a vocabulary), got one on {self.info.source}")
        return Vocabulary(self.info.vocab)


def load_run(path, member: int | None = None) -> Run:
    """The run in ``path`` (a run folder: its newest good checkpoint; or a checkpoint file); of a
    population, member ``member``'s (needed: a ``ValueError`` without it).
    Raises :class:`~perceptron1_jax.checkpoint.CheckpointError` for a missing or bad file."""
    loaded = load_checkpoint(path, member=member)
    if "members" in loaded:
        raise ValueError(f"member: expected a member 0 to {len(loaded['members']) - 1} of the population in "
                         f"{loaded['path']}, got none")
    return _run_of(loaded)


def load_members(path) -> list[Run]:
    """Every member of the population in ``path`` as a :class:`Run` (a single run: itself alone)."""
    loaded = load_checkpoint(path)
    if "members" not in loaded:
        return [_run_of(loaded)]
    return [_run_of(load_checkpoint(loaded["path"], member=k)) for k in range(len(loaded["members"]))]


def _run_of(loaded: dict) -> Run:
    return Run(loaded["params"], loaded["spec"], loaded["data"], loaded["config"], loaded["step"], loaded["path"])
