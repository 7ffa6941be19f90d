"""Data sources: .npz arrays, text for language modelling, text classification and CSV series;
what each returns, and the error each bad file gets (file, array or line, first bad index)."""

import numpy as np
import pytest

from perceptron1_jax.data import (
    UNK,
    DataError,
    Vocabulary,
    chance,
    detokenize,
    from_arrays,
    load_classes,
    load_csv,
    load_data,
    load_npz,
    load_text,
    tokenize,
)

RNG = np.random.default_rng(0)


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


# --------------------------------------------------------------------------- tokens and vocabulary


def test_tokenizers_and_vocabulary():
    assert tokenize("Hi, you!", "chars") == list("Hi, you!")
    assert tokenize("Don't STOP, now!", "words") == ["don't", "stop", ",", "now", "!"]
    assert detokenize(["a", "b"], "chars") == "ab" and detokenize(["a", "b"], "words") == "a b"
    vocab = Vocabulary.build("abracadabra", max_size=4)
    assert vocab.tokens == (UNK, "a", "b", "r")  # by count, ties by token; c and d dropped
    np.testing.assert_array_equal(vocab.encode("abcz"), [1, 2, 0, 0])
    assert vocab.decode([3, 1]) == ["r", "a"] and vocab.unknown("abcdc") == ["c", "d"]
    closed = Vocabulary(("a", "b"))  # no <unk>: unknown tokens are an error
    with pytest.raises(ValueError, match=r"unknown \['z'\]"):
        closed.encode("az")
    with pytest.raises(ValueError, match="tokens: expected one of"):
        tokenize("x", "bytes")
    with pytest.raises(ValueError, match="max_vocab: expected an int >= 2"):
        Vocabulary.build("ab", max_size=1)


# --------------------------------------------------------------------------- arrays


def test_npz_classification_with_lengths_and_a_seeded_split(tmp_path):
    xs = RNG.standard_normal((50, 7, 3)).astype(np.float32)
    labels = RNG.integers(0, 4, 50)
    lengths = RNG.integers(1, 8, 50)
    path = _npz(tmp_path, xs=xs, labels=labels, lengths=lengths)
    data = load_npz(path, val_fraction=0.2, seed=3)
    assert data.info.kind == "classification" and data.info.num_outputs == 4 and not data.info.many_to_many
    assert data.info.input_size == 3 and data.info.loss == "cross_entropy"
    assert data.train.xs.shape == (40, 7, 3) and data.eval.xs.shape == (10, 7, 3)
    again = load_npz(path, val_fraction=0.2, seed=3)
    other = load_npz(path, val_fraction=0.2, seed=4)
    np.testing.assert_array_equal(data.eval.xs, again.eval.xs)
    assert not np.array_equal(data.eval.xs, other.eval.xs)
    # every example lands in exactly one split, with its own label and length
    together = np.concatenate([data.train.xs, data.eval.xs])
    order = [int(np.flatnonzero((xs == row).all(axis=(1, 2)))[0]) for row in together]
    assert sorted(order) == list(range(50))
    np.testing.assert_array_equal(np.concatenate([data.train.labels, data.eval.labels]), labels[order])
    np.testing.assert_array_equal(np.concatenate([data.train.lengths, data.eval.lengths]), lengths[order])


def test_npz_regression_many_to_many_with_its_own_validation_split(tmp_path):
    xs, targets = RNG.standard_normal((8, 5, 2)), RNG.standard_normal((8, 5, 3))
    path = _npz(tmp_path, xs=xs, targets=targets, xs_val=xs[:3, :4], targets_val=targets[:3, :4])
    data = load_npz(path)
    assert data.info.kind == "regression" and data.info.many_to_many and data.info.num_outputs == 3
    assert data.info.loss == "mse" and chance(data) is None
    np.testing.assert_array_equal(data.train.xs, xs)
    np.testing.assert_array_equal(data.eval.labels, targets[:3, :4])


def test_token_ids_and_many_to_many_labels():
    ids = RNG.integers(0, 9, (6, 4))
    data = from_arrays(ids, labels=ids % 3, vocab_size=12, val_fraction=0.5)
    assert data.info.vocab_size == 12 and data.info.input_size is None and data.info.many_to_many
    assert data.info.num_outputs == 3 and data.train.xs.dtype == np.int32


