"""Standardization of float inputs: statistics of the training split's valid steps (padding
excluded), saved in the run's DataInfo, applied to every split and by predict and eval, per member
in a population, refused for token inputs; the default (on for .ts files only)."""

import dataclasses
import json

import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.data import DataInfo, input_stats, load_data, standardize_inputs
from perceptron1_jax.prediction import predict_examples
from perceptron1_jax.runs import load_members, load_run
from perceptron1_jax.training import Population, TrainConfig, train

pytestmark = pytest.mark.standard_promotion  # trains with optax

TS = """@problemName Scaled
@univariate false
@dimensions 2
@equalLength false
@classLabel true lo hi
@data
"""


def _series(rng, n, length):
    """Two channels on wildly different scales (1000 + x, 0.001 * y); the class is the sign of y's mean."""
    rows, labels = [], []
    for _ in range(n):
        t = int(rng.integers(length // 2, length + 1))
        y = rng.normal(size=t) + rng.choice([-1.0, 1.0])
        x = 1000 + 50 * rng.normal(size=t)
        rows.append((x, 0.001 * y))
        labels.append("hi" if y.mean() > 0 else "lo")
    return rows, labels


def _write_ts(path, rows, labels):
    lines = [",".join(f"{v:.6g}" for v in a) + ":" + ",".join(f"{v:.6g}" for v in b) + f":{c}"
             for (a, b), c in zip(rows, labels)]
    path.write_text(TS + "\n".join(lines) + "\n")
    return path


def test_statistics_skip_padding_and_constant_features_divide_by_one():
    xs = np.zeros((2, 3, 2), np.float32)
    xs[0, :, 0], xs[0, :, 1] = [1, 2, 3], 5
    xs[1, :1, 0], xs[1, :1, 1] = [6], 5
    mean, std = input_stats(xs, np.asarray([3, 1]))
    np.testing.assert_allclose(mean, [3.0, 5.0])
    np.testing.assert_allclose(std, [np.std([1, 2, 3, 6]), 1.0])  # the constant feature's std is taken as 1
    info = DataInfo("classification", 2, False, input_size=2, input_mean=mean, input_std=std)
    scaled = standardize_inputs(xs, np.asarray([3, 1]), info)
    np.testing.assert_allclose(scaled[0, :, 0], (np.asarray([1, 2, 3]) - 3) / np.std([1, 2, 3, 6]), rtol=1e-6)
    assert (scaled[1, 1:] == 0).all()  # padding stays 0
    plain = DataInfo("classification", 2, False, input_size=2)
    assert standardize_inputs(xs, None, plain) is xs


def test_a_ts_file_is_standardized_by_its_training_split_only(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_ts(tmp_path / "s.ts", *_series(rng, 40, 12))
    data = load_data(str(path), val_fraction=0.25, seed=1, standardize=True)
    raw = load_data(str(path), val_fraction=0.25, seed=1)
    mean, std = input_stats(raw.train.xs, raw.train.lengths)  # the training split alone
    assert data.info.input_mean == mean and data.info.input_std == std
    valid = np.arange(12)[None, :] < np.asarray(data.train.lengths)[:, None]
    np.testing.assert_allclose(np.asarray(data.train.xs)[valid].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(data.train.xs)[valid].std(0), 1, rtol=1e-4)
    assert TrainConfig(data=(str(path),)).standardizes and not TrainConfig(data=(str(tmp_path / "a.npz"),)).standardizes
    assert not TrainConfig(data=(str(path),), standardize=False).standardizes
    with pytest.raises(ValueError, match="standardize: expected float inputs"):
        load_data(classes=(str(_text(tmp_path, "a")), str(_text(tmp_path, "b"))), standardize=True)


def _text(tmp_path, name):
    path = tmp_path / f"{name}.txt"
    path.write_text("one line\nanother line\n")
    return path


def test_standardization_round_trips_through_predict_and_eval(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train_path = _write_ts(tmp_path / "S_TRAIN.ts", *_series(rng, 48, 12))
    test_path = _write_ts(tmp_path / "S_TEST.ts", *_series(rng, 20, 12))
    out = tmp_path / "run"
    assert main(["train", "--data", str(train_path), "--test", str(test_path), "--cell", "gru", "--hidden", "8",
                 "--batch-size", "8", "--steps", "40", "--eval-every", "10", "--lr", "0.05", "--no-progress",
                 "--no-gradcheck", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "inputs standardized" in said
    run = load_run(out / "best.msgpack")
    assert run.info.input_mean is not None and run.info.input_mean[0] > 900  # the raw scale was learnt from
    test = load_data(str(train_path), val_fraction=0.1, test=str(test_path))  # raw test inputs
    mine = predict_examples(run, test.test.xs, test.test.lengths)  # predict standardizes raw inputs itself
    plain = run._replace(info=dataclasses.replace(run.info, input_mean=None, input_std=None))  # no statistics
    by_hand = predict_examples(plain, standardize_inputs(test.test.xs, test.test.lengths, run.info), test.test.lengths)
    np.testing.assert_allclose(mine.probabilities, by_hand.probabilities, rtol=1e-6)
    accuracy = float(np.mean(mine.predictions == np.asarray(test.test.labels)))
    record = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "test_accuracy" in line][-1]
    np.testing.assert_allclose(accuracy, json.loads(record)["test_accuracy"], atol=1e-6)
    assert accuracy > 0.8  # standardized, the tiny channel that decides the class is learnt
    assert main(["eval", str(out), "--data", str(test_path)]) == 0
    assert f"eval accuracy {accuracy:.3f}" in capsys.readouterr().out


def test_a_population_standardizes_each_member_by_its_own_split(tmp_path):
    rng = np.random.default_rng(1)
    path = _write_ts(tmp_path / "s.ts", *_series(rng, 40, 10))
    cfg = TrainConfig(data=(str(path),), cell="gru", hidden=4, batch_size=8, steps=4, eval_every=2,
                      target_accuracy=0.0, val_fraction=0.25)
    train(cfg, tmp_path / "pop", progress=False, log=lambda _: None, check_grads=False,
          population=Population(seeds=2))
    members = load_members(tmp_path / "pop")
    for k, member in enumerate(members):
        single = load_data(str(path), val_fraction=0.25, seed=k, standardize=True)
        assert member.info.input_mean == single.info.input_mean and member.info.input_std == single.info.input_std
    assert members[0].info.input_mean != members[1].info.input_mean  # two splits, two sets of statistics
