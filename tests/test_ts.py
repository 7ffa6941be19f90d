"""The UCR/UEA archives' .ts files: univariate and multivariate series, equal and unequal lengths,
class labels in @classLabel's order, every error naming the file, the line and the field, missing
values, and the command line (train, predict)."""

import json
import re

import numpy as np
import pytest

from perceptron1_jax.cli import main
from perceptron1_jax.data import DataError, load_data, read_ts

pytestmark = pytest.mark.standard_promotion  # the command-line test trains with optax

UNIVARIATE = """# a comment
@problemName Tiny
@timeStamps false
@missing false
@univariate true
@equalLength true
@seriesLength 4
@classLabel true b a
@data
1,2,3,4:a
0.5,-1,2e-1,7:b
4,3,2,1:a
"""

MULTIVARIATE = """@problemName Motions
@univariate false
@dimensions 2
@equalLength false
@classLabel true walk run stand
@data
1,2,3:4,5,6:run
1,2:3,4:walk
1,2,3,4:5,6,7,8:stand
"""


def _write(tmp_path, text, name="x.ts"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_univariate_file_reads_as_equal_length_series_with_its_class_names(tmp_path):
    found = read_ts(_write(tmp_path, UNIVARIATE))
    assert found["xs"].shape == (3, 4, 1) and found["xs"].dtype == np.float32 and found["lengths"] is None
    np.testing.assert_array_equal(found["xs"][1, :, 0], np.float32([0.5, -1, 0.2, 7]))
    assert found["class_names"] == ("b", "a") and found["labels"].tolist() == [1, 0, 1]  # @classLabel's order
    assert found["name"] == "Tiny"


def test_a_multivariate_file_of_unequal_lengths_is_zero_padded_with_lengths(tmp_path):
    found = read_ts(_write(tmp_path, MULTIVARIATE))
    assert found["xs"].shape == (3, 4, 2) and found["lengths"].tolist() == [3, 2, 4]
    np.testing.assert_array_equal(found["xs"][0], np.float32([[1, 4], [2, 5], [3, 6], [0, 0]]))
    assert found["labels"].tolist() == [1, 0, 2]
    data = load_data(str(_write(tmp_path, MULTIVARIATE * 1)), val_fraction=0.34, seed=0)
    assert data.info.class_names == ("walk", "run", "stand") and data.info.num_outputs == 3
    assert data.info.input_size == 2 and data.train.lengths is not None
    assert data.train.xs.shape[0] + data.eval.xs.shape[0] == 3


@pytest.mark.parametrize("text, message", [
    (UNIVARIATE.replace("4,3,2,1:a", "4,3,2,1:c"), r"x.ts: line 12: class label 'c': expected one of @classLabel's "
                                                   r"\['b', 'a'\]"),
    (MULTIVARIATE.replace("1,2:3,4:walk", "1,2:3,4,5:walk"), r"x.ts: line 8: expected channels of one length, got "
                                                             r"lengths \[2, 3\]"),
    (UNIVARIATE.replace("0.5,-1", "0.5,abc"), r"x.ts: line 11: channel 1, value 2: expected a number, got 'abc'"),
    (UNIVARIATE.replace("0.5,-1", "0.5,?"), r"x.ts: line 11: channel 1, value 2: a missing value \('\?'\); give "
                                            r"--missing zero"),
    (UNIVARIATE.replace("4,3,2,1", "4,NaN,2,1"), r"x.ts: line 12: channel 1, value 2: a missing value \('NaN'\)"),
    (UNIVARIATE.split("@data")[0], r"x.ts: expected a '@data' line before the series, got none"),
    (UNIVARIATE.replace("@data\n", ""), r"x.ts: line 9: expected a header line '@key value' or '@data' before the "
                                        r"series, got '1,2,3,4:a'"),
    (UNIVARIATE.split("@data")[0] + "@data\n", r"x.ts: expected at least one series after @data, got none"),
    (MULTIVARIATE.replace("1,2:3,4:walk", "1,2:walk"), r"x.ts: line 8: expected 2 channels separated by ':', got 1"),
    (UNIVARIATE.replace("4,3,2,1:a", "4,3,2:a"), r"x.ts: line 12: expected 4 values per channel \(@equalLength "
                                                 r"true\), got 3"),
    (UNIVARIATE.replace("@classLabel true b a", "@classLabel true"), r"x.ts: line 8: @classLabel: expected 'true' "
                                                                     r"and the class labels"),
    (UNIVARIATE.replace("@timeStamps false", "@timeStamps true"), r"x.ts: line 3: @timeStamps: expected false"),
    (UNIVARIATE.replace("1,2,3,4:a", "1,2,inf,4:a"), r"x.ts: line 10: channel 1, value 3: expected a finite number"),
])
def test_a_bad_file_is_refused_naming_the_line_and_the_field(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        read_ts(_write(tmp_path, text))


def test_missing_values_read_as_zero_only_when_asked(tmp_path):
    path = _write(tmp_path, UNIVARIATE.replace("0.5,-1", "0.5,?").replace("4,3,2,1", "4,NaN,2,1"))
    found = read_ts(path, missing="zero")
    assert found["xs"][1, 1, 0] == 0 and found["xs"][2, 1, 0] == 0
    with pytest.raises(ValueError, match=r"missing: expected one of \['error', 'zero'\], got 'drop'"):
        read_ts(path, missing="drop")
    with pytest.raises(ValueError, match="missing: expected the default 'error' for a npz source"):
        load_data(str(tmp_path / "y.npz"), missing="zero")


def test_the_command_line_trains_on_a_ts_file_and_predicts_with_its_class_names(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=6) + (3 if k % 2 else -3)) + (":up" if k % 2 else ":down")
            for k in range(40)]
    header = "@problemName Shift\n@univariate true\n@equalLength true\n@classLabel true down up\n@data\n"
    train, test = _write(tmp_path, header + "\n".join(rows[:30]) + "\n", "S_TRAIN.ts"), \
        _write(tmp_path, header + "\n".join(rows[30:]) + "\n", "S_TEST.ts")
    out = tmp_path / "run"
    assert main(["train", "--data", str(train), "--hidden", "8", "--batch-size", "8", "--steps", "60", "--lr", "0.03",
                 "--no-progress", "--no-gradcheck", "--out", str(out)]) == 0
    assert "eval accuracy" in capsys.readouterr().out
    assert main(["predict", str(out), "--data", str(test), "--json"]) == 0
    predictions = [json.loads(line)["prediction"] for line in capsys.readouterr().out.splitlines()]
    assert len(predictions) == 10
    assert main(["predict", str(out), "--data", str(test)]) == 0
    assert all(" (probability " in line and (" up " in line or " down " in line)
               for line in capsys.readouterr().out.splitlines())
    bad = _write(tmp_path, header + "1,2,x,4,5,6:up\n", "BAD.ts")
    assert main(["train", "--data", str(bad), "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"perceptron1: error: {bad}: line 6: channel 1, value 3: expected a number, got 'x'"]


def test_percent_comments_and_a_regression_file_read_with_targets(tmp_path):
    text = ("% a comment as aeon's UnitTest writes them\n%\n@problemName Rates\n@univariate true\n"
            "@equalLength true\n@targetLabel true\n@data\n1,2,3:0.5\n% between rows too\n4,5,6:-1.25\n")
    found = read_ts(_write(tmp_path, text))
    assert found["labels"] is None and found["class_names"] is None
    np.testing.assert_array_equal(found["targets"], np.float32([0.5, -1.25]))
    np.testing.assert_array_equal(found["xs"][:, :, 0], np.float32([[1, 2, 3], [4, 5, 6]]))
    data = load_data(str(_write(tmp_path, text, "r.ts")), val_fraction=0.5, seed=0)
    assert data.info.kind == "regression" and data.info.num_outputs == 1 and not data.info.many_to_many
    assert data.train.labels.shape == (1, 1) and data.train.labels.dtype == np.float32


@pytest.mark.parametrize("text, message", [
    ("@targetLabel true\n@data\n1,2,3:x\n", "line 3: target: expected a number (@targetLabel true), got 'x'"),
    ("@targetLabel true\n@data\n1,2,3\n", "line 3: expected the channels and a target value after ':'"),
    ("@targetLabel maybe\n@data\n1,2:3\n", "line 1: @targetLabel: expected true or false, got 'maybe'"),
    ("@classLabel true a b\n@targetLabel true\n@data\n1,2:a\n", "line 2: @targetLabel: expected either"),
])
def test_a_bad_regression_file_is_refused_naming_the_line(tmp_path, text, message):
    with pytest.raises(DataError, match=re.escape(message)):
        read_ts(_write(tmp_path, text))
