"""What every data source returns: a :class:`Data` (training split, evaluation split and a
:class:`DataInfo`), and the helpers the sources share (errors, seeded splits, windows).

A :class:`DataInfo` is what the model and the run need to know about the data: the kind of
problem, the sizes, and for text the tokenizer and vocabulary. It is saved in every checkpoint,
so a run can read new text (``generate``, ``predict``) exactly as it read its training text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from perceptron1_jax.data.vocab import Vocabulary
from perceptron1_jax.tasks import Dataset

KINDS = ("classification", "regression", "language_model")


class DataError(ValueError):
    """Bad data: names the file, the array or line, and the first bad index."""


@dataclass(frozen=True)
class DataInfo:
    """What a source tells the model and the run (hashable; saved with the run)."""

    kind: str  # one of KINDS
    num_outputs: int  # classes, or regression outputs per example (per step if many_to_many)
    many_to_many: bool  # a target at every step
    input_size: int | None = None  # float inputs: features per step
    vocab_size: int | None = None  # token-id inputs: ids in [0, vocab_size)
    tokens: str | None = None  # text sources: "chars" or "words"
    vocab: tuple[str, ...] | None = None  # text sources: the token of each id (id 0 is "<unk>")
    class_names: tuple[str, ...] | None = None  # text classification: one name per class (its file)
    columns: tuple[str, ...] | None = None  # CSV series: the column names
    source: str = ""  # where the data came from, for humans
    input_mean: tuple[float, ...] | None = None  # standardized float inputs: each feature's training mean
    input_std: tuple[float, ...] | None = None  # ... and standard deviation (inputs become (x - mean) / std)
    target_mean: tuple[float, ...] | None = None  # standardized regression targets: each output's training mean
    target_std: tuple[float, ...] | None = None  # ... and standard deviation (predictions are mapped back)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {list(KINDS)}, got {self.kind!r}")
        if (self.input_size is None) == (self.vocab_size is None):
            raise ValueError(f"input_size/vocab_size: expected exactly one, got {self.input_size}/{self.vocab_size}")

    @property
    def loss(self) -> str:
        return "mse" if self.kind == "regression" else "cross_entropy"

    @property
    def classifier(self) -> bool:
        return self.kind != "regression"

    @property
    def next_token(self) -> bool:
        """The target at step t is the input at step t+1 (a backward direction would see it)."""
        return self.kind == "language_model"

    @property
    def vocabulary(self) -> Vocabulary | None:
        return None if self.vocab is None else Vocabulary(self.vocab)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DataInfo:
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**values)


class Data(NamedTuple):
    """A source's splits and its description: ``eval`` is what every evaluation during training
    scores (the validation split when there is a ``test``); ``test`` (or None) is scored once, at
    the end of a run, and never before."""

    train: Dataset
    eval: Dataset
    info: DataInfo
    test: Dataset | None = None


def take(data: Dataset, index) -> Dataset:
    """The examples ``index`` of ``data`` (numpy fancy indexing on every array)."""
    return Dataset(*(None if a is None else a[index] for a in data))


def split_indices(n: int, val_fraction: float, seed: int, what: str, labels=None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` examples: ``(train, val)`` index arrays, each sorted
    (``round(n * val_fraction)`` validation examples, at least 1; none for ``val_fraction`` 0).

    ``labels`` (``(n,)`` class ids): stratified by class: class ``c`` of ``n_c`` examples gives
    ``round(n_c * val_fraction)`` of them (at least 1 when ``n_c >= 2``; a class of one example
    stays in training), so each class keeps its share in both parts."""
    check_val_fraction(val_fraction, allow_zero=True)
    rng = np.random.default_rng(seed)
    if val_fraction == 0:
        if n < 1:
            raise DataError(f"{what}: expected at least 1 example to train on, got none")
        return np.arange(n), np.arange(0)
    if labels is None:
        n_val = max(1, round(n * val_fraction))
        if n - n_val < 1:
            raise DataError(f"{what}: expected at least 2 examples to split into training and validation, got {n}")
        order = rng.permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])
    labels = np.asarray(labels)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        take_n = min(max(1, round(members.size * val_fraction)), members.size - 1)
        val.append(members[:take_n])
    val = np.sort(np.concatenate(val))
    if val.size == 0:
        raise DataError(f"{what}: expected a class with at least 2 examples to carve a stratified validation "
                        f"split from, got {n} examples of {np.unique(labels).size} classes")
    return np.setdiff1d(np.arange(n), val), val


def check_val_fraction(val_fraction, allow_zero: bool = False) -> float:
    low = 0 <= val_fraction if allow_zero else 0 < val_fraction
    if not (isinstance(val_fraction, (int, float)) and not isinstance(val_fraction, bool) and low and val_fraction < 1):
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(f"val_fraction: expected a number in {interval}, got {val_fraction!r}")
    return float(val_fraction)


def check_seq_len(seq_len) -> int:
    if not (isinstance(seq_len, (int, np.integer)) and not isinstance(seq_len, bool) and seq_len > 0):
        raise ValueError(f"seq_len: expected a positive int, got {seq_len!r}")
    return int(seq_len)


def check_stream(split: Dataset, info: DataInfo, batch_size: int) -> int:
    """What a stream run (``TrainConfig(stream=True)``) asks of its training ``split``: next-token
    windows in order, each continuing the last (window ``i + 1`` starts with window ``i``'s last
    target, as :func:`~perceptron1_jax.tasks.next_token_windows` cuts a text), at least one for
    each of the ``batch_size`` lanes. Returns the windows each lane reads before it starts over;
    a ``ValueError`` naming ``stream`` otherwise."""
    if not info.next_token:
        raise ValueError(f"stream: expected next-token data whose windows continue each other (text files, the "
                         f"chars task), got {info.kind} data from {info.source or 'Python'}")
    xs, labels = np.asarray(split.xs), np.asarray(split.labels)
    breaks = np.flatnonzero(xs[1:, 0] != labels[:-1, -1])
    if breaks.size:
        i = int(breaks[0])
        raise ValueError(f"stream: expected training windows that continue each other (window i + 1 starting "
                         f"with window i's last target), got window {i + 1} of {info.source or 'the data'} starting "
                         f"with {xs[i + 1, 0]} after {labels[i, -1]}")
    return xs.shape[0] // batch_size


def chance(data: Data) -> float | None:
    """Accuracy of always guessing the most frequent training label, on the evaluation split
    (classifiers; None for regression or an empty split). Padded steps of many-to-many labels are
    not counted."""
    if not data.info.classifier:
        return None

    def valid(split: Dataset) -> np.ndarray:
        labels = np.asarray(split.labels)
        if labels.ndim == 2 and split.lengths is not None:
            return labels[np.arange(labels.shape[1])[None, :] < np.asarray(split.lengths)[:, None]]
        return labels.ravel()

    guess = np.bincount(valid(data.train), minlength=data.info.num_outputs).argmax()
    scored = valid(data.eval)
    return float(np.mean(scored == guess)) if scored.size else None
