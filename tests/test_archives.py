"""The archives by name: ``aeon:NAME`` trains on the TRAIN file shipped inside aeon's package and
tests on its TEST file; an unknown name lists the shipped ones (no download is attempted); without
aeon a one-line error says what to install."""

import importlib.util

import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.data import DataError, archive_file, load_data, shipped
from perceptron1_jax.data import archives as archives_module
from perceptron1_jax.training import TrainConfig

pytestmark = pytest.mark.standard_promotion  # the command line trains with optax

needs_aeon = pytest.mark.skipif(importlib.util.find_spec("aeon") is None,
                                reason="aeon is not installed (pip install '.[archives]')")


@needs_aeon
def test_the_shipped_datasets_are_found_without_a_download():
    names = shipped()
    assert {"JapaneseVowels", "BasicMotions", "GunPoint", "ItalyPowerDemand"} <= set(names)
    assert archive_file("aeon:GunPoint", "TEST").name == "GunPoint_TEST.ts"
    data = load_data("aeon:ItalyPowerDemand", test="aeon:ItalyPowerDemand", val_fraction=0.2, standardize=True)
    assert data.train.xs.shape[0] + data.eval.xs.shape[0] == 67 and data.test.xs.shape == (1029, 24, 1)
    assert data.info.class_names == ("1", "2") and data.info.source == "aeon:ItalyPowerDemand"
    cfg = TrainConfig(data="aeon:GunPoint")
    assert cfg.test == ("aeon:GunPoint",) and cfg.standardizes and cfg.keeps_best


@needs_aeon
def test_a_name_aeon_does_not_ship_is_refused_with_the_list(capsys):
    with pytest.raises(DataError, match=r"aeon:FordA: expected a dataset shipped inside aeon's package, one of "
                                        r"\[.*'GunPoint'.*\] \(nothing is downloaded\)"):
        load_data("aeon:FordA", test="aeon:FordA")  # FordA is in the archive but would need a download
    assert main(["train", "--data", "aeon:FordA", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perceptron1: error: data: aeon:FordA: expected a dataset shipped")


def test_without_aeon_one_line_says_what_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(archives_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "aeon" else real(name, *a))
    with pytest.raises(DataError, match=r"pip install 'perceptron1_jax\[archives\]'"):
        load_data("aeon:GunPoint")
    assert main(["train", "--data", "aeon:GunPoint", "--steps", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["perceptron1: error: data: the aeon: datasets need the optional extra: pip install "
                   "'perceptron1_jax[archives]' (installs aeon, whose package ships them)"]


@needs_aeon
def test_the_command_line_trains_on_an_archive_and_scores_its_test_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", "aeon:ItalyPowerDemand", "--cell", "gru", "--hidden", "8", "--batch-size", "16",
                 "--steps", "30", "--eval-every", "10", "--lr", "0.01", "--no-progress", "--no-gradcheck",
                 "--out", str(out)]) == 0
    said = capsys.readouterr().out
    # 3 of each class (34 and 33) for validation
    assert "aeon:ItalyPowerDemand (classification), 61 training / 6 validation / 1029 test examples" in said
    assert "inputs standardized" in said and "final: test split, checkpoint of step" in said
    assert main(["predict", str(out), "--data", "aeon:ItalyPowerDemand", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1029
    assert np.isfinite(float(said.split("test accuracy ")[-1].split()[0]))
