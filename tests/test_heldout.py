"""A labelled file read whole for a known DataInfo (the test split, ``eval --data``): every source
kind, checked to fit the training data, encoded with its vocabulary; each mismatch named."""

import numpy as np
import pytest

from perceptron1_jax.data import DataError, load_data, load_heldout

TS = "@problemName T\n@univariate true\n@equalLength false\n@classLabel true a b\n@data\n"


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_a_ts_test_file_must_list_the_training_labels_and_channels(tmp_path):
    train = _write(tmp_path / "train.ts", TS + "1,2,3:a\n3,2:b\n1,1,1:a\n0,5:b\n")
    info = load_data(train, val_fraction=0.25).info
    split = load_heldout(_write(tmp_path / "t.ts", TS + "1,2,3,4:b\n2:a\n"), info)
    assert split.xs.shape == (2, 4, 1) and split.labels.tolist() == [1, 0] and split.lengths.tolist() == [4, 1]
    with pytest.raises(DataError, match=r"b.ts: @classLabel: expected the training data's labels \['a', 'b'\], "
                                        r"got \['b', 'a'\]"):
        load_heldout(_write(tmp_path / "b.ts", TS.replace("true a b", "true b a") + "1:a\n"), info)
    two = "@problemName T\n@dimensions 2\n@classLabel true a b\n@data\n1:2:a\n"
    with pytest.raises(DataError, match=r"c.ts: expected 1 features per step \(as .*train.ts\), got 2"):
        load_heldout(_write(tmp_path / "c.ts", two), info)
    with pytest.raises(DataError, match=r"d.ts: expected class labels \(@classLabel true \.\.\.\) to score"):
        load_heldout(_write(tmp_path / "d.ts", "@problemName T\n@univariate true\n@data\n1,2\n"), info)
    with pytest.raises(DataError, match="e.ts: no such file"):
        load_heldout(str(tmp_path / "e.ts"), info)


def test_npz_csv_and_text_files_are_read_as_one_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", xs=rng.normal(size=(20, 5, 3)).astype(np.float32), labels=np.arange(20) % 3)
    info = load_data(str(tmp_path / "a.npz")).info
    np.savez(tmp_path / "t.npz", xs=rng.normal(size=(4, 7, 3)).astype(np.float32), labels=np.asarray([0, 2, 1, 0]))
    assert load_heldout(str(tmp_path / "t.npz"), info).xs.shape == (4, 7, 3)
    np.savez(tmp_path / "v.npz", xs=np.zeros((4, 7, 3), np.float32), labels=np.zeros(4, int),
             xs_val=np.zeros((1, 7, 3), np.float32), labels_val=np.zeros(1, int))
    with pytest.raises(DataError, match=r"unexpected arrays \['labels_val', 'xs_val'\] in a file read as one split"):
        load_heldout(str(tmp_path / "v.npz"), info)
    rows = "\n".join(f"{i},{i * 2}" for i in range(40))
    series = load_data(_write(tmp_path / "s.csv", "a,b\n" + rows), seq_len=4).info
    split = load_heldout(_write(tmp_path / "u.csv", rows), series, seq_len=4)
    assert split.xs.shape == (36, 4, 2) and split.labels[0].tolist() == [4, 8]
    with pytest.raises(DataError, match="expected regression data"):
        load_heldout(str(tmp_path / "t.npz"), series)
    text = load_data(_write(tmp_path / "book.txt", "the cat sat on the mat " * 20), seq_len=8).info
    split = load_heldout(_write(tmp_path / "more.txt", "the cat sat on a zebra " * 4), text, seq_len=8)
    assert split.xs.shape[1] == 8 and (np.asarray(split.labels)[:, :-1] == np.asarray(split.xs)[:, 1:]).all()
    assert 0 in np.asarray(split.xs)  # the z of zebra is unseen: <unk>


def test_class_files_are_one_per_class_in_the_run_order(tmp_path):
    pos = _write(tmp_path / "pos.txt", "good fun\ngreat film\nlovely day\n")
    neg = _write(tmp_path / "neg.txt", "bad film\nawful day\nboring fun\n")
    info = load_data(classes=(pos, neg), val_fraction=0.34).info
    split = load_heldout([_write(tmp_path / "p.txt", "good day\n"), _write(tmp_path / "n.txt", "bad day\nugly\n")],
                         info)
    assert split.labels.tolist() == [0, 1, 1] and split.lengths.tolist() == [2, 2, 1]
    with pytest.raises(DataError, match=r"p.txt: expected 2 text files \(one per class, in the order of \['pos', "
                                        r"'neg'\]\), got 1"):
        load_heldout(str(tmp_path / "p.txt"), info)
