"""Same command, same result, from the command line as a user runs it: each command a fresh
``python -m perceptron1_jax`` process (JAX's 64-bit mode off, the default devices: one host device
per core), no test fixture. The dtype asked for is the dtype trained; a run depends only on its
config, data and device count; one run per folder; signals at any moment of start-up; a
population's ensemble and best steps; a test split scored once; predictions line for line."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from perceptron1_jax import checkpoint, load_checkpoint
from perceptron1_jax.bench import ALLOCATOR_ENV
from perceptron1_jax.parallel import host_device_env
from perceptron1_jax.prediction import predict_examples
from perceptron1_jax.runs import load_run

TINY = ["--task", "three_step", "--cell", "gru", "--hidden", "4", "--batch-size", "8", "--num-train", "64",
        "--num-eval", "16", "--target-accuracy", "0", "--no-progress"]


def _env(reexec=False):
    """The environment of a user's shell, without 64-bit mode. Unless ``reexec``, it already holds
    what the command re-executes itself under (the allocator settings, one host device per core),
    so the command runs as it would after that re-execution, without importing JAX twice. The
    suite's compilation cache stays: it changes no result, only compile time."""
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "PERCEPTRON1_NO_REEXEC")}
    return env if reexec else host_device_env({**env, **ALLOCATOR_ENV})


def cli(*args, cwd=None, check=True):
    """``perceptron1 ARGS`` in a fresh process; the completed process (status 0 asserted by ``check``)."""
    done = subprocess.run([sys.executable, "-m", "perceptron1_jax", *map(str, args)], capture_output=True, text=True,
                          env=_env(), cwd=cwd, timeout=600)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def _raw(out):
    return checkpoint.read_checkpoint(checkpoint.list_checkpoints(out)[0])


def _leaves(raw):
    return jax.tree.leaves((raw["params"], raw["opt_state"]))


