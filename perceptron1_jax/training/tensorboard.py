"""TensorBoard event files beside ``metrics.jsonl`` (``TrainConfig(tensorboard=True)``, ``--tensorboard``).

Each ``metrics.jsonl`` entry, as it is written, goes into ``out/tensorboard/`` through tensorboardX:
every number (booleans as 0 or 1) as a scalar under its key at the entry's ``step``; a
population's member ``k`` under ``member_k/<key>``. Lists (a gradient-flow profile) and text are
left to ``metrics.jsonl``. The run's hyperparameters (its config's numbers, strings and switches)
go in once as TensorBoard's hparams. A resumed run purges the steps after its checkpoint, as
``metrics.jsonl`` is trimmed (``purge_step``): TensorBoard shows each step once.
``tensorboard --logdir runs/`` then shows every run of the folder.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

FOLDER = "tensorboard"
SKIPPED_KEYS = ("step", "member")


def scalars(entry: dict) -> dict[str, float]:
    """``{tag: value}`` of the numbers of one ``metrics.jsonl`` entry (``member_k/`` for a member's)."""
    prefix = f"member_{entry['member']}/" if "member" in entry else ""
    return {f"{prefix}{key}": float(value) for key, value in entry.items()
            if key not in SKIPPED_KEYS and isinstance(value, (int, float))}


def hyperparameters(config: dict, population: dict | None) -> dict:
    """The hparams of a run: each config field that is a number, a string or a switch (tuples as
    text; unset fields left out), and a population's description as text."""
    found = {k: v if isinstance(v, (bool, int, float, str)) else ",".join(map(str, v))
             for k, v in config.items() if v is not None and isinstance(v, (bool, int, float, str, tuple, list))}
    if population is not None:
        found["population"] = ", ".join(f"{k}={v}" for k, v in population["population"].items() if v is not None)
    return found


class TensorBoardSink:
    """Writes entries into ``out/tensorboard`` (see the module doc); ``resumed_at``: the step a
    resumed run starts from (later steps of the earlier run are purged)."""

    def __init__(self, out: Path, cfg, population: dict | None, resumed_at: int | None):
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams

        purge = None if resumed_at is None else resumed_at + 1
        # tensorboardX names a file by the second it opens it: a resume within the same second would
        # reopen (and empty) the earlier file. A resumed writer's own suffix keeps both, and sorts
        # after the earlier file, in the order TensorBoard reads them.
        suffix = "" if resumed_at is None else f".resumed_at_{resumed_at:08d}"
        self._writer = SummaryWriter(str(Path(out) / FOLDER), purge_step=purge, flush_secs=10,
                                     filename_suffix=suffix)
        if resumed_at is None:
            metrics = {"loss": 0.0, "eval_loss": 0.0, "eval_accuracy": 0.0}  # the tags TensorBoard relates them to
            for summary in hparams(hyperparameters(dataclasses.asdict(cfg), population), metrics):
                self._writer._get_file_writer().add_summary(summary)

    def __call__(self, entry: dict) -> None:
        for tag, value in scalars(entry).items():
            self._writer.add_scalar(tag, value, entry["step"])

    def close(self) -> None:
        self._writer.close()
