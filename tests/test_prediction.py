"""Predictions of a run: they agree with model_apply, records are in input order (cut to each
example's length for many-to-many), and every input kind is read as the run's training data was."""

import jax
import numpy as np
import pytest

from perceptron1_jax import LayerSpec, ModelSpec, init_model, model_apply
from perceptron1_jax.data import UNK, DataError, DataInfo
from perceptron1_jax.prediction import file_inputs, predict_examples, prediction_records, text_inputs
from perceptron1_jax.runs import Run
from perceptron1_jax.train import TrainConfig

RNG = np.random.default_rng(0)


def _run(spec, info, seq_len=None):
    params = init_model(jax.random.key(0), spec)
    return Run(params, spec, info, TrainConfig(task=None, seq_len=seq_len), 0, "test")


def test_classifier_predictions_agree_with_model_apply():
    spec = ModelSpec((LayerSpec("gru", 6),), 3, input_size=2)
    run = _run(spec, DataInfo("classification", 3, False, input_size=2))
    xs, lengths = RNG.standard_normal((5, 4, 2)).astype(np.float32), np.array([4, 1, 2, 3, 4])
    result = predict_examples(run, xs, lengths)
    logits = np.asarray(model_apply(run.params, xs, spec, lengths))
    np.testing.assert_allclose(result.probabilities, jax.nn.softmax(logits), rtol=1e-6)
    np.testing.assert_array_equal(result.predictions, logits.argmax(-1))
    records = prediction_records(run, result)
    assert [r["prediction"] for r in records] == logits.argmax(-1).tolist()
    assert all(len(r["probabilities"]) == 3 and abs(sum(r["probabilities"]) - 1) < 1e-5 for r in records)


def test_many_to_many_records_keep_each_examples_valid_steps():
    vocab = (UNK, "a", "b", "c")
    spec = ModelSpec((LayerSpec("lstm", 5),), 4, vocab_size=4, embed_size=3, many_to_many=True)
    run = _run(spec, DataInfo("language_model", 4, True, vocab_size=4, tokens="chars", vocab=vocab))
    inputs = text_inputs(run, ["abc", "b", "cz"])
    np.testing.assert_array_equal(inputs.xs, [[1, 2, 3], [2, 0, 0], [3, 0, 0]])  # z reads as <unk> (0)
    np.testing.assert_array_equal(inputs.lengths, [3, 1, 2])
    records = prediction_records(run, predict_examples(run, *inputs))
    logits = np.asarray(model_apply(run.params, inputs.xs, spec, inputs.lengths))
    assert [len(r["prediction"]) for r in records] == [3, 1, 2]
    assert records[2]["prediction"] == logits[2, :2].argmax(-1).tolist()


def test_regression_from_a_csv_and_an_npz(tmp_path):
    spec = ModelSpec((LayerSpec("elman", 4),), 2, input_size=2, loss="mse")
    run = _run(spec, DataInfo("regression", 2, False, input_size=2), seq_len=3)
    csv = tmp_path / "s.csv"
    csv.write_text("a,b\n" + "\n".join(f"{i},{-i}" for i in range(6)))
    inputs = file_inputs(run, csv)
    assert inputs.xs.shape == (4, 3, 2) and inputs.lengths is None  # the last window forecasts past the file
    np.testing.assert_array_equal(inputs.xs[-1, :, 0], [3, 4, 5])
    records = prediction_records(run, predict_examples(run, *inputs))
    expected = model_apply(run.params, inputs.xs.astype(np.float32), spec)
    np.testing.assert_allclose([r["prediction"] for r in records], expected, rtol=1e-6)
    assert "probabilities" not in records[0]
    npz = tmp_path / "x.npz"
    np.savez(npz, xs=inputs.xs, lengths=np.array([3, 2, 1, 3]))
    assert file_inputs(run, npz).lengths.tolist() == [3, 2, 1, 3]
    np.savez(npz, xs=np.ones((2, 3, 5)))
    with pytest.raises(DataError, match=r"array 'xs': expected 2 features per step, got shape \(2, 3, 5\)"):
        file_inputs(run, npz)
    wide = tmp_path / "wide.csv"
    wide.write_text("1,2,3\n4,5,6\n7,8,9\n")
    with pytest.raises(DataError, match="expected 2 columns"):
        file_inputs(run, wide)
    with pytest.raises(DataError, match="expected an .npz or .csv file for a model of float inputs"):
        file_inputs(run, _text(tmp_path))


def _text(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("one\ntwo\n")
    return path


def test_text_lines_for_a_text_classifier(tmp_path):
    vocab = (UNK, "good", "bad", "film")
    spec = ModelSpec((LayerSpec("gru", 4),), 2, vocab_size=4, embed_size=3)
    run = _run(spec, DataInfo("classification", 2, False, vocab_size=4, tokens="words", vocab=vocab,
                              class_names=("pos", "neg")))
    inputs = file_inputs(run, _text(tmp_path))
    np.testing.assert_array_equal(inputs.lengths, [1, 1])
    lines = tmp_path / "reviews.txt"
    lines.write_text("Good film\nbad\n")
    inputs = file_inputs(run, lines)
    np.testing.assert_array_equal(inputs.xs, [[1, 3], [2, 0]])
    np.testing.assert_array_equal(inputs.lengths, [2, 1])
    lines.write_text("Good film\n\nbad\n")  # one output per line: a blank line is refused by its number
    with pytest.raises(DataError, match="reviews.txt: line 2: expected an example .at least one word token., got a "
                                        "blank line"):
        file_inputs(run, lines)
    lines.write_text("Good film\nbad\n   \n")  # spaces alone: no token either
    with pytest.raises(DataError, match="line 3: expected an example .* got a blank line"):
        file_inputs(run, lines)
    with pytest.raises(DataError, match="no such file"):
        file_inputs(run, tmp_path / "missing.txt")
