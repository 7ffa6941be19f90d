"""The run folder ``out``: checked before training, then ``config.json``, ``data.json``,
``metrics.jsonl`` (one JSON object per line) and ``ckpt_<step>.msgpack`` checkpoints
(:mod:`perceptron1_jax.checkpoint`: atomic, checksummed). Only process 0 writes; a failed write
stops the run with :class:`~perceptron1_jax.training.state.WriteFailed`, the previous checkpoint
intact."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from perceptron1_jax import checkpoint
from perceptron1_jax.data import DataInfo
from perceptron1_jax.spec import ModelSpec, spec_to_dict
from perceptron1_jax.training.config import TrainConfig
from perceptron1_jax.training.state import RunState, WriteFailed

RUN_FILES = ("config.json", "data.json", "population.json", "devices.json", "metrics.jsonl", "metrics.png",
             "summary.json", checkpoint.BEST)
"""What a run writes into its folder beside its ``ckpt_<step>.msgpack`` files (``overwrite`` removes
these and nothing else)."""


def run_files(out: Path) -> list[str]:
    """The names of a run's files in ``out`` (empty for a new or empty folder)."""
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.name in RUN_FILES) + [p.name for p in
                                                                           checkpoint.list_checkpoints(out)]


def check_out_dir(out, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create the run folder ``out`` and make sure a file can be written in it, before any training;
    a ``ValueError`` naming the path otherwise.

    One run per folder: a folder that holds another run is refused, unless the run continues it
    (``resume``) or replaces it (``overwrite``: that run's files are removed first). ``resume``
    needs a run to continue: a checkpoint or at least its ``config.json``."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: expected a folder for the run, got the file {out}")
    held = run_files(out)
    if resume:
        if overwrite:
            raise ValueError("overwrite: expected either resume (continue the run) or overwrite (replace it), got both")
        if "config.json" not in held and not checkpoint.list_checkpoints(out):
            raise ValueError(f"resume: expected a run folder holding a checkpoint or config.json, got {out} "
                             f"({'no such folder' if not out.exists() else 'none there'}): nothing to resume "
                             "(leave out --resume to start a new run)")
    elif held and not overwrite:
        raise ValueError(f"out: expected a folder without a run, got {out} holding one ({', '.join(held[:3])}"
                         f"{', ...' if len(held) > 3 else ''}): continue it with --resume or replace it with "
                         "--overwrite")
    elif held:
        for name in held:
            (out / name).unlink(missing_ok=True)
        checkpoint.remove_temporaries(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out: cannot create the folder {out} ({err.strerror or err})") from err
    probe = out / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out: cannot write in the folder {out} ({err.strerror or err})") from err
    return out


def logged_entries(out: Path, key: str) -> list[dict]:
    """The entries of ``out/metrics.jsonl`` that hold ``key`` (none without the file; torn lines skipped)."""
    path = Path(out) / "metrics.jsonl"
    entries = []
    for line in path.read_text().splitlines() if path.exists() else ():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and key in entry:
            entries.append(entry)
    return entries


def saved_config(out: Path) -> dict | None:
    """The ``config.json`` a run wrote in ``out`` (None without a readable one)."""
    try:
        values = json.loads((Path(out) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return values if isinstance(values, dict) else None


def trim_metrics(path: Path, step: int) -> int:
    """Drop the entries of ``metrics.jsonl`` logged after ``step`` (a run killed after its last
    checkpoint logged them; the resumed run logs them again) and a torn last line. Returns how
    many lines were dropped; the file is replaced atomically."""
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if isinstance(entry, dict) and entry.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


class RunFolder:
    """What a run writes: its description, metrics and checkpoints, into ``out`` when ``writes``
    (process 0 of a run with a folder); otherwise metrics go only to the run's history.

    ``last_saved`` is the step of the newest checkpoint of this run (None before the first);
    ``best_loss`` the evaluation loss that ``best.msgpack`` holds (None before the first)."""

    def __init__(self, out: Path | None, writes: bool, *, cfg: TrainConfig, spec: ModelSpec, info: DataInfo, key,
                 last_saved: int | None = None, population: dict | None = None, best_loss: float | None = None):
        self.out, self.writes, self.last_saved = out, writes, last_saved
        self._cfg, self._spec, self._info, self._key = cfg, spec, info, key
        self._population = population
        self._metrics = None
        self._sinks: list = []  # called with each entry as it is written: TensorBoard, train(on_metrics=)
        self._history: list = []
        self.best_loss = best_loss  # the evaluation loss of best.msgpack (a resumed run's: saved_best_loss)

    def write_description(self) -> None:
        """``config.json`` and ``data.json``: what the run is and what it trains on; for a
        population, ``population.json`` (its description and, per member, ``member``, ``seed``
        and every value that differs between members)."""
        if self.writes:
            (self.out / "config.json").write_text(json.dumps(dataclasses.asdict(self._cfg), indent=2, sort_keys=True))
            (self.out / "data.json").write_text(json.dumps(self._info.to_dict(), indent=2, sort_keys=True))
            if self._population is not None:
                self.write_json("population.json", self._population)

    def write_json(self, name: str, value) -> None:
        """``out/name`` as indented JSON (when writing), replaced atomically."""
        if not self.writes:
            return
        tmp = self.out / f".{name}.tmp-{os.getpid()}"
        try:
            tmp.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
            os.replace(tmp, self.out / name)
        except OSError as err:
            raise WriteFailed(f"cannot write {name} in {self.out}: {err.strerror or err}", None) from err

    def open_metrics(self) -> None:
        """Open ``metrics.jsonl`` to append to (a resumed run continues the file) and, with
        ``tensorboard``, the event files beside it."""
        if self.writes:
            self._metrics = open(self.out / "metrics.jsonl", "a")  # noqa: SIM115 - closed by close()
            if self._cfg.tensorboard:
                from perceptron1_jax.training.tensorboard import TensorBoardSink

                self._sinks.append(TensorBoardSink(self.out, self._cfg, self._population, self.last_saved))

    def add_sink(self, sink) -> None:
        """Call ``sink(entry)`` with each metrics entry after it is written."""
        self._sinks.append(sink)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        for sink in self._sinks:
            if hasattr(sink, "close"):
                sink.close()
        self._sinks = [s for s in self._sinks if not hasattr(s, "close")]

    def failed(self, what: str, err: OSError, state: RunState) -> WriteFailed:
        """The :class:`WriteFailed` of a write that raised ``err``, naming the folder and the step."""
        kept = f"the checkpoint of step {self.last_saved} is intact" if self.last_saved is not None else \
            "no checkpoint yet"
        return WriteFailed(f"{what} in {self.out}: {err.strerror or err}; stopped at step {state.step}, {kept}", state)

    def record(self, state: RunState, entry: dict) -> None:
        """Append ``entry`` to the run's history and, when writing, to ``metrics.jsonl`` (flushed)."""
        state.history.append(entry)
        self._history = state.history
        if self._metrics is not None:
            try:
                self._metrics.write(json.dumps(entry, allow_nan=False) + "\n")
                self._metrics.flush()
            except OSError as err:
                raise self.failed("cannot write metrics", err, state) from err
        for sink in self._sinks:
            sink(entry)

    def logged(self, key: str) -> list[dict]:
        """The entries of ``metrics.jsonl`` that hold ``key`` (a resumed run's earlier ones included)."""
        if not self.writes or not (self.out / "metrics.jsonl").exists():
            return [entry for entry in self._history if key in entry]
        return logged_entries(self.out, key)

    def save(self, state: RunState) -> None:
        """Checkpoint ``state`` (when writing); the write is atomic, so a failure leaves the previous one."""
        if not self.writes:
            return
        params, opt_state, population = state.checkpoint_parts()
        try:
            checkpoint.save_checkpoint(self.out, step=state.step, params=params, opt_state=opt_state,
                                       key=self._key, config=dataclasses.asdict(self._cfg),
                                       spec=spec_to_dict(self._spec), data=self._info.to_dict(), population=population,
                                       stream=state.checkpoint_stream())
        except OSError as err:
            raise self.failed("cannot write a checkpoint", err, state) from err
        self.last_saved = state.step

    def save_best(self, state: RunState, eval_loss: float | None) -> bool:
        """Whether ``eval_loss`` (finite) is below every earlier evaluation's; if so, write
        ``best.msgpack`` (when writing) and remember it as the best."""
        if eval_loss is None or (self.best_loss is not None and eval_loss >= self.best_loss):
            return False
        params, opt_state, _ = state.checkpoint_parts()
        self.write_best(state, params, opt_state, None, {"step": state.step, "eval_loss": eval_loss})
        self.best_loss = eval_loss
        return True

    def write_best(self, state: RunState, params, opt_state, population: dict | None, best: dict) -> None:
        """Write ``best.msgpack`` (when writing): ``params`` and ``opt_state`` (a population's
        stacked, each member's own best) with ``best`` describing them."""
        if not self.writes:
            return
        try:
            checkpoint.save_checkpoint(self.out, step=state.step, params=params, opt_state=opt_state, key=self._key,
                                       config=dataclasses.asdict(self._cfg), spec=spec_to_dict(self._spec),
                                       data=self._info.to_dict(), population=population, best=best)
        except OSError as err:
            raise self.failed("cannot write the best checkpoint", err, state) from err

    def save_if_new(self, state: RunState) -> None:
        """:meth:`save` unless the newest checkpoint is already of this step."""
        if self.last_saved != state.step:
            self.save(state)


def saved_best_loss(out: Path | None) -> float | None:
    """The evaluation loss of ``out/best.msgpack`` (None without a readable one)."""
    path = None if out is None else out / checkpoint.BEST
    if path is None or not path.exists():
        return None
    try:
        return checkpoint.read_checkpoint(path)["best"]["eval_loss"]
    except (checkpoint.CheckpointError, KeyError, TypeError):
        return None

