"""Your own data: ``.npz`` arrays, text for language modelling, text classification (one file of
lines per class), CSV time series and the UCR/UEA archives' ``.ts`` files, each checked on load
and returned as a :class:`Data` (training split, evaluation split, :class:`DataInfo`).

:func:`load_data` picks the source the way ``perceptron1 train --data/--classes`` does.
"""

from __future__ import annotations

from pathlib import Path

from perceptron1_jax.data.archives import archive_file, is_archive, shipped
from perceptron1_jax.data.arrays import from_arrays, load_npz
from perceptron1_jax.data.heldout import load_heldout
from perceptron1_jax.data.series import DEFAULT_SERIES_SEQ_LEN, load_csv, read_csv, series_windows
from perceptron1_jax.data.source import Data, DataError, DataInfo, chance
from perceptron1_jax.data.standardize import input_stats, standardize_inputs, standardized
from perceptron1_jax.data.text import DEFAULT_LM_SEQ_LEN, encode_lines, load_classes, load_text, read_lines
from perceptron1_jax.data.ts import MISSING, check_missing, load_ts, read_ts
from perceptron1_jax.data.vocab import TOKENIZERS, UNK, Vocabulary, check_tokenizer, detokenize, tokenize


def source_kind(data=None, classes=None) -> str:
    """``"npz"``, ``"csv"``, ``"ts"``, ``"text"`` (language modelling) or ``"classes"`` for these paths."""
    if (data is None) == (classes is None):
        raise ValueError("data/classes: expected exactly one of data (npz, csv or text files) or classes (one "
                         f"text file per class), got data={data!r}, classes={classes!r}")
    if classes is not None:
        return "classes"
    data = [data] if isinstance(data, (str, Path)) else list(data)
    if any(is_archive(p) for p in data):
        if len(data) != 1:
            raise ValueError(f"data: expected one aeon:NAME dataset alone, got {len(data)} sources")
        return "ts"
    paths = [Path(p) for p in data]
    suffixes = {p.suffix.lower() for p in paths}
    for kind in ("npz", "csv", "ts"):
        if f".{kind}" in suffixes:
            if len(paths) != 1:
                raise ValueError(f"data: expected one .{kind} file, got {len(paths)} files")
            return kind
    return "text"


def load_data(data=None, classes=None, *, tokens: str | None = None, seq_len: int | None = None,
              val_fraction: float = 0.1, seed: int = 0, max_vocab: int | None = None,
              missing: str = "error", test=None, standardize: bool = False) -> Data:
    """Load ``data`` (an ``.npz``, a ``.csv``, a ``.ts``, ``aeon:NAME`` or text files for language
    modelling) or ``classes`` (one text file per class). ``tokens``: ``"chars"`` or ``"words"`` for
    text (default chars for language modelling, words for classes); ``seq_len``: window length
    (text: default :data:`DEFAULT_LM_SEQ_LEN`; CSV: :data:`DEFAULT_SERIES_SEQ_LEN`; classes:
    longest line); ``seed`` draws the random evaluation split; ``missing``: a ``.ts`` file's
    missing values are an error (``"error"``) or read as 0 (``"zero"``).

    ``test`` (paths, or ``aeon:NAME`` for its TEST file): a held-out split of the same kind, read
    whole into ``Data.test`` (:func:`load_heldout`, checked to fit the training data); with it the
    evaluation split is a validation split carved from the training file, stratified by class for
    classifiers (``val_fraction`` may then be 0: no validation). ``standardize``: standardize float
    inputs by the training split's per-feature statistics (:func:`standardized`).
    Missing files, bad values and options raise :class:`DataError` (a ``ValueError``) naming them."""
    kind = source_kind(data, classes)
    check_missing(missing)
    if missing != "error" and kind != "ts":
        raise ValueError(f"missing: expected the default 'error' for a {kind} source (only .ts files mark missing "
                         f"values), got {missing!r}")
    if tokens is not None:
        check_tokenizer(tokens)
        if kind in ("npz", "csv", "ts"):
            raise ValueError(f"tokens: expected no tokenizer for a .{kind} file (only text is tokenized), "
                             f"got {tokens!r}")
    if max_vocab is not None and kind in ("npz", "csv", "ts"):
        raise ValueError(f"max_vocab: expected no vocabulary limit for a .{kind} file, got {max_vocab}")
    if val_fraction == 0 and test is None:
        raise ValueError("val_fraction: expected a number in (0, 1), got 0 (0 is for a run with a test split)")
    loaded = _load_source(kind, data, classes, tokens=tokens, seq_len=seq_len, val_fraction=val_fraction, seed=seed,
                          max_vocab=max_vocab, missing=missing, stratify=test is not None)
    if test is not None:
        loaded = loaded._replace(test=load_heldout(test, loaded.info, seq_len=seq_len, missing=missing))
    return standardized(loaded) if standardize else loaded


def _load_source(kind: str, data, classes, *, tokens, seq_len, val_fraction, seed, max_vocab, missing,
                 stratify) -> Data:
    """The training and evaluation splits of one source (see :func:`load_data`)."""
    paths = classes if classes is not None else data
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    name = None
    if kind == "ts" and is_archive(str(paths[0])):
        name, paths = str(paths[0]), [archive_file(str(paths[0]), "TRAIN")]
    for path in paths:
        if not Path(path).is_file():
            raise DataError(f"{path}: no such file")
    if kind == "npz":
        if seq_len is not None:
            raise ValueError(f"seq_len: expected none for a .npz file (its arrays fix the time axis), got {seq_len}")
        return load_npz(paths[0], val_fraction=val_fraction, seed=seed, stratify=stratify)
    if kind == "ts":
        if seq_len is not None:
            raise ValueError(f"seq_len: expected none for a .ts file (its series fix the time axis), got {seq_len}")
        return load_ts(paths[0], val_fraction=val_fraction, seed=seed, missing=missing, stratify=stratify, name=name)
    if kind == "csv":
        return load_csv(paths[0], seq_len=seq_len or DEFAULT_SERIES_SEQ_LEN, val_fraction=val_fraction, seed=seed)
    if kind == "text":
        return load_text(paths, tokens=tokens or "chars", seq_len=seq_len or DEFAULT_LM_SEQ_LEN,
                         val_fraction=val_fraction, max_vocab=max_vocab)
    return load_classes(paths, tokens=tokens or "words", seq_len=seq_len, val_fraction=val_fraction, seed=seed,
                        max_vocab=max_vocab, stratify=stratify)


__all__ = (
    "DEFAULT_LM_SEQ_LEN",
    "DEFAULT_SERIES_SEQ_LEN",
    "MISSING",
    "TOKENIZERS",
    "UNK",
    "Data",
    "DataError",
    "DataInfo",
    "Vocabulary",
    "archive_file",
    "chance",
    "check_missing",
    "check_tokenizer",
    "detokenize",
    "encode_lines",
    "from_arrays",
    "input_stats",
    "is_archive",
    "load_classes",
    "load_csv",
    "load_data",
    "load_heldout",
    "load_npz",
    "load_text",
    "load_ts",
    "read_csv",
    "read_lines",
    "read_ts",
    "series_windows",
    "shipped",
    "source_kind",
    "standardize_inputs",
    "standardized",
    "tokenize",
)
