"""Synthetic sequence tasks, each a pure function of a PRNG key (no downloads).

Every task maker has the signature ``make(key, num_examples, seq_len, dtype) -> Dataset`` and
returns float inputs ``xs: (n, seq_len, input_size)`` (or integer tokens ``(n, seq_len)`` for the
character task, embedded by the model) and integer labels ``(n,)`` (many-to-one) or
``(n, seq_len)`` (many-to-many).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


class Dataset(NamedTuple):
    xs: Array  # (n, time, input_size) floats, or (n, time) int tokens when vocab_size is set
    labels: Array  # (n,) or (n, time) int32 class ids, or float regression targets (n, k) / (n, time, k)
    lengths: Array | None = None  # (n,) valid steps of each example, None: all
    resets: Array | None = None  # (n, time) bool: where a new segment starts (packed sequences), None: none


class TaskSpec(NamedTuple):
    """Static description of a task; ``make`` builds the arrays."""

    name: str
    description: str
    make: Callable[..., Dataset]
    input_size: int  # features per step (the embedding size for token tasks)
    num_classes: int
    many_to_many: bool
    default_seq_len: int
    chance: float  # accuracy of the best constant guess
    vocab_size: int | None = None  # token tasks: inputs are ids embedded by a learned table
    next_token: bool = False  # the label at step t is the input at step t+1 (a backward direction sees it)
    make_eval: Callable[..., Dataset] | None = None  # the held-out split's maker (None: make, another key)
    make_stream: Callable[..., Dataset] | None = None  # stream runs: (seq_len) -> the training windows in order


# --------------------------------------------------------------------------- three-step

THREE_STEP_SYMBOLS = 4


def three_step(key, num_examples: int, seq_len: int = 3, dtype=jnp.float32) -> Dataset:
    """The textbook problem: three steps, a vector at each, one class read at the third step.

    Step ``t`` shows a symbol ``a_t`` in ``{0..3}`` as a noisy one-hot vector (noise std 0.1); the
    class is ``(a_1 + a_2 + a_3) mod 4``. Changing any one step's symbol changes the class, so the
    answer needs information from all three steps.
    """
    if seq_len != 3:
        raise ValueError(f"seq_len: expected 3 for the three_step task, got {seq_len}")
    k_sym, k_noise = jax.random.split(key)
    symbols = jax.random.randint(k_sym, (num_examples, 3), 0, THREE_STEP_SYMBOLS)
    xs = jax.nn.one_hot(symbols, THREE_STEP_SYMBOLS, dtype=dtype)
    xs = xs + 0.1 * jax.random.normal(k_noise, xs.shape, dtype)
    labels = (jnp.sum(symbols, axis=1) % THREE_STEP_SYMBOLS).astype(jnp.int32)
    return Dataset(xs, labels)


# --------------------------------------------------------------------------- adding problem

ADDING_BINS = 8
# The sum of two U(0, 1) values has the triangular density on [0, 2]; its most likely bin of
# width 1/4 is [0.75, 1) (or [1, 1.25)), with probability (1 - 0.75^2) / 2.
ADDING_CHANCE = (1 - 0.75**2) / 2


def adding(key, num_examples: int, seq_len: int = 50, dtype=jnp.float32) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber 1997), as classification.

    Each step has two channels: a value uniform in ``[0, 1)`` and a marker that is 1 at exactly two
    steps, one in each half of the sequence. The target ``s = v_a + v_b`` in ``[0, 2)`` is
    classified into ``8`` equal-width bins; reading it at the last step needs the values seen at
    the marked steps, up to ``seq_len`` steps back.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len: expected at least 2 for the adding task, got {seq_len}")
    k_val, k_a, k_b = jax.random.split(key, 3)
    values = jax.random.uniform(k_val, (num_examples, seq_len), dtype)
    half = seq_len // 2
    first = jax.random.randint(k_a, (num_examples,), 0, half)
    second = jax.random.randint(k_b, (num_examples,), half, seq_len)
    steps = jnp.arange(seq_len)[None, :]
    marker = ((steps == first[:, None]) | (steps == second[:, None])).astype(dtype)
    total = jnp.sum(values * marker, axis=1)
    labels = jnp.clip(jnp.floor(total / 2.0 * ADDING_BINS), 0, ADDING_BINS - 1).astype(jnp.int32)
    return Dataset(jnp.stack([values, marker], axis=-1), labels)


# --------------------------------------------------------------------------- copy / recall

COPY_SYMBOLS = 8


def copy(key, num_examples: int, seq_len: int = 50, dtype=jnp.float32) -> Dataset:
    """Recall the first symbol after a lag of ``seq_len - 1`` steps of distractors.

    Inputs have ``8 + 1`` channels: step 1 shows the target symbol (one-hot), steps ``2..T-1``
    show random distractor symbols from the same alphabet, and the last step shows only the
    query flag (channel 8). The label is the symbol of step 1, so the answer needs memory over
    the whole lag; chance is 1/8.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len: expected at least 2 for the copy task, got {seq_len}")
    symbols = jax.random.randint(key, (num_examples, seq_len), 0, COPY_SYMBOLS)
    xs = jax.nn.one_hot(symbols, COPY_SYMBOLS + 1, dtype=dtype)
    query = jax.nn.one_hot(COPY_SYMBOLS, COPY_SYMBOLS + 1, dtype=dtype)
    xs = xs.at[:, -1].set(query)
    return Dataset(xs, symbols[:, 0].astype(jnp.int32))


