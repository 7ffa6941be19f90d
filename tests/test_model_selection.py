"""Honest model selection with a test split (``--test``): evaluations on a validation split carved
(stratified) from the training data, the best checkpoint kept and scored once on the test split at
the end, never before; ``--val-fraction 0``; populations (each member's best, the ensemble);
``eval RUN --data PATH [--step N]``; the command line's final line."""

import dataclasses
import json
import os
import signal

import jax
import numpy as np
import pytest

from perceptron1_jax import checkpoint
from perceptron1_jax.cli import main
from perceptron1_jax.data import load_data
from perceptron1_jax.training import Population, SignalStop, TrainConfig, evaluate_split, load_checkpoint, train
from perceptron1_jax.training import session as session_module

pytestmark = pytest.mark.standard_promotion  # trains with optax

CFG = TrainConfig(task=None, cell="gru", hidden=8, batch_size=8, steps=40, eval_every=5, log_every=5,
                  checkpoint_every=20, target_accuracy=0.0, lr=0.3, val_fraction=0.25)


def _arrays(seed, n, flip=False):
    """A two-class problem: the sign of the mean of 6 steps of 2 features decides the class."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, 6, 2)).astype(np.float32)
    labels = (xs.mean(axis=(1, 2)) > 0).astype(np.int32)
    return xs, (1 - labels) if flip else labels


def _files(tmp_path):
    xs, labels = _arrays(0, 64)
    np.savez(tmp_path / "train.npz", xs=xs, labels=labels)
    xs, labels = _arrays(1, 40)
    np.savez(tmp_path / "test.npz", xs=xs, labels=labels)
    np.savez(tmp_path / "poisoned.npz", xs=xs, labels=1 - labels)  # every test label wrong
    return tmp_path / "train.npz", tmp_path / "test.npz", tmp_path / "poisoned.npz"


def _run(cfg, out=None, **kwargs):
    return train(cfg, out, progress=False, log=lambda _: None, check_grads=False, **kwargs)


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_the_validation_split_is_stratified_and_the_test_file_read_whole(tmp_path):
    train_path, test_path, _ = _files(tmp_path)
    data = load_data(str(train_path), val_fraction=0.25, seed=3, test=str(test_path))
    labels = np.load(train_path)["labels"]
    for c in (0, 1):  # each class gives round(n_c / 4) validation examples
        assert int((np.asarray(data.eval.labels) == c).sum()) == round((labels == c).sum() * 0.25)
    assert data.train.xs.shape[0] + data.eval.xs.shape[0] == 64 and data.test.xs.shape[0] == 40
    np.testing.assert_array_equal(data.test.xs, np.load(test_path)["xs"])
    none = load_data(str(train_path), val_fraction=0, test=str(test_path))
    assert none.eval.xs.shape[0] == 0 and none.train.xs.shape[0] == 64
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\), got 0 \(0 is for a run "
                                         r"with a test split\)"):
        load_data(str(train_path), val_fraction=0)


def test_the_test_split_is_scored_once_at_the_end_by_the_best_checkpoint(tmp_path, monkeypatch):
    train_path, test_path, poisoned_path = _files(tmp_path)
    scored = []
    original = session_module.evaluate_split

    def spy(params, split, spec, *args, **kwargs):
        scored.append(split.xs.shape[0])
        return original(params, split, spec, *args, **kwargs)

    monkeypatch.setattr(session_module, "evaluate_split", spy)
    cfg = dataclasses.replace(CFG, data=(str(train_path),), test=(str(test_path),))
    clean = _run(cfg, tmp_path / "clean")
    assert scored.count(40) == 1 and scored[-1] == 40 and scored[:-1] == [16] * 8  # 8 validations, then the test
    poisoned = _run(dataclasses.replace(cfg, test=(str(poisoned_path),)), tmp_path / "poisoned")
    # Training never saw the test split: the poisoned labels change nothing before the final entry.
    a, b = _records(tmp_path / "clean"), _records(tmp_path / "poisoned")
    strip = [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in a[:-1]]
    assert strip == [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in b[:-1]]
    for x, y in zip(jax.tree.leaves(clean.params), jax.tree.leaves(poisoned.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert "test_loss" in a[-1] and all("test_loss" not in r for r in a[:-1])
    np.testing.assert_allclose(a[-1]["test_accuracy"] + b[-1]["test_accuracy"], 1.0, rtol=1e-6)  # two classes
    # What was tested is the checkpoint of the lowest validation loss (not the last step).
    evals = [r for r in a if "eval_loss" in r]
    best = min(evals, key=lambda r: r["eval_loss"])
    assert a[-1]["test_checkpoint_step"] == best["step"] and clean.test == a[-1]
    saved = load_checkpoint(tmp_path / "clean" / checkpoint.BEST)
    assert saved["step"] == best["step"]
    data = load_data(str(train_path), val_fraction=0.25, test=str(test_path))
    again = evaluate_split(saved["params"], data.test, saved["spec"])
    np.testing.assert_allclose(a[-1]["test_loss"], again["loss"], rtol=1e-6)
    assert best["step"] < 40, "lr 0.3 should overshoot so that the best is not the last step"


def test_with_no_validation_split_the_last_step_is_tested_and_nothing_is_evaluated(tmp_path):
    train_path, test_path, _ = _files(tmp_path)
    cfg = dataclasses.replace(CFG, data=(str(train_path),), test=(str(test_path),), val_fraction=0.0, steps=10)
    state = _run(cfg, tmp_path / "run")
    records = _records(tmp_path / "run")
    assert not [r for r in records if "eval_loss" in r]
    assert state.test["test_checkpoint_step"] == 10 and not (tmp_path / "run" / checkpoint.BEST).exists()
    with pytest.raises(ValueError, match=r"val_fraction: expected a number in \(0, 1\), got 0.0"):
        _run(dataclasses.replace(cfg, test=None))
    with pytest.raises(ValueError, match="test: expected a run on your data"):
        _run(dataclasses.replace(CFG, task="three_step", test=(str(test_path),)))


def test_a_resumed_run_tests_the_best_checkpoint_of_the_whole_run(tmp_path):
    train_path, test_path, _ = _files(tmp_path)
    cfg = dataclasses.replace(CFG, data=(str(train_path),), test=(str(test_path),))
    whole = _run(cfg, tmp_path / "whole")

    def stop_at_20(line):  # a SIGTERM while step 20 is logged: checkpointed there, the test split not scored
        if line.startswith("step 20:"):
            os.kill(os.getpid(), signal.SIGTERM)

    outer = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # as in a shell (a worker may ignore it)
    try:
        with pytest.raises(SignalStop):
            train(cfg, tmp_path / "split", progress=False, log=stop_at_20, check_grads=False)
    finally:
        signal.signal(signal.SIGTERM, outer)
    assert not [r for r in _records(tmp_path / "split") if "test_loss" in r]
    resumed = _run(cfg, tmp_path / "split", resume=True)
    assert resumed.test["test_checkpoint_step"] == whole.test["test_checkpoint_step"]
    np.testing.assert_allclose(resumed.test["test_loss"], whole.test["test_loss"], rtol=1e-6)


def test_a_finished_test_run_is_never_scored_twice(tmp_path):
    train_path, test_path, _ = _files(tmp_path)
    cfg = dataclasses.replace(CFG, data=(str(train_path),), test=(str(test_path),), steps=10)
    first = _run(cfg, tmp_path / "run")
    said = []
    again = train(cfg, tmp_path / "run", resume=True, progress=False, log=said.append, check_grads=False)
    assert again.test == first.test
    assert [r["step"] for r in _records(tmp_path / "run") if "test_loss" in r] == [10]  # one entry
    assert any(line.startswith("test split already scored by the checkpoint of step") for line in said)
    with pytest.raises(ValueError, match=r"steps: expected 10 \(the run's test split was scored at its end, step 10"):
        _run(dataclasses.replace(cfg, steps=20), tmp_path / "run", resume=True)


def test_a_test_file_that_does_not_fit_the_training_data_is_refused_before_training(tmp_path):
    train_path, _, _ = _files(tmp_path)
    np.savez(tmp_path / "wide.npz", xs=np.zeros((4, 6, 3), np.float32), labels=np.zeros(4, np.int32))
    np.savez(tmp_path / "classes.npz", xs=np.zeros((4, 6, 2), np.float32), labels=np.asarray([0, 1, 2, 0]))
    np.savez(tmp_path / "targets.npz", xs=np.zeros((4, 6, 2), np.float32), targets=np.zeros((4, 1), np.float32))
    for name, message in [("wide.npz", "expected 2 features per step"),
                          ("classes.npz", r"expected class ids in \[0, 2\), got 2 at index \(2,\)"),
                          ("targets.npz", "expected classification data"),
                          ("missing.npz", "missing.npz: no such file")]:
        with pytest.raises(ValueError, match=message):
            _run(dataclasses.replace(CFG, data=(str(train_path),), test=(str(tmp_path / name),)), tmp_path / "x")
        assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_a_population_tests_each_members_best_checkpoint_and_the_ensemble(tmp_path):
    train_path, test_path, _ = _files(tmp_path)
    cfg = dataclasses.replace(CFG, data=(str(train_path),), test=(str(test_path),))
    state = _run(cfg, tmp_path / "pop", population=Population(seeds=2))
    records = _records(tmp_path / "pop")
    for k in range(2):
        single = _run(dataclasses.replace(cfg, seed=k))
        entry = next(r for r in records if r.get("member") == k and "test_loss" in r)
        assert entry["test_checkpoint_step"] == single.test["test_checkpoint_step"]
        np.testing.assert_allclose(entry["test_loss"], single.test["test_loss"], rtol=1e-4)
    setting = state.summary["settings"][0]
    assert setting["test_accuracy"]["n"] == 2 and 0 <= setting["ensemble_test_accuracy"] <= 1
    best = load_checkpoint(tmp_path / "pop" / checkpoint.BEST, member=1)
    assert best["step"] >= 5


def test_the_command_line_says_the_test_score_and_eval_reads_any_file(tmp_path, capsys):
    train_path, test_path, _ = _files(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--data", str(train_path), "--test", str(test_path), "--cell", "gru", "--hidden", "8",
                 "--batch-size", "8", "--steps", "20", "--eval-every", "5", "--lr", "0.3", "--val-fraction", "0.25",
                 "--no-progress", "--no-gradcheck", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "16 validation / 40 test examples" in lines[0]
    final = next(line for line in lines if line.startswith("final: test split"))
    record = _records(out)[-1]
    assert f"checkpoint of step {record['test_checkpoint_step']} (the best validation loss)" in final
    assert f"test accuracy {record['test_accuracy']:.4f}" in final
    assert main(["eval", str(out), "--data", str(test_path)]) == 0
    said = capsys.readouterr().out
    assert said.startswith(str(out / checkpoint.BEST)) and f"eval loss {record['test_loss']:.4f}" in said
    assert main(["eval", str(out), "--data", str(test_path), "--step", "20"]) == 0
    assert capsys.readouterr().out.startswith(str(checkpoint.checkpoint_path(out, 20)))
    assert main(["eval", str(out), "--step", "3"]) == 2
    assert "--step: expected a step with a checkpoint" in capsys.readouterr().err
    assert main(["train", "--task", "three_step", "--test", str(test_path), "--out", str(tmp_path / "t")]) == 2
    assert "test: expected a run on your data" in capsys.readouterr().err
