"""Text as a data source: language modelling (:func:`load_text`) and classification from one file
of lines per class (:func:`load_classes`).

Language modelling: the files are read in order and joined by newlines; the last ``val_fraction``
of the tokens is the evaluation split (never trained on); the vocabulary is built from the
training part only (tokens seen only in the evaluation part map to ``<unk>``). Examples are
windows of ``seq_len`` tokens, one starting every ``seq_len`` tokens, with the next token as the
target at every step (many-to-many).

Classification: each non-blank line of class file ``c`` is one example with label ``c``; lines are
tokenized, cut to ``seq_len`` tokens (default: the longest training line) and padded, with
``lengths``; a seeded random ``val_fraction`` of the examples is the evaluation split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from perceptron1_jax.data.source import (
    Data,
    DataError,
    DataInfo,
    check_seq_len,
    check_val_fraction,
    split_indices,
    take,
)
from perceptron1_jax.data.vocab import Vocabulary, tokenize
from perceptron1_jax.tasks import Dataset, next_token_windows

DEFAULT_LM_SEQ_LEN = 64


def read_text(path) -> str:
    """A UTF-8 file's text; an error names the file, the line and the column of a bad byte."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        return blob.decode("utf-8")
    except UnicodeDecodeError as err:
        line = blob.count(b"\n", 0, err.start) + 1
        column = err.start - (blob.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{path}: line {line}, column {column}: cannot decode as UTF-8 "
                        f"(byte 0x{blob[err.start]:02x})") from err


def _paths(paths, what: str) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError(f"{what}: expected at least one file, got none")
    return paths


def describe_paths(paths: Sequence[Path]) -> str:
    """``a.txt`` or ``a.txt (+167 files)``: how errors and logs name a list of files."""
    return str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"


def load_text(paths, *, tokens: str = "chars", seq_len: int = DEFAULT_LM_SEQ_LEN, val_fraction: float = 0.1,
              max_vocab: int | None = None) -> Data:
    """Language-modelling data from one or more UTF-8 text files (see the module doc)."""
    paths = _paths(paths, "data")
    seq_len, val_fraction = check_seq_len(seq_len), check_val_fraction(val_fraction, allow_zero=True)
    texts = []
    for path in paths:
        text = read_text(path)
        if not text.strip():  # any other text has at least one token of either kind
            raise DataError(f"{path}: expected text, got an empty file")
        texts.append(text)
    stream = tokenize("\n".join(texts), tokens)
    n_val = max(1, int(len(stream) * val_fraction)) if val_fraction else 0
    train_tokens, val_tokens = stream[:len(stream) - n_val], stream[len(stream) - n_val:]
    where = describe_paths(paths)
    for part, count in (("training part", len(train_tokens)), (f"last {val_fraction:g} (validation)", n_val)):
        if count < seq_len + 1 and (count or part == "training part"):
            raise DataError(f"{where}: the {part} of the text has {count} {tokens}, expected at least "
                            f"seq_len + 1 = {seq_len + 1}: give more text or a shorter seq_len")
    vocab = Vocabulary.build(train_tokens, max_vocab)
    info = DataInfo("language_model", len(vocab), True, vocab_size=len(vocab), tokens=tokens, vocab=vocab.tokens,
                    source=str(where))
    return Data(next_token_windows(vocab.encode(train_tokens), seq_len),
                next_token_windows(vocab.encode(val_tokens), seq_len), info)


def read_lines(path, tokens: str) -> list[list[str]]:
    """The tokenized non-blank lines of a UTF-8 file (an error names an empty file)."""
    lines = [tokenize(line, tokens) for line in read_text(path).splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path}: expected one example per line, got an empty file")
    return lines


def encode_lines(lines: Sequence[Sequence[str]], vocab: Vocabulary, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokenized lines -> ``(ids (n, seq_len) int32 padded with 0, lengths (n,))``, each cut to ``seq_len``."""
    ids = np.zeros((len(lines), seq_len), np.int32)
    lengths = np.zeros((len(lines),), np.int32)
    for i, line in enumerate(lines):
        row = vocab.encode(line[:seq_len])
        ids[i, : row.size], lengths[i] = row, row.size
    return ids, lengths


def load_classes(paths, *, tokens: str = "words", seq_len: int | None = None, val_fraction: float = 0.1,
                 seed: int = 0, max_vocab: int | None = None, stratify: bool = False) -> Data:
    """Classification data from one text file per class, one example per line (see the module doc);
    ``stratify``: the evaluation split takes ``val_fraction`` of each class's lines."""
    paths = _paths(paths, "classes")
    if len(paths) < 2:
        raise DataError(f"classes: expected at least 2 files (one per class), got {len(paths)}")
    if seq_len is not None:
        seq_len = check_seq_len(seq_len)
    lines, labels = [], []
    for label, path in enumerate(paths):
        found = read_lines(path, tokens)
        lines += found
        labels += [label] * len(found)
    train_index, val_index = split_indices(len(lines), val_fraction, seed, "classes",
                                           np.asarray(labels) if stratify else None)
    train_lines = [lines[i] for i in train_index]
    vocab = Vocabulary.build((t for line in train_lines for t in line), max_vocab)
    if seq_len is None:
        seq_len = max(len(line) for line in train_lines)
    ids, lengths = encode_lines(lines, vocab, seq_len)
    everything = Dataset(ids, np.asarray(labels, np.int32), lengths)
    info = DataInfo("classification", len(paths), False, vocab_size=len(vocab), tokens=tokens, vocab=vocab.tokens,
                    class_names=tuple(p.stem for p in paths), source=describe_paths(paths))
    return Data(take(everything, train_index), take(everything, val_index), info)