# --------------------------------------------------------------------------- parity


def parity(key, num_examples: int, seq_len: int = 20, dtype=jnp.float32) -> Dataset:
    """Running parity of a bit string (many-to-many): label_t = (b_1 + ... + b_t) mod 2.

    One input channel holding the bit; chance is 1/2.
    """
    bits = jax.random.bernoulli(key, 0.5, (num_examples, seq_len)).astype(jnp.int32)
    labels = (jnp.cumsum(bits, axis=1) % 2).astype(jnp.int32)
    return Dataset(bits[..., None].astype(dtype), labels)


# --------------------------------------------------------------------------- characters

TEXT = (
    "a recurrent network reads a sequence one step at a time and keeps a hidden state. "
    "backpropagation through time unrolls the network over the steps and runs the chain rule "
    "backwards from the last step to the first. the gradient that reaches an early step is a "
    "product of many jacobians, so it can vanish or explode. gates let the state flow unchanged, "
    "clipping bounds a step that explodes, and truncation cuts the unrolled graph to a window. "
    "the cat sat on the mat. the dog ran to the park. a bird sang in the tree by the river. "
)
VOCAB = "".join(sorted(set(TEXT)))
CHARS_CHANCE = max(TEXT.count(ch) for ch in VOCAB) / len(TEXT)  # always guess the most common one
CHAR_EMBED = 16


def encode(text: str) -> Array:
    """Characters -> int32 ids in the task's vocabulary."""
    unknown = sorted(set(text) - set(VOCAB))
    if unknown:
        raise ValueError(f"text: expected characters from the task vocabulary, got {unknown}")
    return jnp.array([VOCAB.index(ch) for ch in text], jnp.int32)


def decode(ids) -> str:
    return "".join(VOCAB[int(i)] for i in ids)


# The last 15% of the text is held out: the chars task evaluates on text it never trained on.
CHARS_SPLIT = int(len(TEXT) * 0.85)


def chars(key, num_examples: int, seq_len: int = 32, dtype=jnp.float32, part: str = "train") -> Dataset:
    """Next-character prediction on a small text this module ships (many-to-many).

    ``xs`` are token ids ``(n, seq_len)`` (embedded by a learned table in the model); the label at
    step t is the character at t+1. ``part="train"`` draws windows from the first 85% of the text,
    ``part="eval"`` from the last 15% (never trained on); windows start at random offsets into the
    part repeated end to end.
    """
    del dtype  # token ids; the embedding table carries the dtype
    if part not in ("train", "eval"):
        raise ValueError(f"part: expected 'train' or 'eval', got {part!r}")
    ids = encode(TEXT[:CHARS_SPLIT] if part == "train" else TEXT[CHARS_SPLIT:])
    stream = jnp.tile(ids, (seq_len + 1) // ids.size + 2)
    starts = jax.random.randint(key, (num_examples,), 0, ids.size)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(stream, (s,), (seq_len + 1,)))(starts)
    return Dataset(windows[:, :-1], windows[:, 1:])


def next_token_windows(ids, seq_len: int) -> Dataset:
    """Next-token windows of the ids ``(n,)`` in order, each continuing the last: ``xs[i] = ids[s:s+L]``,
    ``labels[i] = ids[s+1:s+L+1]`` for ``s = 0, L, 2L, ...`` (numpy in, numpy out)."""
    ids = np.asarray(ids)
    starts = np.arange(0, ids.size - seq_len, seq_len)
    index = starts[:, None] + np.arange(seq_len)[None, :]
    return Dataset(ids[index], ids[index + 1])


def chars_stream(seq_len: int = 32) -> Dataset:
    """The training part of the :func:`chars` text as :func:`next_token_windows`: what a stream run
    (``TrainConfig(stream=True)``) reads, each lane on through it."""
    return next_token_windows(np.array([VOCAB.index(ch) for ch in TEXT[:CHARS_SPLIT]], np.int32), seq_len)


def chars_eval(key, num_examples: int, seq_len: int = 32, dtype=jnp.float32) -> Dataset:
    """:func:`chars` windows of the held-out last 15% of the text."""
    return chars(key, num_examples, seq_len, dtype, part="eval")


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("three_step", "sum of three symbols mod 4, read at the third step", three_step,
                 THREE_STEP_SYMBOLS, THREE_STEP_SYMBOLS, False, 3, 0.25),
        TaskSpec("adding", "adding problem: binned sum of the two marked values", adding,
                 2, ADDING_BINS, False, 50, ADDING_CHANCE),
        TaskSpec("copy", "recall the first symbol after a lag with distractors", copy,
                 COPY_SYMBOLS + 1, COPY_SYMBOLS, False, 50, 1.0 / COPY_SYMBOLS),
        TaskSpec("parity", "running parity of a bit string at every step", parity,
                 1, 2, True, 20, 0.5),
        TaskSpec("chars", "next character of a small built-in text", chars,
                 CHAR_EMBED, len(VOCAB), True, 32, CHARS_CHANCE, vocab_size=len(VOCAB), next_token=True,
                 make_eval=chars_eval, make_stream=chars_stream),
    )
}