@pytest.mark.parametrize("arrays, message", [
    ({"xs": np.where(np.arange(24).reshape(2, 4, 3) == 13, np.nan, 1.0), "labels": [0, 1]},
     r"array 'xs': expected finite values, got nan at index \(1, 0, 1\)"),
    ({"xs": np.full((2, 4, 3), np.inf), "labels": [0, 1]},
     r"array 'xs': expected finite values, got inf at index \(0, 0, 0\)"),
    ({"xs": np.ones((2, 4)), "labels": [0, 1]}, r"array 'xs': expected float inputs of shape \(n, time, features\)"),
    ({"xs": np.ones((3, 4, 2)), "labels": [0, 1]},
     r"array 'labels': expected 3 examples \(as 'xs'\), got shape \(2,\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": np.zeros((2, 5), int)}, r"array 'labels': expected shape \(2,\) or \(2, 4\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, -1]},
     r"array 'labels': expected class ids in \[0, 1\) \(the classes counted as the largest id \+ 1\), got -1 at "
     r"index \(1,\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 5], "num_classes": 3},
     r"array 'labels': expected class ids in \[0, 3\), got 5 at index \(1,\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0.0, 1.5]},
     r"array 'labels': expected integer class ids, got 1.5 at index \(1,\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "lengths": [4, 5]},
     r"array 'lengths': expected lengths in \[1, 4\] \(the time axis\), got 5 at index \(1,\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "lengths": [0, 2]}, r"got 0 at index \(0,\)"),
    ({"xs": np.ones((2, 4, 2)), "targets": np.array([[1.0], [np.nan]])},
     r"array 'targets': expected finite values, got nan at index \(1, 0\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "targets": np.ones((2, 1))}, "exactly one of 'labels'"),
    ({"xs": np.ones((2, 4, 2))}, "exactly one of 'labels' .* got neither"),
    ({"xs": np.ones((0, 4, 2)), "labels": np.zeros(0, int)}, "array 'xs': expected at least one example"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "xs_val": np.ones((2, 4, 3)), "labels_val": [0, 1]},
     "array 'xs_val': expected inputs like 'xs'"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "xs_val": np.ones((1, 4, 2)), "labels_val": [2], "num_classes": 2},
     r"array 'labels_val': expected class ids in \[0, 2\), got 2 at index \(0,\)"),
    ({"xs": np.array([[1, -2]]), "labels": [0]}, r"array 'xs': expected token ids >= 0, got -2 at index \(0, 1\)"),
    ({"xs": np.ones((2, 4, 2)), "labels": [0, 1], "bogus": [1]}, r"unexpected arrays \['bogus'\]"),
])
def test_bad_arrays_name_the_file_the_array_and_the_first_bad_index(tmp_path, arrays, message):
    path = _npz(tmp_path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(DataError, match=message) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_unreadable_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="broken.npz: cannot be read as .npz"):
        load_npz(path)
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.ones((3, 2)), np.ones((4, 2))]
    path = _npz(tmp_path, "ragged.npz", xs=ragged, labels=np.array([0, 1]))
    with pytest.raises(DataError, match="ragged.npz: array 'xs': expected a numeric array.*ragged rows"):
        load_npz(path)


# --------------------------------------------------------------------------- text


def test_language_model_text_holds_out_its_end_and_builds_the_vocabulary_from_the_rest(tmp_path):
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("abcabcabcabcabcabcab")
    second.write_text("cabcabcabcXYZ")  # the last 30% (with X, Y, Z) is never trained on
    data = load_text([first, second], seq_len=4, val_fraction=0.3)
    stream = tokenize(first.read_text() + "\n" + second.read_text(), "chars")
    n_val = int(len(stream) * 0.3)
    vocab = data.info.vocabulary
    assert set(vocab.tokens) == {UNK, *stream[:-n_val]} and "Z" not in vocab.tokens
    assert data.info.kind == "language_model" and data.info.next_token and data.info.many_to_many
    assert data.info.num_outputs == data.info.vocab_size == len(vocab)
    train_text = "".join(vocab.decode(np.concatenate([data.train.xs.ravel(), data.train.labels[-1, -1:]])))
    assert train_text == "".join(stream[: len(train_text)])  # windows every seq_len tokens, in order
    np.testing.assert_array_equal(data.train.xs[:, 1:], data.train.labels[:, :-1])
    assert vocab.decode(data.eval.labels[-1])[-1] == UNK  # Z, unseen in training, reads as <unk>


