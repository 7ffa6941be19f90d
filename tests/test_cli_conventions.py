"""Command-line conventions: --version, every boolean option negatable over a TOML file, and
--print-config printing the effective configuration as TOML that --config loads back."""

import tomllib
from importlib.metadata import version

import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.training import Population, config_from_dict


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"perceptron1 {version('perceptron1_jax')}"


def _printed(capsys, *args):
    assert main(["train", *args, "--print-config"]) == 0
    return capsys.readouterr().out


def test_print_config_round_trips_through_config(tmp_path, capsys):
    args = ["--task", "copy", "--seq-len", "7", "--layers", "gru:8,lstm:4", "--bidirectional", "--dropout", "0.1",
            "--lr", "0.01,0.02", "--seeds", "2", "--clip", "1", "--keep-best"]
    text = _printed(capsys, *args)
    values = tomllib.loads(text)
    assert values["layers"] == "gru:8,lstm:4" and values["bidirectional"] is True and values["lr"] == [0.01, 0.02]
    assert values["seeds"] == 2 and "tbptt_k1" not in values  # None: the default, left out
    (tmp_path / "run.toml").write_text(text)
    assert _printed(capsys, "--config", str(tmp_path / "run.toml")) == text  # loads back to the same run
    single = _printed(capsys, "--task", "three_step", "--hidden", "12")
    cfg = config_from_dict(tomllib.loads(single))
    assert cfg.hidden == 12 and cfg.task == "three_step"
    assert Population(seeds=2, lr=(0.01, 0.02)).to_dict()["lr"] == values["lr"]


def test_every_boolean_option_is_negatable_over_a_file(tmp_path, capsys):
    (tmp_path / "c.toml").write_text("keep_best = true\nbidirectional = true\n")
    values = tomllib.loads(_printed(capsys, "--config", str(tmp_path / "c.toml")))
    assert values["keep_best"] is True and values["bidirectional"] is True
    values = tomllib.loads(_printed(capsys, "--config", str(tmp_path / "c.toml"), "--no-keep-best",
                                    "--no-bidirectional"))
    assert values["keep_best"] is False and values["bidirectional"] is False
    np.savez(tmp_path / "d.npz", xs=np.zeros((8, 3, 2), np.float32), labels=np.arange(8) % 2)
    (tmp_path / "d.toml").write_text(f'data = "{tmp_path / "d.npz"}"\nstandardize = true\n')
    values = tomllib.loads(_printed(capsys, "--config", str(tmp_path / "d.toml"), "--no-standardize"))
    assert values["standardize"] is False and "task" not in values and values["data"] == [str(tmp_path / "d.npz")]
