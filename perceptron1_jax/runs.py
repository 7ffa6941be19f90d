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
from perceptron1_jax.training.population import settings


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


def ensemble_members(path, setting: int | None = None) -> tuple[list[Run], list[int]]:
    """``(runs, left_out)``: the members of one setting of the population in ``path`` (those that
    differ only in their seed, as ``summary.json``'s ensembles), without the members frozen for
    non-finite values (``left_out``, their indices). ``setting`` (0 to settings - 1, in the order
    of ``summary.json``) is needed when the population has more than one. A single run is itself
    alone."""
    loaded = load_checkpoint(path)
    if "members" not in loaded:
        if setting is not None:
            raise ValueError(f"setting: expected no setting for the single run {loaded['path']}, got {setting}")
        return [_run_of(loaded)], []
    groups = settings(loaded["members"])
    if setting is None and len(groups) > 1:
        raise ValueError(f"setting: expected one of 0 to {len(groups) - 1} (the population in {loaded['path']} has "
                         f"{len(groups)} settings; an ensemble averages one setting's seeds), got none")
    if setting is not None and (isinstance(setting, bool) or not isinstance(setting, int)
                                or not 0 <= setting < len(groups)):
        raise ValueError(f"setting: expected 0 to {len(groups) - 1} (the settings of {loaded['path']}), "
                         f"got {setting!r}")
    indices = groups[setting or 0][1]
    left_out = [k for k in indices if loaded["status"][k].get("stopped") == "nonfinite"]
    kept = [k for k in indices if k not in left_out]
    if not kept:
        raise ValueError(f"setting: every member of setting {setting or 0} ({indices}) was frozen for non-finite "
                         "values: no ensemble")
    return [_run_of(load_checkpoint(loaded["path"], member=k)) for k in kept], left_out


def _run_of(loaded: dict) -> Run:
    return Run(loaded["params"], loaded["spec"], loaded["data"], loaded["config"], loaded["step"], loaded["path"])