def _metrics(out):
    """``metrics.jsonl`` without its one timing field (``steps_per_sec``, the machine's speed)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records]


def _rewrite(path, to, change):
    """Copy the checkpoint ``path`` to ``to`` with ``change(payload)`` applied to its JSON parts."""
    import hashlib

    from flax import serialization

    blob = path.read_bytes()
    raw = serialization.msgpack_restore(blob[len(checkpoint.MAGIC) + 32:])
    population = json.loads(raw["population"])
    change({"population": population})
    raw["population"] = json.dumps(population)
    payload = serialization.msgpack_serialize(raw)
    to.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).digest() + payload)


def _same_run(a, b):
    raw_a, raw_b = _raw(a), _raw(b)
    assert raw_a["step"] == raw_b["step"]
    for x, y in zip(_leaves(raw_a), _leaves(raw_b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert _metrics(a) == _metrics(b)


# --------------------------------------------------------------------------- 1. the dtype asked for


def test_float64_from_the_command_line_trains_in_float64(tmp_path):
    done = cli("train", *TINY, "--dtype", "float64", "--steps", "4", "--eval-every", "4", "--out", tmp_path / "r64")
    assert "UserWarning" not in done.stderr and "(float64)" in done.stdout  # the gradient check's line
    assert json.loads((tmp_path / "r64" / "config.json").read_text())["dtype"] == "float64"
    assert {np.asarray(a).dtype for a in _leaves(_raw(tmp_path / "r64")) if np.asarray(a).dtype.kind == "f"} == \
        {np.dtype(np.float64)}
    evaluated = cli("eval", tmp_path / "r64")  # read back in float64, not truncated
    assert "UserWarning" not in evaluated.stderr and "step 4" in evaluated.stdout


def test_float64_from_python_without_x64_is_refused_in_one_line(tmp_path):
    code = ("import perceptron1_jax as p1\n"
            "try:\n"
            "    p1.train(p1.TrainConfig(dtype='float64', steps=1), None, progress=False)\n"
            "except ValueError as err:\n"
            "    print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=300)
    assert done.stdout.strip() == ("dtype: expected JAX's 64-bit mode on for float64, got it off in this process: "
                                   "call jax.config.update('jax_enable_x64', True) before building anything (or set "
                                   "JAX_ENABLE_X64=1)")
    assert "UserWarning" not in done.stderr


def test_a_population_member_equals_its_single_run_in_float64_through_the_command_line(tmp_path):
    common = [*TINY, "--dtype", "float64", "--steps", "12", "--eval-every", "6", "--log-every", "6", "--no-gradcheck"]
    cli("train", *common, "--seeds", "2", "--lr", "0.02,0.05", "--out", tmp_path / "pop")
    members = json.loads((tmp_path / "pop" / "population.json").read_text())["members"]
    stacked = _raw(tmp_path / "pop")
    assert len(members) == 4
    for k in (1, 2):  # (seed 1, lr 0.02) and (seed 0, lr 0.05): each seed and each rate
        member = members[k]
        out = tmp_path / f"single{k}"
        cli("train", *common, "--seed", member["seed"], "--lr", member["lr"], "--out", out)
        single = _raw(out)
        for a, b in zip(jax.tree.leaves(stacked["params"]), jax.tree.leaves(single["params"]), strict=True):
            assert np.asarray(b).dtype == np.float64
            np.testing.assert_allclose(np.asarray(a)[k], np.asarray(b), rtol=1e-9, atol=0)


# --------------------------------------------------------------------------- 2. no device choice by timing


def test_the_same_command_twice_gives_the_same_run_above_500_steps_and_resumed(tmp_path):
    long = [*TINY, "--eval-every", "250", "--log-every", "125", "--checkpoint-every", "250", "--no-gradcheck"]
    cli("train", *long, "--steps", "501", "--out", tmp_path / "a")
    cli("train", *long, "--steps", "501", "--out", tmp_path / "b")
    _same_run(tmp_path / "a", tmp_path / "b")
    recorded = json.loads((tmp_path / "a" / "devices.json").read_text())
    assert recorded["devices"] == recorded["available"] and recorded["reason"].startswith("size rule: ")
    cli("train", *long, "--steps", "250", "--out", tmp_path / "c")
    cli("train", *long, "--steps", "501", "--out", tmp_path / "c", "--resume")
    _same_run(tmp_path / "a", tmp_path / "c")


def test_the_same_population_command_twice_gives_the_same_run(tmp_path):
    args = [*TINY, "--seeds", "2", "--lr", "0.02,0.05", "--steps", "10", "--eval-every", "5", "--log-every", "5",
            "--no-gradcheck"]
    cli("train", *args, "--out", tmp_path / "a")
    cli("train", *args, "--out", tmp_path / "b")
    _same_run(tmp_path / "a", tmp_path / "b")
    assert json.loads((tmp_path / "a" / "summary.json").read_text()) == \
        json.loads((tmp_path / "b" / "summary.json").read_text())


# --------------------------------------------------------------------------- 3. one run per folder


def test_one_run_per_folder(tmp_path):
    out = tmp_path / "x"
    first = [*TINY, "--steps", "6", "--eval-every", "3", "--checkpoint-every", "3", "--no-gradcheck"]
    cli("train", *first, "--out", out)
    before = _raw(out)
    other = ["--task", "copy", "--seq-len", "5", "--cell", "gru", "--hidden", "4", "--steps", "4", "--eval-every", "2",
             "--no-gradcheck", "--no-progress"]
    refused = cli("train", *other, "--out", out, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"perceptron1: error: out: expected a folder without a run, got {out} holding "
                                     "one (") and "--resume" in refused.stderr and "--overwrite" in refused.stderr
    assert _raw(out)["step"] == before["step"] and _metrics(out)[-1]["step"] == 6  # untouched
    cli("train", *other, "--out", out, "--overwrite")
    assert [p.name for p in checkpoint.list_checkpoints(out)] == ["ckpt_00000004.msgpack"]
    assert {np.asarray(a).dtype for a in _leaves(_raw(out)) if np.asarray(a).dtype.kind == "f"} == \
        {np.dtype(np.float32)}  # float32 stays float32
    assert {r["step"] for r in _metrics(out)} <= {2, 4} and json.loads((out / "config.json").read_text())["task"] == \
        "copy"
    assert "task copy" in cli("eval", out).stdout  # the new run, only it
    # --resume needs a run; a folder holding only config.json starts that config from step 0, said so.
    missing = cli("train", "--resume", "--out", tmp_path / "typo", check=False)
    assert missing.returncode == 2 and "--resume: expected a run folder holding a checkpoint or config.json" in \
        missing.stderr and not (tmp_path / "typo").exists()
    for path in checkpoint.list_checkpoints(out):
        path.unlink()
    restarted = cli("train", "--resume", "--out", out, "--no-progress")
    assert f"no checkpoint in {out}: starting its config.json from step 0" in restarted.stdout
    assert json.loads((out / "config.json").read_text())["task"] == "copy" and _raw(out)["step"] == 4
    # The default folder names the model as it is.
    done = cli("train", "--task", "copy", "--seq-len", "5", "--layers", "gru:4", "--steps", "2", "--eval-every", "2",
               "--no-gradcheck", "--no-progress", cwd=tmp_path)
    assert "run folder runs/copy-gru4" in done.stdout and (tmp_path / "runs" / "copy-gru4" / "config.json").exists()


# --------------------------------------------------------------------------- 5. signals at any moment


def _start(out, *args):
    return subprocess.Popen([sys.executable, "-m", "perceptron1_jax", "train", "--task", "copy", "--seq-len", "20",
                             "--cell", "gru", "--hidden", "8", "--steps", "3000", "--no-progress", "--out", str(out),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=_env(reexec=True))  # the command's own re-execution too


@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0.5), (signal.SIGTERM, 0.0)])
def test_a_signal_during_start_up_stops_cleanly_and_the_folder_resumes(tmp_path, signum, delay):
    out = tmp_path / "run"
    proc = _start(out)
    deadline = time.monotonic() + 120
    while not (out / "config.json").exists():  # start-up: the gradient check compiles after this
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signum)
    assert proc.wait(timeout=120) == 128 + signum
    err = proc.stderr.read().strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"perceptron1: stopped: stopped by {signal.Signals(signum).name} "
                                               "after step ") and "--resume" in err[0], err
    stopped = checkpoint.read_checkpoint(checkpoint.list_checkpoints(out)[0])["step"]
    done = cli("train", "--resume", "--out", out, "--steps", stopped + 2, "--no-progress")
    assert f"at step {stopped}" in done.stdout and _raw(out)["step"] == stopped + 2


# --------------------------------------------------------------------------- 6. populations, held-out scores, predict


def test_a_population_ensemble_best_steps_and_one_test_score(tmp_path):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(48, 5, 2)).astype(np.float32)
    labels = (xs.mean(axis=(1, 2)) > 0).astype(np.int32)
    np.savez(tmp_path / "train.npz", xs=xs, labels=labels)
    np.savez(tmp_path / "test.npz", xs=xs[:16] + 0.1, labels=labels[:16])
    out = tmp_path / "pop"
    # lr 1e38 blows member 2 and 3 up: frozen as non-finite after 2 steps.
    cli("train", "--data", tmp_path / "train.npz", "--test", tmp_path / "test.npz", "--cell", "gru", "--hidden", "4",
        "--batch-size", "8", "--seeds", "2", "--lr", "0.05,1e38", "--max-nonfinite", "2", "--steps", "12",
        "--eval-every", "3", "--log-every", "3", "--checkpoint-every", "6", "--no-gradcheck", "--no-progress",
        "--out", out)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    accuracies = [v for r in records for k, v in r.items() if k.endswith("accuracy") and v is not None]
    assert accuracies and max(accuracies) <= 1.0
    best = out / checkpoint.BEST
    status = checkpoint.read_checkpoint(best)["population"]["status"]
    for k in (0, 1):  # each member's own best step, stored and reported
        evals = [(r["eval_loss"], r["step"]) for r in records if r.get("member") == k and "eval_loss" in r]
        assert status[k]["best_step"] == min(evals)[1] == load_checkpoint(best, member=k)["step"]
    shown = cli("eval", best, "--member", 1, "--data", tmp_path / "test.npz").stdout
    assert f"step {status[1]['best_step']}," in shown
    tests = [r for r in records if "test_loss" in r]
    assert sorted(r["member"] for r in tests) == [0, 1, 2, 3]
    np.savez(tmp_path / "new.npz", xs=xs[:5])
    several = cli("predict", out, "--data", tmp_path / "new.npz", "--ensemble", check=False)
    assert several.returncode == 2 and "--setting: expected one of 0 to 1" in several.stderr
    frozen = cli("predict", out, "--data", tmp_path / "new.npz", "--ensemble", "--setting", "1", check=False)
    assert frozen.returncode == 2 and "--setting: every member of setting 1 ([2, 3]) was frozen" in frozen.stderr
    kept = cli("predict", out, "--data", tmp_path / "new.npz", "--ensemble", "--setting", "0", "--json")
    each = [predict_examples(load_run(out, member=k), xs[:5]).probabilities for k in (0, 1)]
    records = [json.loads(line) for line in kept.stdout.splitlines()]
    np.testing.assert_allclose([r["probabilities"] for r in records], np.mean(each, axis=0), rtol=1e-6)
    assert [r["index"] for r in records] == list(range(5)) and kept.stderr == ""
    # A member of setting 0 marked frozen (as a blow-up would): left out of the mean, and named.
    edited = tmp_path / "edited.msgpack"
    _rewrite(checkpoint.list_checkpoints(out)[0], edited, lambda raw: raw["population"]["status"][1].update(
        stopped="nonfinite"))
    alone = cli("predict", edited, "--data", tmp_path / "new.npz", "--ensemble", "--setting", "0", "--json")
    assert alone.stderr.strip() == "perceptron1: warning: --ensemble leaves out member 1, frozen for non-finite values"
    np.testing.assert_allclose([json.loads(line)["probabilities"] for line in alone.stdout.splitlines()], each[0],
                               rtol=1e-6)
    # Resuming the finished run scores nothing again.
    cli("train", "--resume", "--out", out, "--no-progress")
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in again if "test_loss" in r]) == 4


def test_a_finished_test_run_resumed_is_not_scored_again_and_says_why(tmp_path):
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(40, 5, 2)).astype(np.float32)
    labels = (xs.mean(axis=(1, 2)) > 0).astype(np.int32)
    np.savez(tmp_path / "train.npz", xs=xs, labels=labels)
    np.savez(tmp_path / "test.npz", xs=xs[:12], labels=labels[:12])
    args = ["--data", tmp_path / "train.npz", "--test", tmp_path / "test.npz", "--cell", "gru", "--hidden", "4",
            "--batch-size", "8", "--steps", "6", "--eval-every", "3", "--no-gradcheck", "--no-progress", "--out",
            tmp_path / "run"]
    first = cli("train", *args)
    assert "(the best validation loss)" in first.stdout
    again = cli("train", *args, "--resume")
    assert "(the best validation loss)" in again.stdout and "no validation split" not in again.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "test_loss" in r]) == 1
    assert all(r.get("eval_accuracy", 0) <= 1 for r in records)


def test_predict_on_text_keeps_one_output_per_line(tmp_path):
    text = tmp_path / "lines.txt"
    text.write_text("a good film\nbad\na dull day\nbad film\n" * 4)
    other = tmp_path / "other.txt"
    other.write_text("what a good day\nawful\nso bad\nnice\n" * 4)
    out = tmp_path / "cls"
    cli("train", "--classes", text, other, "--layers", "gru:4", "--batch-size", "4", "--steps", "2", "--eval-every",
        "2", "--no-gradcheck", "--no-progress", "--out", out)
    inputs = tmp_path / "new.txt"
    inputs.write_text("a good film\nbad\n")
    done = cli("predict", out, "--data", inputs, "--json")
    assert [json.loads(line)["index"] for line in done.stdout.splitlines()] == [0, 1]
    inputs.write_text("a good film\n\nbad\n")
    blank = cli("predict", out, "--data", inputs, check=False)
    assert blank.returncode == 2 and blank.stderr.strip() == (
        f"perceptron1: error: {inputs}: line 2: expected an example (at least one word token), got a blank line")
