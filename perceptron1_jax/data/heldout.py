"""A labelled file read whole, as one split, for a model whose data is already described by a
:class:`~perceptron1_jax.data.DataInfo`: the test split of a run (``--test``) and the files
``perceptron1 eval RUN --data PATH`` scores. The file is checked to fit the model (kind of
problem, features, classes, ``.ts`` label names), text is encoded with the run's vocabulary, and
float inputs are standardized with the run's statistics when it has them.

Any source kind a run can train on is read: ``.npz`` (``xs`` with ``labels`` or ``targets``,
optional ``lengths``; no ``*_val`` arrays), ``.ts`` (its TEST file for ``aeon:NAME``), ``.csv``
(every window of ``seq_len`` rows and the row after it), text classes (one file per class, in
the run's class order) and text for a language model (windows of ``seq_len`` tokens).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perceptron1_jax.data.archives import archive_file, is_archive
from perceptron1_jax.data.arrays import from_arrays, read_npz
from perceptron1_jax.data.series import DEFAULT_SERIES_SEQ_LEN, read_csv, series_windows
from perceptron1_jax.data.source import DataError, DataInfo
from perceptron1_jax.data.standardize import standardize_split
from perceptron1_jax.data.text import DEFAULT_LM_SEQ_LEN, encode_lines, next_token_windows, read_lines, read_text
from perceptron1_jax.data.ts import read_ts
from perceptron1_jax.data.vocab import tokenize
from perceptron1_jax.tasks import Dataset

ONE_SPLIT_KEYS = ("xs", "labels", "targets", "lengths", "resets", "num_classes", "vocab_size")


def resolve_paths(paths, split: str = "TEST") -> list[Path]:
    """``paths`` (one or a list) as files: ``aeon:NAME`` is its ``split`` file; a missing file is a
    :class:`~perceptron1_jax.data.DataError` naming it."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError("data: expected at least one file, got none")
    resolved = [archive_file(str(p), split) if is_archive(str(p)) else Path(p) for p in paths]
    for path in resolved:
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    return resolved


def file_kind(paths: list[Path], info: DataInfo) -> str:
    """``npz``, ``csv``, ``ts``, ``classes`` (text, one file per class) or ``text`` (language model)."""
    for kind in ("npz", "csv", "ts"):
        if any(p.suffix.lower() == f".{kind}" for p in paths):
            if len(paths) != 1:
                raise DataError(f"{paths[0]}: expected one .{kind} file, got {len(paths)} files")
            return kind
    return "classes" if info.kind == "classification" else "text"


def load_heldout(paths, info: DataInfo, *, seq_len: int | None = None, missing: str = "error") -> Dataset:
    """The labelled examples of ``paths`` for a model trained on data described by ``info`` (see
    the module doc); ``seq_len``: the run's window length (CSV, text), or the cut of class lines."""
    paths = resolve_paths(paths)
    kind = file_kind(paths, info)
    where = str(paths[0])
    if kind == "npz":
        split = _npz_split(paths[0], info)
    elif kind == "ts":
        split = _ts_split(paths[0], info, missing)
    elif kind == "csv":
        split = _csv_split(paths[0], info, seq_len or DEFAULT_SERIES_SEQ_LEN)
    elif kind == "classes":
        split = _classes_split(paths, info, seq_len)
    else:
        split = _text_split(paths, info, seq_len or DEFAULT_LM_SEQ_LEN)
    if split.xs.shape[0] == 0:
        raise DataError(f"{where}: expected at least one example, got none")
    return standardize_split(split, info)


def _fits(where: str, info: DataInfo, *, kind: str, many_to_many: bool, features: int | None = None,
          tokens: bool = False, outputs: int | None = None) -> None:
    """Raise a :class:`DataError` naming the first way the file's data differs from the model's."""
    if kind != info.kind:
        raise DataError(f"{where}: expected {info.kind} data (as {info.source}), got {kind}")
    if many_to_many != info.many_to_many:
        want = "a target at every step" if info.many_to_many else "one target per example"
        raise DataError(f"{where}: expected {want} (as {info.source}), got the other")
    if tokens != (info.vocab_size is not None):
        want = "token ids" if info.vocab_size is not None else f"float inputs of {info.input_size} features"
        raise DataError(f"{where}: expected {want} (as {info.source}), got {'token ids' if tokens else 'floats'}")
    if features is not None and features != info.input_size:
        raise DataError(f"{where}: expected {info.input_size} features per step (as {info.source}), got {features}")
    if outputs is not None and outputs != info.num_outputs:
        raise DataError(f"{where}: expected {info.num_outputs} outputs per target (as {info.source}), got {outputs}")


