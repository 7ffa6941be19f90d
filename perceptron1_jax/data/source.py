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
    """A source's two splits and its description."""

    train: Dataset
    eval: Dataset
    info: DataInfo


def take(data: Dataset, index) -> Dataset:
    """The examples ``index`` of ``data`` (numpy fancy indexing on every array)."""
    return Dataset(*(None if a is None else a[index] for a in data))


def split_indices(n: int, val_fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``n`` examples: ``(train, val)`` index arrays, each sorted and
    non-empty (``round(n * val_fraction)`` validation examples, at least 1)."""
    check_val_fraction(val_fraction)
    n_val = max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise DataError(f"{what}: expected at least 2 examples to split into training and validation, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def check_val_fraction(val_fraction) -> float:
    if not (isinstance(val_fraction, (int, float)) and 0 < val_fraction < 1):
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    return float(val_fraction)


def check_seq_len(seq_len) -> int:
    if not (isinstance(seq_len, (int, np.integer)) and not isinstance(seq_len, bool) and seq_len > 0):
        raise ValueError(f"seq_len: expected a positive int, got {seq_len!r}")
    return int(seq_len)


def chance(data: Data) -> float | None:
    """Accuracy of always guessing the most frequent training label, on the evaluation split
    (classifiers; None for regression). Padded steps of many-to-many labels are not counted."""
    if not data.info.classifier:
        return None

    def valid(split: Dataset) -> np.ndarray:
        labels = np.asarray(split.labels)
        if labels.ndim == 2 and split.lengths is not None:
            return labels[np.arange(labels.shape[1])[None, :] < np.asarray(split.lengths)[:, None]]
        return labels.ravel()

    guess = np.bincount(valid(data.train), minlength=data.info.num_outputs).argmax()
    return float(np.mean(valid(data.eval) == guess))