def test_word_tokens_and_max_vocab(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("the cat sat on the mat . the dog sat . " * 20)
    data = load_text(path, tokens="words", seq_len=3, max_vocab=4)
    assert data.info.vocab == (UNK, "the", ".", "sat") and data.info.tokens == "words"


def test_text_classes_pad_with_lengths(tmp_path):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("good film\n\nvery good film indeed\nnice\n")
    neg.write_text("bad\nvery bad film\n")
    data = load_classes([pos, neg], val_fraction=0.2, seed=0)
    assert data.info.class_names == ("pos", "neg") and data.info.num_outputs == 2
    xs = np.concatenate([data.train.xs, data.eval.xs])
    lengths = np.concatenate([data.train.lengths, data.eval.lengths])
    labels = np.concatenate([data.train.labels, data.eval.labels])
    vocab = data.info.vocabulary
    lines = {" ".join(vocab.decode(row[:n])): int(y) for row, n, y in zip(xs, lengths, labels)}
    train_words = {t for row, n in zip(data.train.xs, data.train.lengths) for t in vocab.decode(row[:n])}
    assert set(vocab.tokens) == {UNK, *train_words}
    assert len(lines) == 5 and sorted(lines.values()) == [0, 0, 0, 1, 1]
    assert {k.replace(UNK, "?") for k in lines} >= {k for k in ("nice", "bad") if k in train_words}
    cut = load_classes([pos, neg], seq_len=2)
    assert cut.train.xs.shape[1] == 2 and cut.train.lengths.max() == 2


@pytest.mark.parametrize("content, message", [
    (b"", "expected one example per line, got an empty file"),
    (b"   \n\n", "expected one example per line, got an empty file"),
    (b"fine line\nbad \xff byte\n", r"line 2, column 5: cannot decode as UTF-8 \(byte 0xff\)"),
])
def test_bad_class_files(tmp_path, content, message):
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text("a line\nanother\n")
    bad.write_bytes(content)
    with pytest.raises(DataError, match=f"bad.txt: {message}"):
        load_classes([good, bad])


def test_bad_text_sources(tmp_path):
    empty, short = tmp_path / "empty.txt", tmp_path / "short.txt"
    empty.write_text("")
    short.write_text("abcdefghij")
    with pytest.raises(DataError, match="empty.txt: expected text, got an empty file"):
        load_text(empty)
    with pytest.raises(DataError, match=r"the last 0.1 \(validation\) of the text has 1 chars, expected at least "
                                        r"seq_len \+ 1 = 5"):
        load_text(short, seq_len=4)
    with pytest.raises(DataError, match="classes: expected at least 2 files"):
        load_classes([short])
    with pytest.raises(DataError, match="missing.txt: no such file"):
        load_data(str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------- CSV


def test_csv_windows_predict_the_next_row(tmp_path):
    rows = np.arange(40.0).reshape(20, 2)
    path = tmp_path / "s.csv"
    path.write_text("a,b\n" + "\n".join(f"{x},{y}" for x, y in rows) + "\n")
    data = load_csv(path, seq_len=3, val_fraction=0.25)
    assert data.info.kind == "regression" and data.info.columns == ("a", "b") and data.info.input_size == 2
    xs = np.concatenate([data.train.xs, data.eval.xs])
    targets = np.concatenate([data.train.labels, data.eval.labels])
    assert xs.shape == (17, 3, 2) and data.eval.xs.shape[0] == 4
    for window, target in zip(xs, targets):
        start = int(window[0, 0]) // 2
        np.testing.assert_array_equal(window, rows[start:start + 3])
        np.testing.assert_array_equal(target, rows[start + 3])
    no_header = tmp_path / "plain.csv"
    no_header.write_text("1\n2\n3\n4\n5\n")
    assert load_csv(no_header, seq_len=2).info.columns == ("column 1",)


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3\n", "line 3: expected 2 columns (as the first row), got 1"),
    ("1,2\n3,x\n", "line 2, column 2: expected a number, got 'x'"),
    ("1,2\n3,nan\n", "line 2, column 2: expected a finite number, got nan"),
    ("", "expected rows of numbers, got an empty file"),
    ("1\n2\n", "expected at least seq_len + 2 = 4 rows"),
])
def test_bad_csv_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_data(str(path), seq_len=2)
    assert str(info.value) == f"{path}: {message}" or str(info.value).startswith(f"{path}: {message}")


def test_load_data_picks_the_source_and_refuses_options_that_do_not_apply(tmp_path):
    path = _npz(tmp_path, xs=np.ones((4, 3, 1)), labels=np.array([0, 1, 0, 1]))
    assert load_data(str(path)).info.kind == "classification"
    with pytest.raises(ValueError, match="tokens: expected no tokenizer for a .npz file"):
        load_data(str(path), tokens="chars")
    with pytest.raises(ValueError, match="seq_len: expected none for a .npz file"):
        load_data(str(path), seq_len=3)
    with pytest.raises(ValueError, match="expected exactly one of data"):
        load_data()