def _npz_split(path: Path, info: DataInfo) -> Dataset:
    arrays = read_npz(path)
    extra = sorted(set(arrays) - set(ONE_SPLIT_KEYS))
    if extra:
        raise DataError(f"{path}: unexpected arrays {extra} in a file read as one split; expected names among "
                        f"{list(ONE_SPLIT_KEYS)}")
    classifier = "labels" in arrays
    if classifier and info.classifier:
        arrays["num_classes"] = np.asarray(info.num_outputs)
    if info.vocab_size is not None:
        arrays["vocab_size"] = np.asarray(info.vocab_size)
    data = from_arrays(**arrays, val_fraction=0, name=str(path))
    found = data.info
    _fits(str(path), info, kind=found.kind, many_to_many=found.many_to_many, features=found.input_size,
          tokens=found.vocab_size is not None, outputs=None if classifier else found.num_outputs)
    return data.train


def _ts_split(path: Path, info: DataInfo, missing: str) -> Dataset:
    found = read_ts(path, missing)
    if found["targets"] is not None:
        _fits(str(path), info, kind="regression", many_to_many=False, features=found["xs"].shape[2], outputs=1)
        return Dataset(found["xs"], found["targets"][:, None], found["lengths"])
    if found["labels"] is None:
        wanted = "class labels (@classLabel true ...)" if info.classifier else "targets (@targetLabel true)"
        raise DataError(f"{path}: expected {wanted} to score, got none")
    if info.class_names is not None and found["class_names"] != info.class_names:
        raise DataError(f"{path}: @classLabel: expected the training data's labels {list(info.class_names)}, got "
                        f"{list(found['class_names'])}")
    _fits(str(path), info, kind="classification", many_to_many=False, features=found["xs"].shape[2])
    if len(found["class_names"]) != info.num_outputs:
        raise DataError(f"{path}: @classLabel: expected {info.num_outputs} classes, got {len(found['class_names'])}")
    return Dataset(found["xs"], found["labels"], found["lengths"])


def _csv_split(path: Path, info: DataInfo, seq_len: int) -> Dataset:
    rows, _ = read_csv(path)
    _fits(str(path), info, kind="regression", many_to_many=False, features=rows.shape[1], outputs=rows.shape[1])
    if rows.shape[0] < seq_len + 1:
        raise DataError(f"{path}: expected at least seq_len + 1 = {seq_len + 1} rows (a window and its next row), "
                        f"got {rows.shape[0]}")
    return Dataset(series_windows(rows[:-1], seq_len).astype(np.float32), rows[seq_len:].astype(np.float32))


def _classes_split(paths: list[Path], info: DataInfo, seq_len: int | None) -> Dataset:
    _fits(str(paths[0]), info, kind="classification", many_to_many=False, tokens=True)
    if info.vocab is None or info.tokens is None:
        raise DataError(f"{paths[0]}: expected .npz, .ts or .csv data for a model trained on {info.source}, got text")
    if len(paths) != info.num_outputs:
        raise DataError(f"{paths[0]}: expected {info.num_outputs} text files (one per class, in the order of "
                        f"{list(info.class_names or ())}), got {len(paths)}")
    lines, labels = [], []
    for label, path in enumerate(paths):
        found = read_lines(path, info.tokens)
        lines += found
        labels += [label] * len(found)
    ids, lengths = encode_lines(lines, info.vocabulary, seq_len or max(len(line) for line in lines))
    return Dataset(ids, np.asarray(labels, np.int32), lengths)


def _text_split(paths: list[Path], info: DataInfo, seq_len: int) -> Dataset:
    if info.kind != "language_model" or info.vocab is None:
        raise DataError(f"{paths[0]}: expected {info.kind} data like {info.source}, got text")
    stream = tokenize("\n".join(read_text(p) for p in paths), info.tokens)
    if len(stream) < seq_len + 1:
        raise DataError(f"{paths[0]}: expected at least seq_len + 1 = {seq_len + 1} {info.tokens}, got {len(stream)}")
    return next_token_windows(info.vocabulary.encode(stream), seq_len)
