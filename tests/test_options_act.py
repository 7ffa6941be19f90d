"""Every option either acts or is refused: a walk over every :class:`TrainConfig` field, each changed
from a small base run, showing where the change acts (the model, the trained parameters, the
metrics, the run folder's files, a stop) and, where it cannot act, that it is refused by name;
every ``train`` option of the command line is covered, and TOML values are checked for type."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from perceptron1_jax.cli import build_parser, main
from perceptron1_jax.training import NonFiniteStop, TrainConfig, check_config, train

pytestmark = pytest.mark.standard_promotion  # trains with optax

BASE = TrainConfig(task="three_step", cell="gru", hidden=4, batch_size=8, steps=4, eval_every=2, log_every=2,
                   checkpoint_every=4, target_accuracy=0.0, lr=0.05)
LAYERED = {"cell": "lstm", "hidden": 32}  # cell/hidden at their defaults: layers names every layer
TS = "@problemName T\n@univariate true\n@equalLength true\n@classLabel true a b\n@data\n" + \
    "".join(f"{i % 3},{(i * 7) % 5},?,{i % 2}:{'ab'[i % 2]}\n" for i in range(16))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(24, 3, 2)).astype(np.float32) * 3 + 1
    labels = (xs.sum(axis=(1, 2)) > 6).astype(np.int32)
    np.savez(folder / "d.npz", xs=xs, labels=labels)
    np.savez(folder / "own.npz", xs=xs, labels=labels, xs_val=xs[:4], labels_val=labels[:4])
    np.savez(folder / "t.npz", xs=xs[:8], labels=labels[:8])
    (folder / "text.txt").write_text("the cat sat on the mat and the dog sat on the log. " * 6)
    (folder / "pos.txt").write_text("a good film\nnice and good\ngreat day\n" * 4)
    (folder / "neg.txt").write_text("a bad film\nawful and bad\nbad day\n" * 4)
    (folder / "m.ts").write_text(TS)
    return {name: str(folder / name) for name in ("d.npz", "own.npz", "t.npz", "text.txt", "pos.txt", "neg.txt",
                                                 "m.ts")}


def _outcome(cfg, out):
    """What a run of ``cfg`` leaves: its model, parameters, metrics (no timing), files, or its stop."""
    try:
        state = train(cfg, out, progress=False, check_grads=False, log=lambda _: None)
    except NonFiniteStop as stop:
        return {"stopped": str(stop).split(":")[0]}
    except ValueError as err:  # a refusal (DataError included)
        return {"refused": str(err)}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {"spec": state.spec, "dtypes": sorted({str(a.dtype) for a in jax.tree.leaves(state.params)}),
            "params": [np.asarray(a) for a in jax.tree.leaves(state.params)],
            "metrics": [{k: v for k, v in r.items() if k != "steps_per_sec"} for r in records],
            "files": sorted(p.name for p in out.iterdir())}


_BASES = {}


def _differs(a, b, where):
    if where == "params":
        return len(a["params"]) != len(b["params"]) or any(
            x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y) for x, y in zip(a["params"],
                                                                                                 b["params"]))
    if where == "stopped":
        return "stopped" in b and "stopped" not in a
    if where == "refused":
        return "refused" in b and "refused" not in a
    return a[where] != b[where]


# field: (base changes, the change, where it shows). Every field of TrainConfig is here.
WHERE = {
    "task": ({}, {"task": "parity"}, "params"),
    "cell": ({}, {"cell": "elman"}, "spec"),
    "hidden": ({}, {"hidden": 5}, "spec"),
    "seq_len": ({"task": "copy", "seq_len": 5}, {"seq_len": 6}, "params"),
    "batch_size": ({}, {"batch_size": 4}, "params"),
    "num_train": ({}, {"num_train": 1024}, "params"),
    "num_eval": ({}, {"num_eval": 256}, "metrics"),
    "optimizer": ({}, {"optimizer": "rmsprop"}, "params"),
    "lr": ({}, {"lr": 0.01}, "params"),
    "momentum": ({"optimizer": "sgd"}, {"momentum": 0.5}, "params"),
    "clip": ({}, {"clip": 0.01}, "params"),
    "clip_value": ({}, {"clip_value": 0.001}, "params"),
    "weight_decay": ({}, {"weight_decay": 0.5}, "params"),
    "schedule": ({}, {"schedule": "cosine"}, "params"),
    "warmup_steps": ({"schedule": "warmup_cosine"}, {"warmup_steps": 2}, "params"),
    "steps": ({}, {"steps": 6}, "metrics"),
    "eval_every": ({}, {"eval_every": 4}, "metrics"),
    "log_every": ({}, {"log_every": 1}, "metrics"),
    "checkpoint_every": ({}, {"checkpoint_every": 2}, "files"),
    "target_accuracy": ({}, {"target_accuracy": 0.01}, "metrics"),
    "seed": ({}, {"seed": 1}, "params"),
    "grad": ({}, {"grad": "autodiff"}, "params"),
    "gradient": ({}, {"gradient": "snap1"}, "params"),
    "online_every": ({"task": "parity", "seq_len": 6, "gradient": "snap1"}, {"online_every": 3}, "params"),
    "stream": ({"task": "chars", "seq_len": 4, "gradient": "snap1", "online_every": 2}, {"stream": True}, "params"),
    "tbptt_k1": ({"task": "copy", "seq_len": 6}, {"tbptt_k1": 6, "tbptt_k2": 3}, "params"),
    "tbptt_k2": ({"task": "copy", "seq_len": 6, "tbptt_k1": 6}, {"tbptt_k2": 3}, "params"),
    "dtype": ({}, {"dtype": "float64"}, "dtypes"),
    "gradflow_every": ({}, {"gradflow_every": 2}, "metrics"),
    "layers": (LAYERED, {"layers": "gru:3,gru:2"}, "spec"),
    "bidirectional": ({}, {"bidirectional": True}, "spec"),
    "scan": ({"cell": "mingru"}, {"scan": "associative"}, "spec"),
    "dropout": ({}, {"dropout": 0.5}, "params"),
    "embed_size": ({"task": "chars", "seq_len": 5}, {"embed_size": 3}, "spec"),
    "data": ({}, {"data": "d.npz"}, "spec"),
    "classes": ({}, {"classes": ("pos.txt", "neg.txt")}, "spec"),
    "tokens": ({"data": "text.txt", "seq_len": 6}, {"tokens": "words"}, "spec"),
    "val_fraction": ({"data": "d.npz"}, {"val_fraction": 0.25}, "params"),
    "max_vocab": ({"data": "text.txt", "seq_len": 6}, {"max_vocab": 4}, "spec"),
    "missing": ({"data": "m.ts"}, {"missing": "zero"}, "refused"),  # "error" refuses the file's '?': zero reads it
    "max_nonfinite": ({"lr": 1e38}, {"max_nonfinite": 2}, "stopped"),
    "compute_dtype": ({}, {"compute_dtype": "bfloat16"}, "params"),
    "keep_best": ({}, {"keep_best": True}, "files"),
    "tensorboard": ({}, {"tensorboard": True}, "files"),  # out/tensorboard
    "test": ({"data": "d.npz"}, {"test": "t.npz"}, "metrics"),
    "standardize": ({"data": "d.npz"}, {"standardize": True}, "params"),
}

# Where an option cannot act, it is refused by name: (config, the message's start).
REFUSED = [
    ({"optimizer": "adam", "momentum": 0.5}, "momentum: expected the default 0.9 here (momentum applies to "
                                             "optimizer sgd, not adam)"),
    ({"warmup_steps": 5}, "warmup_steps: expected the default 0 here (warm-up applies to schedule warmup_cosine"),
    ({"data": "d.npz", "num_train": 100}, "num_train: expected the default 2048 here (npz data brings its own"),
    ({"data": "d.npz", "num_eval": 100}, "num_eval: expected the default 512 here"),
    ({"val_fraction": 0.3}, "val_fraction: expected the default 0.1 here (the task 'three_step' draws its own"),
    ({"standardize": True}, "standardize: expected the default None here"),
    ({"standardize": False}, "standardize: expected the default None here"),
    ({"missing": "zero"}, "missing: expected the default 'error' here (missing values are read from .ts files"),
    ({"data": "d.npz", "missing": "zero"}, "missing: expected the default 'error' here"),
    ({"task": "chars", "tokens": "words"}, "tokens: expected the default None here (tokens apply to text files"),
    ({"task": "chars", "max_vocab": 5}, "max_vocab: expected the default None here"),
    ({"data": "d.npz", "tokens": "chars"}, "tokens: expected the default None here"),
    ({"layers": "gru:3"}, "cell: expected the default 'lstm' here (layers 'gru:3' names every layer's cell)"),
    ({"cell": "lstm", "layers": "gru:3"}, "hidden: expected the default 32 here"),
    ({"target_accuracy": 1.5}, "target_accuracy: expected a number in [0, 1]"),
    ({"target_accuracy": -1.0}, "target_accuracy: expected a number in [0, 1]"),
    ({"lr": True}, "lr: expected a number, got bool True"),
    ({"momentum": "0.5"}, "momentum: expected a number, got str '0.5'"),
    ({"target_accuracy": "0.5"}, "target_accuracy: expected a number, got str '0.5'"),
    ({"seed": 1.5}, "seed: expected an int, got float 1.5"),
    ({"bidirectional": 1}, "bidirectional: expected true or false, got int 1"),
    ({"optimizer": 3}, "optimizer: expected a string, got int 3"),
    ({"gradient": "rtrl", "grad": "autodiff"}, "grad: expected the default 'bptt' here (the online gradient 'rtrl' "
                                                "replaces it)"),
    ({"gradient": "bptt"}, "gradient: expected one of [None, 'rtrl', 'snap1', 'eprop', 'uoro'], got 'bptt'"),
    ({"online_every": 2}, "online_every: expected the default None here (it times the updates of an online "
                          "gradient (gradient)), got 2"),
    ({"gradient": "uoro", "online_every": 0}, "online_every: expected a positive int, got 0"),
    ({"stream": True}, "stream: expected the default False here (it carries online learning's state from step to "
                       "step (online_every)), got True"),
    ({"task": "chars", "gradient": "uoro", "online_every": 2, "stream": True, "num_train": 64},
     "num_train: expected the default 2048 here (a stream reads the whole training text in order"),
]


def _config(changes, files):
    named = {k: (tuple(files[v] for v in v) if isinstance(v, tuple) else files.get(v, v))
             if k in ("data", "classes", "test") else v for k, v in changes.items()}
    return dataclasses.replace(BASE, **named)


def test_every_field_is_walked():
    assert set(WHERE) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("field", sorted(WHERE))
def test_each_field_acts_where_it_says(field, files, tmp_path, x64):
    base, change, where = WHERE[field]
    if field != "dtype":  # float32 runs stay float32 with x64 on (the dtype is the config's)
        base = {**base, "dtype": "float32"}
    key = json.dumps(base, sort_keys=True)
    if key not in _BASES:  # fields that share a base share its run
        _BASES[key] = _outcome(_config(base, files), tmp_path / "base")
    before = _BASES[key]
    after = _outcome(_config({**base, **change}, files), tmp_path / "changed")
    if where == "refused":
        before, after = after, before  # the default refuses what the change accepts
    assert "refused" not in before, before
    assert where == "stopped" or "refused" not in after or where == "refused", after
    assert _differs(before, after, where), (field, where)
    if field != "dtype" and "dtypes" in before:
        assert before["dtypes"] == ["float32"]


@pytest.mark.parametrize("changes, message", REFUSED)
def test_an_option_that_cannot_act_is_refused_by_name(changes, message, files):
    with pytest.raises(ValueError) as info:
        cfg = _config(changes, files)
        check_config(cfg)
    assert str(info.value).startswith(message), str(info.value)


def test_an_own_evaluation_split_refuses_val_fraction_and_token_data_standardize(files, tmp_path):
    refused = _outcome(_config({"data": "own.npz", "val_fraction": 0.2}, files), tmp_path / "a")["refused"]
    assert refused.startswith("val_fraction: expected the default 0.1 with") and "'xs_val'" in refused
    refused = _outcome(_config({"data": "text.txt", "seq_len": 6, "standardize": True}, files), tmp_path / "b")
    assert refused["refused"].startswith("standardize: expected float inputs, got the token ids of")


# The train options that are not TrainConfig fields, each with the test that shows it acting.
OTHER_OPTIONS = {
    "--seeds": "test_population.py::test_the_command_line_trains_evaluates_and_predicts_with_members",
    "--config": "test_options_act.py::test_toml_values_are_checked_and_the_command_line_wins",
    "--out": "test_cli_trust.py::test_one_run_per_folder",
    "--resume": "test_cli_trust.py::test_one_run_per_folder",
    "--overwrite": "test_cli_trust.py::test_one_run_per_folder",
    "--print-config": "test_cli_conventions.py::test_print_config_round_trips_through_config",
    "--no-progress": "test_options_act.py::test_the_command_line_options_that_print",
    "--no-gradcheck": "test_options_act.py::test_the_command_line_options_that_print",
    "--devices": "test_cli_trust.py::test_the_same_command_twice_gives_the_same_run_above_500_steps_and_resumed",
    "--placement": "test_parallel.py::test_several_devices_equal_one",
    "--coordinator": "test_parallel.py::test_two_processes_train_like_one",
    "--num-processes": "test_parallel.py::test_two_processes_train_like_one",
    "--process-id": "test_parallel.py::test_two_processes_train_like_one",
    "--help": "test_cli.py::test_help_lists_every_option",
}


def test_every_train_option_is_covered():
    train_parser = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {s for action in train_parser._actions for s in action.option_strings if s.startswith("--")}
    fields = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(TrainConfig)}
    negations = {"--no-" + f[2:] for f in fields}  # bool | None fields: --standardize / --no-standardize
    assert options - fields - negations == set(OTHER_OPTIONS)
    import pathlib

    here = pathlib.Path(__file__).parent
    for where in OTHER_OPTIONS.values():
        module, name = where.split("::")
        assert f"def {name}(" in (here / module).read_text(), where


def test_the_command_line_options_that_print(tmp_path, capsys):
    args = ["train", "--task", "three_step", "--cell", "gru", "--hidden", "4", "--batch-size", "8", "--steps", "2",
            "--eval-every", "2", "--num-train", "16", "--num-eval", "8"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "a")]) == 0
    assert "explicit BPTT vs jax.grad on the first batch" in capsys.readouterr().out
    assert main([*args, "--no-progress", "--no-gradcheck", "--out", str(tmp_path / "b")]) == 0
    printed = capsys.readouterr().out
    assert "explicit BPTT vs jax.grad" not in printed and "step 2: loss" in printed  # log lines, not a bar


def test_toml_values_are_checked_and_the_command_line_wins(tmp_path, capsys):
    npz = tmp_path / "cls.npz"
    np.savez(npz, xs=np.zeros((16, 3, 4), np.float32), labels=np.arange(16) % 4)
    cases = [
        ('target_accuracy = "0.5"\n', [], "target_accuracy: expected a number, got str '0.5'"),
        ("lr = true\n", [], "lr: expected a number, got bool True"),
        ('momentum = "0.5"\n', [], "momentum: expected a number, got str '0.5'"),
        ("lr = []\n", [], "--lr: expected a number or a non-empty list of numbers, got []"),
        ("hidden = [8, 16]\n", [], "hidden: expected a positive int, got list [8, 16]"),
        ('layers = "gru:8"\ncell = "gru"\n', [], "--config: "),
        (f'task = "copy"\ndata = "{npz}"\n', [], "--config: "),
    ]
    for text, extra, message in cases:
        (tmp_path / "c.toml").write_text(text)
        assert main(["train", "--config", str(tmp_path / "c.toml"), *extra, "--steps", "1"]) == 2, text
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"perceptron1: error: {message}") and len(err.splitlines()) == 1, err
    quick = ["--steps", "2", "--eval-every", "2", "--batch-size", "8", "--no-progress", "--no-gradcheck"]
    (tmp_path / "c.toml").write_text('layers = "gru:8"\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--cell", "lstm", "--hidden", "6", *quick,
                 "--out", str(tmp_path / "a")]) == 0
    assert "model lstm:6 -> " in capsys.readouterr().out
    (tmp_path / "c.toml").write_text(f'data = "{npz}"\n')
    assert main(["train", "--config", str(tmp_path / "c.toml"), "--task", "copy", "--seq-len", "4", "--hidden", "4",
                 *quick, "--out", str(tmp_path / "b")]) == 0
    assert "task copy" in capsys.readouterr().out
    assert json.loads((tmp_path / "b" / "config.json").read_text())["data"] is None


def test_gradflow_of_a_checkpoint_refuses_what_it_would_ignore(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--task", "three_step", "--cell", "gru", "--hidden", "4", "--steps", "2", "--eval-every",
                 "2", "--no-progress", "--no-gradcheck", "--out", str(out)]) == 0
    capsys.readouterr()
    for option, value in [("--spectral-radius", "2.5"), ("--task", "copy"), ("--seq-len", "7"), ("--hidden", "9"),
                          ("--seed", "3"), ("--cell", "lstm")]:
        assert main(["gradflow", "--checkpoint", str(out), option, value, "--png", str(tmp_path / "g.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"perceptron1: error: {option}: expected none with --checkpoint (the run's own model, data " \
                      f"and parameters are used), got {option} {value}", err
    assert main(["gradflow", "--checkpoint", str(out), "--png", str(tmp_path / "g.png")]) == 0
    assert "gru (step 2)" in capsys.readouterr().out

