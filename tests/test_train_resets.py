"""Training on packed sequences: ``from_arrays(..., resets=...)`` and an ``.npz`` array ``resets``
train with them (the explicit BPTT, the evaluation, a population and ``predict`` read them; the
command line in a fresh process); no resets and all-False resets train bit-identically; a malformed
array is refused by name."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perceptron1_jax as p1
from perceptron1_jax.cli import main
from perceptron1_jax.data import DataError, from_arrays
from perceptron1_jax.train import TrainConfig, train

pytestmark = pytest.mark.standard_promotion  # optax

RNG = np.random.default_rng(5)
XS = RNG.standard_normal((48, 10, 2)).astype(np.float32)
LABELS = (np.cumsum(XS[..., 0], axis=1) > 0).astype(np.int32)  # many-to-many
RESETS = RNG.random((48, 10)) < 0.2
CFG = TrainConfig(layers="gru:6,lstm:5", batch_size=8, steps=6, eval_every=3, log_every=3, checkpoint_every=6,
                  lr=0.05)


def run(tmp_path, name, resets, cfg=CFG, **kwargs):
    data = from_arrays(XS, labels=LABELS, resets=resets, val_fraction=0.25, seed=1)
    state = train(cfg, tmp_path / name, data=data, progress=False, log=lambda _: None, **kwargs)
    return state, data


def test_no_resets_and_all_false_resets_train_alike(tmp_path, x64):
    # The same arithmetic in two programs: equal to float64 rounding (the programs differ, so XLA
    # may fuse them differently; in float32 with XLA's default code generation they differ in
    # the last bit of a few entries).
    cfg = dataclasses.replace(CFG, dtype="float64")
    plain, _ = run(tmp_path, "plain", None, cfg=cfg)
    false, _ = run(tmp_path, "false", np.zeros_like(RESETS), cfg=cfg)
    assert [e["loss"] for e in plain.history if "loss" in e] == pytest.approx(
        [e["loss"] for e in false.history if "loss" in e], rel=1e-12)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(false.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_training_reads_the_resets(tmp_path):
    plain, _ = run(tmp_path, "plain", None)
    packed, data = run(tmp_path, "packed", RESETS)
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain.params),
                                                         jax.tree.leaves(packed.params)))
    # The evaluation scored the held-out split with its resets.
    last_eval = [e for e in packed.history if "eval_loss" in e][-1]
    ev = data.eval
    with_resets = p1.model_loss(packed.params, jnp.asarray(ev.xs), jnp.asarray(ev.labels), packed.spec,
                                resets=jnp.asarray(ev.resets))
    without = p1.model_loss(packed.params, jnp.asarray(ev.xs), jnp.asarray(ev.labels), packed.spec)
    np.testing.assert_allclose(last_eval["eval_loss"], with_resets, rtol=1e-5)
    assert abs(float(with_resets) - float(without)) > 1e-4
    # A population reads them too: each member trains as its single run (member 0: the run above).
    pop, _ = run(tmp_path, "pop", RESETS, population=p1.Population(seeds=2))
    single1, _ = run(tmp_path, "single1", RESETS, cfg=dataclasses.replace(CFG, seed=1))
    for k, single in enumerate((packed, single1)):
        for a, b in zip(jax.tree.leaves(jax.tree.map(lambda x, k=k: x[k], pop.params)),
                        jax.tree.leaves(single.params)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_command_line_trains_and_predicts_with_an_npz_of_resets(tmp_path):
    path = tmp_path / "packed.npz"
    np.savez(path, xs=XS, labels=LABELS, resets=RESETS)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "perceptron1_jax", "train", "--data", str(path), "--layers",
                           "gru:6", "--steps", "4", "--batch-size", "8", "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    inputs = tmp_path / "inputs.npz"
    np.savez(inputs, xs=XS[:4], resets=RESETS[:4])
    shown = subprocess.run([sys.executable, "-m", "perceptron1_jax", "predict", str(out), "--data", str(inputs),
                            "--json"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    records = [json.loads(line) for line in shown.stdout.splitlines()]
    loaded = p1.load_run(out)
    expected = np.asarray(p1.model_apply(loaded.params, jnp.asarray(XS[:4]), loaded.spec,
                                         resets=jnp.asarray(RESETS[:4]))).argmax(-1)
    assert [r["prediction"] for r in records] == expected.tolist()


def test_the_command_line_refuses_a_malformed_resets_array(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, xs=XS, labels=LABELS, resets=RESETS[:, :3])
    assert main(["train", "--data", str(bad), "--steps", "1", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "array 'resets': expected bool (n, time) = (48, 10)" in err and "\n" not in err


def test_from_arrays_refuses_malformed_resets():
    with pytest.raises(DataError, match=r"arrays: array 'resets': expected bool \(n, time\) = \(48, 10\) .* got int64"):
        from_arrays(XS, labels=LABELS, resets=RESETS.astype(np.int64))
    with pytest.raises(DataError, match=r"expected 'xs_val' with \['resets_val'\]"):
        from_arrays(XS, labels=LABELS, resets_val=RESETS)
