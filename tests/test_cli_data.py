"""Your own data from the command line: train on each source, then generate and predict with the
run; bad files get one line and exit status 2; data runs resume exactly (also from Python)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.data import from_arrays
from perceptron1_jax.model import model_apply
from perceptron1_jax.prediction import text_inputs
from perceptron1_jax.runs import load_run
from perceptron1_jax.train import TrainConfig, train

pytestmark = pytest.mark.standard_promotion  # train drives optax

FAST = ["--batch-size", "4", "--eval-every", "3", "--log-every", "3", "--no-progress", "--no-gradcheck"]
TEXT = "the quick brown fox jumps over the lazy dog. " * 12


def _evals(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "eval_loss" in r]


def test_language_model_trains_then_generates_and_predicts(tmp_path, capsys):
    text = tmp_path / "fox.txt"
    text.write_text(TEXT)
    out = tmp_path / "lm"
    assert main(["train", "--data", str(text), "--layers", "gru:12", "--seq-len", "8", "--steps", "6",
                 "--target-accuracy", "0", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "(language_model)" in printed and "bits/char" in printed and "did not reach" not in printed
    assert set(_evals(out)[-1]) == {"step", "eval_loss", "eval_accuracy"}
    args = ["generate", str(out), "--prompt", "the ", "--length", "20", "--seed", "3"]
    assert main(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("the ") and len(first.out) == len("the ") + 20 + 1 and first.err == ""
    assert set(first.out[4:-1]) <= set(TEXT[: int(len(TEXT) * 0.9)])  # vocabulary characters only
    assert main(args) == 0 and capsys.readouterr().out == first.out  # same seed, same text
    assert main(["generate", str(out), "--prompt", "Q", "--length", "2", "--temperature", "0"]) == 0
    assert "outside the vocabulary read as <unk>: ['Q']" in capsys.readouterr().err
    assert main(["generate", str(out), "--prompt", "the", "--top-k", "0"]) == 2
    assert "--top-k: expected an int in [1, " in capsys.readouterr().err
    assert main(["predict", str(out), "--text", "the fox", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert len(record["prediction"]) == 7 and len(record["probabilities"][0]) == load_run(out).spec.vocab_size


def test_text_classes_train_and_predict_in_input_order(tmp_path, capsys):
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("a good film\ngreat fun\nwhat a good day\nnice and good\n" * 3)
    neg.write_text("a bad film\nawful\nwhat a bad day\nboring and bad\n" * 3)
    out = tmp_path / "sentiment"
    assert main(["train", "--classes", str(pos), str(neg), "--layers", "lstm:8,lstm:6", "--steps", "6",
                 "--out", str(out), *FAST]) == 0
    assert "(classification)" in capsys.readouterr().out
    assert main(["predict", str(out), "--data", str(neg), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    run = load_run(out)
    inputs = text_inputs(run, [line for line in neg.read_text().splitlines() if line.strip()])
    logits = np.asarray(model_apply(run.params, inputs.xs, run.spec, inputs.lengths))
    assert [r["prediction"] for r in records] == logits.argmax(-1).tolist()
    np.testing.assert_allclose([r["probabilities"] for r in records], jax.nn.softmax(logits), rtol=1e-5)
    assert main(["predict", str(out), "--text", "a good day"]) == 0
    assert capsys.readouterr().out.startswith("0: class ")
    assert main(["gradflow", "--checkpoint", str(out), "--batch", "4", "--png", str(tmp_path / "flow.png")]) == 0
    assert "lstm:8,lstm:6 (step 6)" in capsys.readouterr().out
    with open(neg, "a") as handle:  # the files changed since: resume and eval refuse by name, in one line
        handle.write("a brand new sentence\n")
    assert main(["train", "--out", str(out), "--resume", "--steps", "8", "--no-progress"]) == 2
    assert main(["eval", str(out)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("perceptron1: error: data: its vocab") for e in errors), errors


def test_csv_series_trains_and_forecasts(tmp_path, capsys):
    series = tmp_path / "wave.csv"
    t = np.arange(80)
    series.write_text("value\n" + "\n".join(f"{v:.4f}" for v in np.sin(t / 5)))
    out = tmp_path / "wave"
    assert main(["train", "--data", str(series), "--cell", "gru", "--hidden", "6", "--seq-len", "5", "--steps", "6",
                 "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "(regression)" in printed and "RMSE" in printed and "accuracy" not in printed
    assert set(_evals(out)[-1]) == {"step", "eval_loss"}
    assert main(["eval", str(out)]) == 0 and "RMSE" in capsys.readouterr().out
    assert main(["predict", str(out), "--data", str(series), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(records) == 80 - 5 + 1 and len(records[0]["prediction"]) == 1
    assert main(["train", "--data", str(series), "--target-accuracy", "0.9", "--steps", "1", "--out",
                 str(tmp_path / "x")]) == 2
    assert "target_accuracy: applies to classifiers only" in capsys.readouterr().err


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("name, content, message", [
    ("nan.npz", {"xs": np.full((4, 3, 2), np.nan), "labels": np.zeros(4, int)},
     "array 'xs': expected finite values, got nan at index (0, 0, 0)"),
    ("range.npz", {"xs": np.ones((4, 3, 2)), "labels": np.zeros(4, int), "lengths": np.array([1, 2, 9, 3])},
     "array 'lengths': expected lengths in [1, 3] (the time axis), got 9 at index (2,)"),
    ("ragged.csv", "1,2\n3,4\n5\n", "line 3: expected 2 columns (as the first row), got 1"),
    ("words.csv", "1\n2\nthree\n", "line 3, column 1: expected a number, got 'three'"),
    ("empty.txt", "", "expected text, got an empty file"),
    ("latin1.txt", "caf\xe9 ".encode("latin-1") * 50, "line 1, column 4: cannot decode as UTF-8 (byte 0xe9)"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, capsys, name, content, message):
    path = _write(tmp_path / name, content)
    assert main(["train", "--data", str(path), "--steps", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perceptron1: error: {path}: ") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_data_options_that_do_not_fit(tmp_path, capsys):
    text = _write(tmp_path / "t.txt", TEXT)
    for argv, message in [
        (["--data", str(text), "--task", "copy"], "--task: expected no --task with --data"),
        (["--data", str(tmp_path / "none.txt")], "none.txt: no such file"),
        (["--data", str(text), "--tokens", "bytes"], "argument --tokens: invalid choice: 'bytes'"),
        (["--data", str(text), "--val-fraction", "1.5"], "val_fraction: expected a number in (0, 1), got 1.5"),
        (["--classes", str(text)], "classes: expected at least 2 files"),
        (["--data", str(text), "--seq-len", "500"], "give more text or a shorter seq_len"),
        (["--data", str(text), "--lr", "0"], "lr: expected a positive number, got 0.0"),
        (["--data", str(text), "--cell", "rnn"], "argument --cell: invalid choice: 'rnn'"),
        (["--data", str(text), "--seq-len", "8", "--batch-size", "500"], "batch_size: expected at most the"),
    ]:
        assert main(["train", *argv, "--steps", "1", "--out", str(tmp_path / "run")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err, (argv, err)
    assert main(["predict", str(tmp_path / "no-run"), "--text", "x"]) == 2
    assert main(["generate", str(tmp_path / "no-run"), "--prompt", "x"]) == 2


def test_python_data_resumes_exactly_and_refuses_other_data(tmp_path):
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((40, 5, 2)).astype(np.float32)
    data = from_arrays(xs, targets=xs.sum(1), lengths=rng.integers(1, 6, 40))
    cfg = TrainConfig(cell="gru", hidden=6, batch_size=8, steps=8, eval_every=4, log_every=4, checkpoint_every=4)

    said = []

    def run(out, **kwargs):
        return train(cfg, out, data=data, progress=False, log=said.append, check_grads=False, **kwargs)

    straight = run(tmp_path / "a")
    assert straight.spec.loss == "mse" and straight.chance is None
    assert json.loads((tmp_path / "a" / "config.json").read_text())["task"] is None
    run(tmp_path / "b", resume=False)
    for f in (tmp_path / "b").glob("ckpt_00000008*"):
        f.unlink()
    resumed = run(tmp_path / "b", resume=True)
    assert any(line.startswith("resumed from") and line.endswith("at step 4") for line in said)
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)
    other = from_arrays(xs[..., :1], targets=xs.sum(1))
    with pytest.raises(ValueError, match="data: its input_size differs from the checkpoint's: expected 2, got 1"):
        train(dataclasses.replace(cfg, steps=12), tmp_path / "b", data=other, resume=True, progress=False,
              log=lambda _: None)
