"""Metrics as data: train(on_metrics=) sees every metrics.jsonl entry as it is written, and
--tensorboard writes them as TensorBoard event files, read back here record by record: every
number as a scalar at its step, a population's members as member_k/..., the config as hparams,
and a resume that purges the steps after its checkpoint as metrics.jsonl is trimmed."""

import dataclasses
import json
import struct

import pytest

import perceptron1_jax as p1
from perceptron1_jax.cli import main
from perceptron1_jax.training.tensorboard import scalars

pytestmark = pytest.mark.standard_promotion  # training drives optax

tensorboardX = pytest.importorskip("tensorboardX")
from tensorboardX.proto.event_pb2 import Event  # noqa: E402
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData  # noqa: E402

CFG = p1.TrainConfig(task="copy", seq_len=4, hidden=4, batch_size=8, num_train=32, num_eval=16, steps=6, log_every=1,
                     eval_every=2, checkpoint_every=2, target_accuracy=0.0)


def read_events(folder):
    """Every event of the event files in ``folder``, in the order written (TFRecord framing:
    length, its CRC, the Event proto, its CRC)."""
    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            events.append(Event.FromString(data[at + 12:at + 12 + length]))
            at += 12 + length + 4
    return events


def shown_scalars(folder) -> dict:
    """``{tag: {step: value}}`` as TensorBoard shows them: a session start with a step (a resumed
    writer's ``purge_step``) hides the earlier events at that step and after."""
    shown = {}
    for event in read_events(folder):
        if event.HasField("session_log") and event.step:
            for steps in shown.values():
                for step in [s for s in steps if s >= event.step]:
                    del steps[step]
        for value in event.summary.value:
            if value.HasField("simple_value"):
                shown.setdefault(value.tag, {})[event.step] = value.simple_value
    return shown


def jsonl_scalars(out) -> dict:
    expected = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for tag, value in scalars(entry).items():
            expected.setdefault(tag, {})[entry["step"]] = value
    return expected


def assert_same(shown, expected):
    assert sorted(shown) == sorted(expected)
    for tag in expected:
        assert sorted(shown[tag]) == sorted(expected[tag]), tag
        for step, value in expected[tag].items():
            assert shown[tag][step] == pytest.approx(value, rel=1e-6), (tag, step)  # stored as float32


def test_on_metrics_sees_each_entry_as_it_is_written(tmp_path):
    seen = []
    state = p1.train(CFG, tmp_path / "run", progress=False, log=lambda _: None, on_metrics=seen.append)
    assert seen == state.history and [e["step"] for e in seen if "loss" in e] == [1, 2, 3, 4, 5, 6]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert seen == lines
    without_folder = []
    p1.train(dataclasses.replace(CFG, steps=2), None, progress=False, log=lambda _: None,
             on_metrics=without_folder.append)
    assert [e["step"] for e in without_folder if "loss" in e] == [1, 2]


def test_event_files_hold_every_number_and_the_hparams_and_a_resume_purges(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--task", "copy", "--seq-len", "4", "--hidden", "4", "--batch-size", "8", "--num-train", "32",
            "--num-eval", "16", "--log-every", "1", "--eval-every", "2", "--checkpoint-every", "2",
            "--target-accuracy", "0", "--no-progress", "--no-gradcheck", "--out", str(out), "--tensorboard"]
    assert main([*args, "--steps", "5"]) == 0
    folder = out / "tensorboard"
    first = shown_scalars(folder)
    assert_same(first, jsonl_scalars(out))
    assert {"loss", "eval_loss", "eval_accuracy", "grad_norm"} <= set(first)
    assert sorted(first["loss"]) == [1, 2, 3, 4, 5]
    plugin = [v for e in read_events(folder) for v in e.summary.value if v.tag == "_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(plugin[0].metadata.plugin_data.content).session_start_info.hparams
    assert hparams["task"].string_value == "copy" and hparams["hidden"].number_value == 4
    # Killed after step 5 with its last checkpoint at step 4: the resume trims metrics.jsonl and
    # purges step 5 from TensorBoard, then logs 5 and 6 again.
    (out / "ckpt_00000005.msgpack").unlink()
    assert main(["train", "--out", str(out), "--resume", "--steps", "6", "--no-progress", "--no-gradcheck"]) == 0
    capsys.readouterr()
    resumed = shown_scalars(folder)
    assert_same(resumed, jsonl_scalars(out))
    assert sorted(resumed["loss"]) == [1, 2, 3, 4, 5, 6] and resumed["loss"][4] == first["loss"][4]


def test_a_population_writes_each_member_under_its_own_name(tmp_path):
    cfg = dataclasses.replace(CFG, steps=2, tensorboard=True)
    p1.train(cfg, tmp_path / "pop", progress=False, log=lambda _: None, population=p1.Population(seeds=2))
    shown = shown_scalars(tmp_path / "pop" / "tensorboard")
    assert {"member_0/loss", "member_1/loss", "member_0/eval_loss"} <= set(shown)
    assert_same(shown, jsonl_scalars(tmp_path / "pop"))


def test_without_tensorboardx_the_option_is_refused_by_name(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorboardX" else real(name, *a))
    assert main(["train", "--task", "copy", "--tensorboard", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("perceptron1: error: tensorboard: expected tensorboardX installed to write event files (pip install "
                   "'perceptron1_jax[tensorboard]'), got it missing")
