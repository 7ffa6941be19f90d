"""Training that loses nothing: the non-finite guard, clean stops on SIGTERM/SIGINT, SIGKILL at any
moment, unwritable folders, a full disk, and checkpoints of a newer format."""

import dataclasses
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization
from helpers import wait_for_metrics

from perceptron1_jax import checkpoint
from perceptron1_jax.cli import main
from perceptron1_jax.train import (
    SignalStop,
    TrainConfig,
    WriteFailed,
    _datasets,
    _keys,
    _optimizer,
    get_batch,
    init_run_params,
    load_checkpoint,
    make_train_step,
    train,
)

pytestmark = pytest.mark.standard_promotion  # training drives optax

TINY = TrainConfig(task="three_step", cell="gru", hidden=8, batch_size=8, num_train=64, num_eval=32, steps=40,
                   eval_every=10, log_every=1, checkpoint_every=10, target_accuracy=0.0, lr=0.02)
ARGS = ["--task", "three_step", "--cell", "gru", "--hidden", "8", "--batch-size", "8", "--num-train", "64",
        "--num-eval", "32", "--target-accuracy", "0", "--lr", "0.02", "--no-progress", "--no-gradcheck"]


def _run(cfg, out=None, **kwargs):
    kwargs.setdefault("log", lambda _: None)
    return train(cfg, out, progress=False, check_grads=False, **kwargs)


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- non-finite values


def test_a_non_finite_step_is_not_applied():
    cfg = TINY
    _, k_init, k_train, k_eval, k_shuffle = _keys(cfg)
    data, _ = _datasets(cfg, k_train, k_eval)
    params, optimizer = init_run_params(k_init, cfg), _optimizer(cfg)
    opt_state = optimizer.init(params)
    step = make_train_step(cfg, optimizer)
    xs, labels = get_batch(data, k_shuffle, 0, cfg.batch_size)[:2]
    new, new_state, metrics = step(params, opt_state, (xs.at[0, 1, 2].set(jnp.nan), labels))
    assert not bool(metrics["finite"]) and not np.isfinite(float(metrics["loss"]))
    _same_params(new, params)
    _same_params(new_state, opt_state)
    new, _, metrics = step(params, opt_state, (xs, labels))
    assert bool(metrics["finite"]) and not np.array_equal(new["head"]["W"], params["head"]["W"])


