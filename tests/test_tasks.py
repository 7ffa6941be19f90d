"""Synthetic tasks: shapes, dtypes, and that each label is what the task says it is."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceptron1_jax import tasks
from perceptron1_jax.tasks import TASKS

KEY = jax.random.key(0)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_shapes_dtypes_and_determinism(name):
    spec = TASKS[name]
    data = spec.make(KEY, 16, spec.default_seq_len)
    again = spec.make(KEY, 16, spec.default_seq_len)
    other = spec.make(jax.random.key(1), 16, spec.default_seq_len)
    time = spec.default_seq_len
    if spec.vocab_size is None:
        assert data.xs.shape == (16, time, spec.input_size) and data.xs.dtype == jnp.float32
    else:
        assert data.xs.shape == (16, time) and jnp.issubdtype(data.xs.dtype, jnp.integer)
        assert int(data.xs.max()) < spec.vocab_size
    assert data.labels.shape == ((16, time) if spec.many_to_many else (16,))
    assert data.labels.dtype == jnp.int32
    assert 0 <= int(data.labels.min()) and int(data.labels.max()) < spec.num_classes
    np.testing.assert_array_equal(data.xs, again.xs)
    assert not np.array_equal(data.xs, other.xs)


def test_three_step_label_needs_all_three_steps():
    data = tasks.three_step(KEY, 200)
    symbols = np.argmax(np.asarray(data.xs), axis=-1)
    np.testing.assert_array_equal(data.labels, symbols.sum(1) % 4)
    with pytest.raises(ValueError, match="seq_len: expected 3"):
        tasks.three_step(KEY, 4, seq_len=5)


def test_adding_label_is_binned_sum_of_marked_values():
    data = tasks.adding(KEY, 100, seq_len=20)
    values, marker = np.asarray(data.xs[..., 0]), np.asarray(data.xs[..., 1])
    assert np.all(marker.sum(1) == 2)
    assert np.all(marker[:, :10].sum(1) == 1)
    total = (values * marker).sum(1)
    np.testing.assert_array_equal(data.labels, np.clip(np.floor(total / 2 * 8), 0, 7))


def test_copy_label_is_first_symbol_and_last_step_is_the_query():
    data = tasks.copy(KEY, 50, seq_len=10)
    xs = np.asarray(data.xs)
    np.testing.assert_array_equal(data.labels, np.argmax(xs[:, 0], -1))
    assert np.all(xs[:, -1, 8] == 1) and np.all(xs[:, -1, :8] == 0)
    assert np.all(xs[:, :-1, 8] == 0)


def test_parity_is_running_parity():
    data = tasks.parity(KEY, 30, seq_len=12)
    bits = np.asarray(data.xs[..., 0]).astype(int)
    np.testing.assert_array_equal(data.labels, np.cumsum(bits, 1) % 2)


def test_chars_labels_are_next_characters():
    data = tasks.chars(KEY, 5, seq_len=20)
    np.testing.assert_array_equal(data.xs[:, 1:], data.labels[:, :-1])
    text = tasks.decode(data.xs[0]) + tasks.decode(data.labels[0][-1:])
    assert text in tasks.TEXT * 3
    with pytest.raises(ValueError, match="text: expected characters"):
        tasks.encode("Q!")


def test_chance_levels_match_the_label_distribution():
    for name in ("adding", "copy", "three_step", "parity"):
        spec = TASKS[name]
        labels = np.asarray(spec.make(KEY, 40000, spec.default_seq_len).labels).ravel()
        best_constant = np.bincount(labels, minlength=spec.num_classes).max() / labels.size
        assert best_constant == pytest.approx(spec.chance, abs=0.01), name


def test_chars_evaluates_on_text_it_never_trained_on():
    held_out, trained = tasks.TEXT[tasks.CHARS_SPLIT:], tasks.TEXT[: tasks.CHARS_SPLIT]
    spec = TASKS["chars"]
    train = spec.make(KEY, 64, 20)
    evals = spec.make_eval(KEY, 64, 20)
    for xs, part in ((train.xs, trained), (evals.xs, held_out)):
        for row in np.asarray(xs):
            assert tasks.decode(row) in part * 3
    eval_windows = {tasks.decode(row) for row in np.asarray(evals.xs)}
    assert not any(window in trained for window in eval_windows)
