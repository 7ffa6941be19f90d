"""Tokenizers and the vocabulary of a text source.

``tokenize(text, "chars")`` is the list of characters; ``tokenize(text, "words")`` lower-cases and
splits into words (letters, digits, ``_`` and inner apostrophes) and single punctuation marks.
A :class:`Vocabulary` maps tokens to ids. One built by :meth:`Vocabulary.build` has :data:`UNK` at id
0, the id of every token it was not built from, and the others by decreasing count in the training
text (ties by token); one without ``UNK`` (a fixed alphabet) refuses unknown tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

UNK = "<unk>"
TOKENIZERS = ("chars", "words")
_WORD = re.compile(r"\w+(?:'\w+)*|[^\w\s]")


def check_tokenizer(mode: str) -> str:
    if mode not in TOKENIZERS:
        raise ValueError(f"tokens: expected one of {list(TOKENIZERS)}, got {mode!r}")
    return mode


def tokenize(text: str, mode: str) -> list[str]:
    """``text`` -> its tokens: characters (``"chars"``) or lower-cased words and marks (``"words"``)."""
    if check_tokenizer(mode) == "chars":
        return list(text)
    return _WORD.findall(text.lower())


def detokenize(tokens: Sequence[str], mode: str) -> str:
    """Tokens -> text: characters joined as they are, words joined by spaces."""
    return ("" if check_tokenizer(mode) == "chars" else " ").join(tokens)


@dataclass(frozen=True)
class Vocabulary:
    """The token of each id, hashable; build one from a text with :meth:`build`."""

    tokens: tuple[str, ...]
    _index: dict = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if not self.tokens or len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"vocab: expected distinct tokens, got {len(self.tokens)} with "
                             f"{len(self.tokens) - len(set(self.tokens))} repeated")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(cls, tokens: Iterable[str], max_size: int | None = None) -> Vocabulary:
        """The vocabulary of ``tokens``: ``UNK`` and the most frequent ``max_size - 1`` others (all
        without ``max_size``)."""
        if max_size is not None and (not isinstance(max_size, int) or max_size < 2):
            raise ValueError(f"max_vocab: expected an int >= 2 (ids, {UNK} included), got {max_size!r}")
        counts = Counter(tokens)
        counts.pop(UNK, None)
        ranked = sorted(counts, key=lambda t: (-counts[t], t))
        if max_size is not None:
            ranked = ranked[: max_size - 1]
        return cls((UNK, *ranked))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> np.ndarray:
        """Tokens -> int32 ids; unknown tokens -> the id of ``UNK``, or a ``ValueError`` naming them
        for a vocabulary without ``UNK``."""
        tokens = list(tokens)
        unk = self._index.get(UNK)
        if unk is None and self.unknown(tokens):
            raise ValueError(f"text: expected tokens of the vocabulary, got unknown {self.unknown(tokens)[:10]}")
        return np.fromiter((self._index.get(t, unk) for t in tokens), np.int32, len(tokens))

    def unknown(self, tokens: Iterable[str]) -> list[str]:
        """The distinct tokens of ``tokens`` that map to ``UNK``, in order of appearance."""
        return list(dict.fromkeys(t for t in tokens if t not in self._index))

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[int(i)] for i in ids]
