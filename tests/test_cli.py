"""The perceptron1 command: one-line errors with exit status 2, a complete --help, and the
train / eval / gradcheck commands end to end on tiny runs."""

import dataclasses
import json
import subprocess
import sys

import pytest

from perceptron1_jax import checkpoint
from perceptron1_jax.cli import main
from perceptron1_jax.train import TrainConfig

pytestmark = pytest.mark.standard_promotion  # train drives optax

TINY = ["--task", "three_step", "--cell", "gru", "--hidden", "8", "--batch-size", "8", "--num-train", "64",
        "--num-eval", "32", "--eval-every", "5", "--log-every", "5", "--checkpoint-every", "5",
        "--target-accuracy", "0", "--no-progress"]


@pytest.mark.parametrize("argv, fragment", [
    (["train", "--task", "mnist"], "argument --task: invalid choice: 'mnist'"),
    (["train", "--cell", "transformer"], "argument --cell: invalid choice: 'transformer'"),
    (["train", "--hidden", "-4"], "hidden: expected a positive int, got -4"),
    (["train", "--hidden", "four"], "argument --hidden: invalid int value: 'four'"),
    (["train", "--lr", "0"], "lr: expected a positive number, got 0.0"),
    (["train", "--lr=-1e-3"], "lr: expected a positive number, got -0.001"),
    (["train", "--steps", "0"], "steps: expected a positive int, got 0"),
    (["train", "--config", "/no/such/file.toml"], "--config: cannot read /no/such/file.toml"),
    (["train", "--bogus"], "unrecognized arguments: --bogus"),
    (["eval", "/no/such/run"], "checkpoint"),
    (["gradcheck", "--hidden", "0"], "--hidden: expected a positive int, got 0"),
    ([], "the following arguments are required: command"),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, fragment):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perceptron1: error: ") and fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_toml_files(tmp_path, capsys):
    broken = tmp_path / "broken.toml"
    broken.write_text("hidden = [")
    assert main(["train", "--config", str(broken)]) == 2
    assert "is not valid TOML" in capsys.readouterr().err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("hiden = 3\n")
    assert main(["train", "--config", str(unknown)]) == 2
    assert "config: unknown keys ['hiden']" in capsys.readouterr().err
    wrong_type = tmp_path / "wrong.toml"
    wrong_type.write_text('hidden = "many"\n')
    assert main(["train", "--config", str(wrong_type)]) == 2
    assert "hidden: expected a positive int, got str 'many'" in capsys.readouterr().err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
    for extra in ("--config", "--out", "--resume", "three_step", "adding", "copy", "parity", "chars"):
        assert extra in text
    flat = " ".join(text.split())
    for status in ("Exit status: 0 done", "1 a failed write", "2 bad usage", "3 stopped after --max-nonfinite",
                   "143 (SIGTERM) or 130 (SIGINT"):
        assert status in flat


def test_train_resume_eval_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    config = tmp_path / "run.toml"
    config.write_text('optimizer = "rmsprop"\nlr = 0.01\n')
    assert main(["train", *TINY, "--steps", "10", "--out", str(out), "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "explicit BPTT vs jax.grad on the first batch: max relative difference" in printed
    assert "rmsprop lr 0.01" in printed
    assert (out / "metrics.png").stat().st_size > 0
    assert (out / "ckpt_00000010.msgpack").exists()
    # --resume picks the run's config from its checkpoint; --steps is the run's total.
    assert main(["train", "--out", str(out), "--resume", "--steps", "20", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "resumed from" in printed and "rmsprop" in printed
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 20
    assert main(["eval", str(out)]) == 0
    assert "step 20, task three_step, model gru:8 -> cross_entropy head (4)" in capsys.readouterr().out
    assert main(["train", "--out", str(out), "--resume", "--hidden", "9"]) == 2
    assert "hidden: expected 8 as in the checkpoint being resumed, got 9" in capsys.readouterr().err


def test_run_without_matplotlib_says_how_to_get_the_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["train", *TINY, "--steps", "5", "--out", str(tmp_path)]) == 0
    assert "pip install 'perceptron1_jax[plot]'" in capsys.readouterr().out
    assert not (tmp_path / "metrics.png").exists()


def test_gradcheck_passes(capsys):
    assert main(["gradcheck", "--seq-len", "5", "--hidden", "3", "--many-to-many", "--lengths"]) == 0
    text = capsys.readouterr().out
    assert "PASS" in text and text.count("cell/W_h") == 3
    import jax

    assert not jax.config.read("jax_enable_x64")  # the command's float64 does not leak


def test_gradflow_table_and_plot(tmp_path, capsys):
    png = tmp_path / "flow.png"
    assert main(["gradflow", "--cell", "elman", "--seq-len", "30", "--hidden", "8", "--batch", "4",
                 "--spectral-radius", "0.5", "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "elman at init, spectral radius 0.5" in text and "rate" in text
    assert png.stat().st_size > 0
    assert main(["gradflow", "--seq-len", "0"]) == 2


def test_gradflow_metric_in_training(tmp_path):
    assert main(["train", *TINY, "--steps", "4", "--gradflow-every", "2", "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    flows = [r for r in records if "gradflow_dh_norm" in r]
    assert [r["step"] for r in flows] == [2, 4]
    assert len(flows[0]["gradflow_dh_norm"]) == 3 and len(flows[0]["gradflow_recurrent"]) == 3


def test_default_train_reaches_its_target(tmp_path):
    # The README's main job, as a user runs it: `perceptron1 train` with no options.
    result = subprocess.run([sys.executable, "-m", "perceptron1_jax", "train"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "reached the target 0.99" in result.stdout, result.stdout


def test_layered_bidirectional_token_model_with_dropout_trains_and_evaluates(tmp_path, capsys):
    out = tmp_path / "chars"
    args = ["train", "--task", "chars", "--layers", "lstm:8,gru:6", "--bidirectional", "--dropout", "0.2",
            "--embed-size", "5", "--seq-len", "6", "--steps", "6", "--eval-every", "3", "--batch-size", "8",
            "--num-train", "32", "--num-eval", "16", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "model embed 28x5 -> bi-lstm:8 -> bi-gru:6 -> cross_entropy head (28), dropout 0.2" in printed
    assert "explicit BPTT vs jax.grad on the first batch: max relative difference" in printed
    loaded = checkpoint.read_checkpoint(checkpoint.list_checkpoints(out)[0])
    assert loaded["spec"]["layers"] == [{"cell": "lstm", "hidden_size": 8, "bidirectional": True},
                                        {"cell": "gru", "hidden_size": 6, "bidirectional": True}]
    assert loaded["spec"]["vocab_size"] == 28 and loaded["spec"]["dropout"] == 0.2
    assert main(["eval", str(out)]) == 0
    assert "step 6, task chars, model embed 28x5 -> bi-lstm:8 -> bi-gru:6" in capsys.readouterr().out


@pytest.mark.parametrize("option, message", [
    (["--layers", "lstm:8,gru"], "layers: expected cell:size per layer"),
    (["--layers", "cnn:8"], "cell: expected one of"),
    (["--dropout", "1"], "dropout: expected a rate in [0, 1), got 1.0"),
    (["--embed-size", "4"], "embed_size: expected a token task (chars), got the float-input task 'three_step'"),
    (["--layers", "gru:4", "--hidden", "8"], "--hidden: expected no --cell/--hidden with --layers"),
])
def test_bad_model_options_exit_2_with_one_line(option, message, capsys):
    assert main(["train", *option, "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err