def test_a_blown_up_run_stops_with_status_3_and_only_finite_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    status = main(["train", *ARGS, "--lr", "1e38", "--steps", "40", "--max-nonfinite", "3", "--checkpoint-every",
                   "1", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 3
    assert err[-1].startswith("perceptron1: stopped: step ") and "3 consecutive steps with a non-finite" in err[-1]
    stopped_at = int(err[-1].split("step ")[1].split(":")[0])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # strict JSON: no NaN
    assert [r["step"] for r in records if r.get("nonfinite")][-3:] == [stopped_at - 2, stopped_at - 1, stopped_at]
    for path in checkpoint.list_checkpoints(out):
        raw = checkpoint.read_checkpoint(path)
        for leaf in jax.tree.leaves((raw["params"], raw["opt_state"])):
            assert np.isfinite(np.asarray(leaf, np.float64)).all(), path
    assert load_checkpoint(out)["step"] == stopped_at


def test_checkpoints_refuse_non_finite_values(tmp_path):
    params = {"W": np.array([1.0, np.nan])}
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"checkpoint of step 1: refusing to write non-finite values \(in \['params'\]\['W'\]\)"):
        checkpoint.save_checkpoint(tmp_path, step=1, params=params, opt_state={}, key=jax.random.key(0), config={})
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- signals


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_the_step_reached_and_the_resume_is_exact(tmp_path, signum):
    straight = _run(TINY, tmp_path / "straight")

    def log(line):  # the signal arrives while step 13 is being logged
        if line.startswith("step 13:"):
            os.kill(os.getpid(), signum)

    before = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
    outer = signal.signal(signum, before)  # as in a terminal (a nohup'd process ignores SIGINT)
    try:
        with pytest.raises(SignalStop, match=f"stopped by {signal.Signals(signum).name} after step 13") as info:
            _run(TINY, tmp_path / "split", log=log)
        assert signal.getsignal(signum) is before  # the handler the process had is back
    finally:
        signal.signal(signum, outer)
    assert info.value.exit_status == 128 + signum
    assert load_checkpoint(tmp_path / "split")["step"] == 13
    resumed = _run(TINY, tmp_path / "split", resume=True)
    _same_params(resumed.params, straight.params)
    assert _steps(tmp_path / "split") == _steps(tmp_path / "straight")  # each logged step once


def _start(out, *extra):
    env = {**os.environ, "PERCEPTRON1_NO_REEXEC": "1"}
    return subprocess.Popen([sys.executable, "-m", "perceptron1_jax", "train", *ARGS, "--steps", "3000",
                             "--log-every", "1", "--eval-every", "500", "--out", str(out), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_step(out, proc, step, timeout=120):
    wait_for_metrics(out, proc, lambda text: text.count("\n") >= step, timeout, f"step {step}")


def test_sigterm_from_outside_exits_143_and_sigkill_at_any_moment_loses_nothing(tmp_path):
    cfg = dataclasses.replace(TINY, steps=3000, eval_every=500, checkpoint_every=7)
    out = tmp_path / "run"
    # SIGTERM: the command finishes the step, checkpoints it and exits 128 + 15.
    proc = _start(out, "--checkpoint-every", "7")
    _wait_for_step(out, proc, 20)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    message = proc.stderr.read().strip().splitlines()[-1]
    assert message.startswith("perceptron1: stopped: stopped by SIGTERM after step ") and "--resume" in message
    # SIGKILL twice, at moments in the middle of steps and of checkpoint writes (one every 7 steps).
    for target in (60, 150):
        proc = _start(out, "--checkpoint-every", "7", "--resume")
        _wait_for_step(out, proc, target)
        time.sleep(np.random.default_rng(target).uniform(0, 0.05))
        proc.kill()
        proc.wait(timeout=60)
        assert load_checkpoint(out)["step"] >= 7  # the newest complete checkpoint reads cleanly
    resumed = _run(cfg, out, resume=True)
    straight = _run(cfg, tmp_path / "straight")
    _same_params(resumed.params, straight.params)
    assert _steps(out) == _steps(tmp_path / "straight")  # every logged step exactly once, in order
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_write_killed_midway_leaves_a_temporary_that_the_resume_removes(tmp_path):
    out = tmp_path / "run"
    _run(dataclasses.replace(TINY, steps=10), out)
    complete = checkpoint.list_checkpoints(out)[0].read_bytes()
    torn = out / ".ckpt_00000020.msgpack.tmp-99999"  # what a SIGKILL during the write of step 20 leaves
    torn.write_bytes(complete[: len(complete) // 3])
    said = []
    resumed = _run(dataclasses.replace(TINY, steps=20), out, resume=True, log=said.append)
    assert "removed .ckpt_00000020.msgpack.tmp-99999, left by a write that was killed" in said
    assert any(line.startswith("resumed from") and line.endswith("at step 10") for line in said)
    assert resumed.step == 20 and not torn.exists()


# --------------------------------------------------------------------------- folders and disks


@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: tmp / "a-file" / "run", "out: cannot create the folder"),
    (lambda tmp: tmp / "a-file", "out: expected a folder for the run, got the file"),
    (lambda tmp: "/proc/perceptron1-cannot-be-here", "out: cannot create the folder /proc/perceptron1-cannot-be-here"),
])
def test_an_unusable_out_folder_is_refused_before_training(tmp_path, capsys, make_out, message):
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["train", *ARGS, "--steps", "5", "--out", str(make_out(tmp_path))]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("perceptron1: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and "perceptron1 train:" not in captured.out  # nothing started


def test_a_full_disk_keeps_the_previous_checkpoint_and_stops_clearly(tmp_path, monkeypatch, capsys):
    real, calls = checkpoint.write_file, []

    def fill_up(path, blob):
        calls.append(path)
        if len(calls) == 2:  # the second checkpoint: half of it reaches the disk, then ENOSPC
            with open(path, "wb") as handle:
                handle.write(blob[: len(blob) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(path, blob)

    monkeypatch.setattr(checkpoint, "write_file", fill_up)
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "30", "--checkpoint-every", "10", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"perceptron1: error: cannot write a checkpoint in {out}: No space left on device; stopped at "
                   "step 20, the checkpoint of step 10 is intact")
    assert [p.name for p in out.iterdir() if p.name.startswith(("ckpt", ".ckpt"))] == ["ckpt_00000010.msgpack"]
    assert load_checkpoint(out)["step"] == 10
    with pytest.raises(WriteFailed):
        calls.clear()
        _run(dataclasses.replace(TINY, steps=30), tmp_path / "python")


# --------------------------------------------------------------------------- formats and mismatches


def _rewrite_format(path, fmt):
    blob = path.read_bytes()
    raw = serialization.msgpack_restore(blob[len(checkpoint.MAGIC) + 32:])
    raw["format"] = fmt
    payload = serialization.msgpack_serialize(raw)
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).digest() + payload)


def test_a_checkpoint_of_a_newer_format_is_refused_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    _run(dataclasses.replace(TINY, steps=20), out)
    newest = checkpoint.list_checkpoints(out)[0]
    _rewrite_format(newest, "perceptron1_jax/3")
    with pytest.raises(checkpoint.NewerFormatError, match="written by a newer perceptron1_jax"):
        checkpoint.latest_good_checkpoint(out)  # never skipped for the older one
    assert main(["train", "--out", str(out), "--resume", "--steps", "30", "--no-progress"]) == 2
    assert "format 'perceptron1_jax/3'; this version reads 'perceptron1_jax/2'" in capsys.readouterr().err
    assert main(["eval", str(out)]) == 2
    assert "upgrade to read it" in capsys.readouterr().err
    _rewrite_format(newest, "tensorflow/1")
    with pytest.raises(checkpoint.CheckpointError, match="expected format 'perceptron1_jax/2', got 'tensorflow/1'"):
        checkpoint.read_checkpoint(newest)


def test_resuming_with_another_configuration_names_the_field(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--steps", "5", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--cell", "lstm"]) == 2
    assert "cell: expected 'gru' as in the checkpoint being resumed, got 'lstm'" in capsys.readouterr().err
