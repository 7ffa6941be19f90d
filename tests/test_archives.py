"""The archives by name: ``aeon:NAME`` trains on the TRAIN file shipped inside aeon's package and
tests on its TEST file; an unknown name lists the shipped ones (no download is attempted); without
aeon a one-line error says what to install."""

import importlib.util
import json

import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.data import DataError, archive_file, load_data, shipped
from perceptron1_jax.data import archives as archives_module
from perceptron1_jax.model import model_apply
from perceptron1_jax.runs import load_run
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


@needs_aeon
@pytest.mark.parametrize("split", ["TRAIN", "TEST"])
def test_every_shipped_file_reads_as_aeon_reads_it(split):
    """Values, lengths and labels (class names as written; regression targets) of every .ts file
    aeon ships, against aeon's own load_from_ts_file."""
    from aeon.datasets import load_from_ts_file

    from perceptron1_jax.data import read_ts

    names = shipped()
    assert len(names) >= 12 and {"UnitTest", "Covid3Month", "CardanoSentiment"} <= set(names)
    for name in names:
        path = archive_file(name, split)
        theirs, their_y = load_from_ts_file(str(path))
        ours = read_ts(path, missing="zero")
        series = [np.asarray(x) for x in theirs]  # (channels, length) each
        lengths = [x.shape[1] for x in series]
        expected_lengths = None if len(set(lengths)) == 1 else lengths
        assert (None if ours["lengths"] is None else ours["lengths"].tolist()) == expected_lengths, name
        for i, x in enumerate(series):
            np.testing.assert_allclose(ours["xs"][i, : x.shape[1]], np.nan_to_num(x.T, nan=0.0).astype(np.float32),
                                       rtol=1e-6, err_msg=f"{name} {split} series {i}")
        if ours["targets"] is not None:
            np.testing.assert_allclose(ours["targets"], np.asarray(their_y, np.float64).astype(np.float32),
                                       err_msg=name)
        else:
            # aeon lowercases every label (BasicMotions' "Standing" is its "standing"); ours are as written.
            assert [ours["class_names"][k].lower() for k in ours["labels"]] == [str(y) for y in their_y], name
            rows = [row.strip() for row in path.read_text().splitlines() if row.strip()[:1] not in ("", "@", "#", "%")]
            assert {row.rsplit(":", 1)[1].strip() for row in rows} <= set(ours["class_names"]), name


@needs_aeon
def test_a_regression_archive_trains_with_the_mse_head_and_reports_mse(tmp_path, capsys):
    out = tmp_path / "covid"
    assert main(["train", "--data", "aeon:Covid3Month", "--cell", "gru", "--hidden", "4", "--batch-size", "16",
                 "--steps", "4", "--eval-every", "2", "--no-progress", "--no-gradcheck", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(regression)" in printed and "eval loss (MSE, standardized targets)" in printed, printed
    assert "final: test split" in printed and "test loss (MSE, standardized targets)" in printed, printed
    assert main(["eval", str(out), "--data", "aeon:Covid3Month"]) == 0  # its TEST file
    assert "eval loss (MSE, standardized targets)" in capsys.readouterr().out
    assert main(["predict", str(out), "--data", str(archive_file("Covid3Month", "TEST")), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    run = load_run(out)
    assert len(records) == 61 and all(len(r["prediction"]) == 1 for r in records)
    # Predictions come back in the targets' own units: the standardized outputs mapped back.
    from perceptron1_jax.data import read_ts
    from perceptron1_jax.data.standardize import standardize_inputs

    test = read_ts(archive_file("Covid3Month", "TEST"))
    raw = np.asarray(model_apply(run.params, standardize_inputs(test["xs"], None, run.info), run.spec))
    expected = raw * np.float32(run.info.target_std[0]) + np.float32(run.info.target_mean[0])
    np.testing.assert_allclose([r["prediction"][0] for r in records], expected[:, 0], rtol=1e-5, atol=1e-7)
