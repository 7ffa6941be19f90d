"""The train step (explicit BPTT vs jax.grad), determinism, exact resume, early stop, truncated
BPTT in the loop, and the embedding gradient from dL/dxs."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close

from perceptron1_jax import checkpoint
from perceptron1_jax.train import (
    TrainConfig,
    WriteFailed,
    _datasets,
    _keys,
    _optimizer,
    get_batch,
    init_run_params,
    load_checkpoint,
    make_train_step,
    make_value_and_grad,
    train,
)

pytestmark = pytest.mark.standard_promotion  # the train step drives optax

TINY = TrainConfig(task="three_step", cell="gru", hidden=8, batch_size=8, num_train=64, num_eval=32, steps=30,
                   eval_every=10, log_every=5, checkpoint_every=10, target_accuracy=0.0, lr=0.02)
AS_LAYERS = {"cell": TrainConfig.cell, "hidden": TrainConfig.hidden}  # with layers=, cell/hidden stay at their defaults


def _quiet(_):
    pass


def _run(cfg, out=None, **kwargs):
    return train(cfg, out, progress=False, log=_quiet, check_grads=False, **kwargs)


@pytest.mark.parametrize("task, cell", [("three_step", "lstm"), ("parity", "gru"), ("chars", "elman")])
def test_train_step_from_bptt_equals_jax_grad(x64, task, cell):
    cfg = dataclasses.replace(TINY, task=task, cell=cell, dtype="float64", seq_len=None, clip=0.5)
    _, k_init, k_train, k_eval, k_shuffle = _keys(cfg)
    data, _ = _datasets(cfg, k_train, k_eval)
    params, optimizer = init_run_params(k_init, cfg), _optimizer(cfg)
    states = {}
    for grad in ("bptt", "autodiff"):
        step = make_train_step(dataclasses.replace(cfg, grad=grad), optimizer)
        p, s = params, optimizer.init(params)
        for i in range(4):
            p, s, metrics = step(p, s, get_batch(data, k_shuffle, i, cfg.batch_size))
        states[grad] = (p, s, metrics)
    assert_trees_close(states["bptt"][0], states["autodiff"][0], rtol=1e-9, atol=1e-12)
    assert set(states["bptt"][2]) == {"loss", "accuracy", "grad_norm", "clipped", "finite"}
    np.testing.assert_allclose(states["bptt"][2]["grad_norm"], states["autodiff"][2]["grad_norm"], rtol=1e-9)


def test_embedding_gradient_comes_from_dxs(x64):
    cfg = dataclasses.replace(TINY, task="chars", cell="lstm", dtype="float64", seq_len=7)
    _, k_init, k_train, k_eval, _ = _keys(cfg)
    data, _ = _datasets(cfg, k_train, k_eval)
    params = init_run_params(k_init, cfg)
    xs, labels = data.xs[:4], data.labels[:4]
    loss, grads, _ = make_value_and_grad(cfg.model_spec, "bptt")(params, xs, labels)
    ref_loss, ref_grads, _ = make_value_and_grad(cfg.model_spec, "autodiff")(params, xs, labels)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-7, atol=1e-14)
    assert float(jnp.abs(grads["embed"]).sum()) > 0


def test_clipped_metric_fires_only_above_the_bound():
    base = dataclasses.replace(TINY, steps=1)
    _, k_init, k_train, k_eval, k_shuffle = _keys(base)
    data, _ = _datasets(base, k_train, k_eval)
    params = init_run_params(k_init, base)
    batch = get_batch(data, k_shuffle, 0, base.batch_size)
    for clip, fired in ((1e-6, True), (1e6, False)):
        cfg = dataclasses.replace(base, clip=clip)
        optimizer = _optimizer(cfg)
        _, _, metrics = make_train_step(cfg, optimizer)(params, optimizer.init(params), batch)
        assert bool(metrics["clipped"]) is fired
    cfg = dataclasses.replace(base, clip_value=1e-6)
    optimizer = _optimizer(cfg)
    assert bool(make_train_step(cfg, optimizer)(params, optimizer.init(params), batch)[2]["clipped"])


def test_same_seed_same_params_bit_for_bit():
    a, b = _run(TINY), _run(TINY)
    assert_trees_close(a.params, b.params, rtol=0, atol=0)
    c = _run(dataclasses.replace(TINY, seed=1))
    assert not np.array_equal(a.params["layers"][0]["fwd"]["W_h"], c.params["layers"][0]["fwd"]["W_h"])


def test_resume_continues_exactly(tmp_path):
    straight = _run(TINY, tmp_path / "straight")
    first = _run(dataclasses.replace(TINY, steps=10), tmp_path / "split")
    assert first.step == 10
    resumed = _run(TINY, tmp_path / "split", resume=True)
    assert resumed.step == 30
    assert_trees_close(resumed.params, straight.params, rtol=0, atol=0)
    assert_trees_close(resumed.opt_state, straight.opt_state, rtol=0, atol=0)
    loaded = load_checkpoint(tmp_path / "split")
    assert loaded["step"] == 30 and loaded["config"] == TINY
    assert_trees_close(loaded["params"], straight.params, rtol=0, atol=0)
    assert_trees_close(loaded["opt_state"], straight.opt_state, rtol=0, atol=0)
    records = [json.loads(line) for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval_accuracy" in r] == [10, 20, 30]
    # Resuming a finished run does nothing more.
    again = _run(TINY, tmp_path / "split", resume=True)
    assert again.step == 30 and again.history == []


def test_resume_refuses_a_different_model(tmp_path):
    _run(dataclasses.replace(TINY, steps=10), tmp_path)
    with pytest.raises(ValueError, match="hidden: expected 8 as in the checkpoint being resumed, got 16"):
        _run(dataclasses.replace(TINY, hidden=16), tmp_path, resume=True)


def test_corrupted_checkpoint_is_reported_and_the_previous_one_is_used(tmp_path):
    _run(dataclasses.replace(TINY, steps=20), tmp_path)
    newest, older = checkpoint.list_checkpoints(tmp_path)[:2]
    blob = newest.read_bytes()
    newest.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(checkpoint.CheckpointError, match="checksum mismatch"):
        load_checkpoint(newest)
    flipped = bytearray(older.read_bytes())
    messages = []
    state = train(TINY, tmp_path, resume=True, progress=False, log=messages.append, check_grads=False)
    assert any("ckpt_00000020" in m and "checksum" in m for m in messages)
    assert any("resumed from" in m and "ckpt_00000010" in m for m in messages)
    assert state.step == 30
    flipped[-1] ^= 0xFF
    older.write_bytes(bytes(flipped))
    with pytest.raises(checkpoint.CheckpointError, match="checksum mismatch"):
        checkpoint.read_checkpoint(older)
    (tmp_path / "junk.msgpack").write_bytes(b"hello")
    with pytest.raises(checkpoint.CheckpointError, match="bad header"):
        checkpoint.read_checkpoint(tmp_path / "junk.msgpack")


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    _run(dataclasses.replace(TINY, steps=10), tmp_path)
    good = checkpoint.list_checkpoints(tmp_path)
    assert [p.name for p in good] == ["ckpt_00000010.msgpack"]

    def crash(*_):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", crash)
    with pytest.raises(WriteFailed, match="cannot write a checkpoint in .*: disk full; stopped at step 20, the "
                                          "checkpoint of step 10 is intact"):
        _run(dataclasses.replace(TINY, steps=20), tmp_path, resume=True)
    assert checkpoint.list_checkpoints(tmp_path) == good
    assert sorted(p.name for p in tmp_path.iterdir() if "ckpt" in p.name) == ["ckpt_00000010.msgpack"]
    assert checkpoint.read_checkpoint(good[0])["step"] == 10


def test_early_stop_at_target():
    cfg = dataclasses.replace(TINY, cell="lstm", hidden=32, num_train=512, steps=400, lr=0.01, target_accuracy=0.95,
                              eval_every=20)
    state = _run(cfg)
    assert state.stopped_early and state.step < 400
    assert state.history[-1]["eval_accuracy"] >= 0.95


@pytest.mark.parametrize("task, k1, k2, seq_len", [("parity", 4, 8, 16), ("copy", 12, 5, 12)])
def test_truncated_training_runs(task, k1, k2, seq_len):
    cfg = dataclasses.replace(TINY, task=task, seq_len=seq_len, tbptt_k1=k1, tbptt_k2=k2, steps=6, eval_every=3)
    state = _run(cfg)
    assert state.step == 6
    losses = [r["loss"] for r in state.history if "loss" in r]
    assert all(np.isfinite(losses))


def test_bad_configs():
    from perceptron1_jax.train import check_config, config_from_dict

    with pytest.raises(ValueError, match="task: expected one of"):
        check_config(dataclasses.replace(TINY, task="mnist"))
    with pytest.raises(ValueError, match="lr: expected a positive number, got 0"):
        check_config(dataclasses.replace(TINY, lr=0))
    with pytest.raises(ValueError, match="num_train: expected at least batch_size"):
        check_config(dataclasses.replace(TINY, num_train=4))
    with pytest.raises(ValueError, match="k1: expected a divisor"):
        check_config(dataclasses.replace(TINY, task="parity", seq_len=10, tbptt_k1=3))
    with pytest.raises(ValueError, match="tbptt_k1: truncated BPTT supports the float-input tasks"):
        check_config(dataclasses.replace(TINY, task="chars", seq_len=8, tbptt_k1=4))
    with pytest.raises(ValueError, match="config: unknown keys \\['hiden'\\]"):
        config_from_dict({"hiden": 3})
    with pytest.raises(ValueError, match="compute_dtype: expected one of \\['bfloat16'\\], got 'float16'"):
        check_config(dataclasses.replace(TINY, compute_dtype="float16"))
    with pytest.raises(ValueError, match="compute_dtype: expected dtype float32 .* got dtype float64"):
        check_config(dataclasses.replace(TINY, compute_dtype="bfloat16", dtype="float64"))
    with pytest.raises(ValueError, match="compute_dtype: truncated BPTT computes in the parameters' dtype"):
        check_config(dataclasses.replace(TINY, task="copy", compute_dtype="bfloat16", tbptt_k1=5))


@pytest.mark.standard_promotion
def test_bfloat16_compute_trains_float32_params():
    state = _run(dataclasses.replace(TINY, compute_dtype="bfloat16", steps=6, eval_every=3))
    assert state.step == 6 and all(a.dtype == np.float32 for a in jax.tree.leaves(state.params))
    assert all(np.isfinite(r["loss"]) for r in state.history if "loss" in r)


def test_layered_model_with_dropout_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(TINY, task="chars", seq_len=5, **AS_LAYERS, layers="gru:6,lstm:4", bidirectional=True,
                              dropout=0.3,
                              embed_size=3, steps=12, eval_every=6, checkpoint_every=6)
    straight = _run(cfg, tmp_path / "straight")
    _run(dataclasses.replace(cfg, steps=6), tmp_path / "split")
    resumed = _run(cfg, tmp_path / "split", resume=True)
    assert_trees_close(resumed.params, straight.params, rtol=0, atol=0)
    assert set(straight.params) == {"embed", "layers", "head"} and set(straight.params["layers"][1]) == {"fwd", "bwd"}
    # (That dropout really drops units is test_model_bptt.py::test_dropout_masks_change_the_loss.)


def test_train_step_of_a_layered_model_equals_jax_grad(x64):
    cfg = dataclasses.replace(TINY, task="parity", **AS_LAYERS, layers="lstm:4,elman:3", bidirectional=True,
                              dropout=0.25,
                              dtype="float64", seq_len=6)
    _, k_init, k_train, k_eval, k_shuffle = _keys(cfg)
    data, _ = _datasets(cfg, k_train, k_eval)
    params = init_run_params(k_init, cfg)
    batch, key = get_batch(data, k_shuffle, 0, cfg.batch_size), jax.random.key(3)
    ours = make_value_and_grad(cfg.model_spec, "bptt")(params, *batch[:2], key)
    ref = make_value_and_grad(cfg.model_spec, "autodiff")(params, *batch[:2], key)
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-12)
    assert_trees_close(ours[1], ref[1], rtol=1e-6, atol=1e-14)


def test_runs_of_one_program_share_one_step():
    """train() builds its step through run_step: configs that differ only where the program does not
    (seed, evaluation, logging) get the same jitted step; any field the program reads gives another."""
    from perceptron1_jax.parallel import make_mesh
    from perceptron1_jax.training.step import STEP_FIELDS, run_step

    spec, mesh = TINY.model_spec, make_mesh()
    optimizer, step = run_step(TINY, spec, mesh)
    same = dataclasses.replace(TINY, seed=3, eval_every=7, log_every=3, checkpoint_every=4, num_train=128)
    assert run_step(same, spec, mesh)[1] is step
    changed = {"grad": "autodiff", "optimizer": "sgd", "lr": 0.03, "momentum": 0.5, "clip": 1.0, "clip_value": 0.5,
               "schedule": "cosine", "steps": 31, "warmup_steps": 2, "tbptt_k1": 3, "compute_dtype": "bfloat16",
               "weight_decay": 0.01, "gradient": "snap1"}
    assert sorted(changed) == sorted(set(STEP_FIELDS) - {"tbptt_k2", "online_every", "stream"})
    for name, value in changed.items():
        assert run_step(dataclasses.replace(TINY, **{name: value}), spec, mesh)[1] is not step, name
    truncated = run_step(dataclasses.replace(TINY, tbptt_k1=3), spec, mesh)[1]
    assert run_step(dataclasses.replace(TINY, tbptt_k1=3, tbptt_k2=2), spec, mesh)[1] is not truncated
    online = run_step(dataclasses.replace(TINY, gradient="snap1"), spec, mesh)[1]
    every = run_step(dataclasses.replace(TINY, gradient="snap1", online_every=1), spec, mesh)[1]
    assert every is not online
    streamed = run_step(dataclasses.replace(TINY, gradient="snap1", online_every=1, stream=True), spec, mesh)[1]
    assert streamed is not every
    other_spec = dataclasses.replace(TINY, hidden=9).model_spec
    assert run_step(TINY, other_spec, mesh)[1] is not step
    # The shared step trains exactly as a freshly built one.
    _, k_init, k_train, k_eval, k_shuffle = _keys(TINY)
    data, _ = _datasets(TINY, k_train, k_eval)
    params = init_run_params(k_init, TINY)
    batch = get_batch(data, k_shuffle, 0, TINY.batch_size)
    fresh = make_train_step(TINY, _optimizer(TINY), spec, mesh)(params, _optimizer(TINY).init(params), batch)
    shared = step(params, optimizer.init(params), batch)
    assert_trees_close(shared[0], fresh[0], rtol=0, atol=0)


def test_keep_best_keeps_the_checkpoint_of_the_lowest_evaluation_loss_across_a_resume(tmp_path):
    cfg = dataclasses.replace(TINY, keep_best=True, steps=60, eval_every=5, checkpoint_every=20, lr=0.2,
                              target_accuracy=0.0)
    straight = tmp_path / "straight"
    _run(cfg, straight)
    evals = [r for r in map(json.loads, (straight / "metrics.jsonl").read_text().splitlines()) if "eval_loss" in r]
    best = min(evals, key=lambda r: r["eval_loss"])
    saved = checkpoint.read_checkpoint(straight / checkpoint.BEST)
    assert saved["best"] == {"step": best["step"], "eval_loss": best["eval_loss"]} and saved["step"] == best["step"]
    assert best["step"] < 60  # the last step is not the best: lr 0.2 overshoots (else the test shows nothing)
    loaded = load_checkpoint(straight / checkpoint.BEST)
    again = _run(dataclasses.replace(cfg, steps=best["step"], keep_best=False))
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(loaded["params"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert load_checkpoint(straight)["step"] == 60  # the newest periodic checkpoint is still what resumes
    split = tmp_path / "split"
    _run(dataclasses.replace(cfg, steps=30), split)
    _run(cfg, split, resume=True)
    assert checkpoint.read_checkpoint(split / checkpoint.BEST)["best"] == saved["best"]
    assert len(list(split.glob("ckpt_*.msgpack"))) == 3 and (split / "ckpt_00000060.msgpack").exists()  # kept 3


def test_the_default_mesh_splits_a_batch_only_where_that_was_measured_to_pay():
    from perceptron1_jax.spec import LayerSpec, ModelSpec
    from perceptron1_jax.training.step import default_device_count, step_matrix_flops

    lstm = ModelSpec([LayerSpec("lstm", 128)], 10, input_size=32)
    assert step_matrix_flops(lstm, 32) == 2 * 32 * (32 * 512 + 128 * 512)  # x_t W_x + h W_h
    wide = ModelSpec([LayerSpec("lstm", 512)], 10, input_size=32)  # 71 MFLOP per device and step: 1.04x split
    two_bi = ModelSpec([LayerSpec("lstm", 512, True), LayerSpec("lstm", 512, True)], 10, input_size=32)  # 201: 0.93x
    assert step_matrix_flops(two_bi, 32) == 2 * 32 * (1024 + 512) * 2048  # the second layer reads 2H features
    assert [default_device_count(s, 64, 2, "cpu") for s in (lstm, wide, two_bi)] == [2, 2, 1]
    assert default_device_count(two_bi, 64, 2, "gpu") == 2 and default_device_count(two_bi, 64, 2, "cpu", 2) == 2
    assert default_device_count(two_bi, 63, 2, "cpu") == 2  # a batch the devices do not divide: refused by name later
    mingru = ModelSpec([LayerSpec("mingru", 512)], 10, input_size=32)  # no W_h: the input projection alone
    assert step_matrix_flops(mingru, 32) == 2 * 32 * 32 * 1024


def test_the_default_placement_puts_directions_on_two_cpu_devices_only_where_measured():
    from perceptron1_jax.spec import LayerSpec, ModelSpec
    from perceptron1_jax.training.step import default_placement

    two_bi = ModelSpec([LayerSpec("lstm", 512, True), LayerSpec("lstm", 512, True)], 10, input_size=32)
    mixed = ModelSpec([LayerSpec("lstm", 128, True), LayerSpec("gru", 128)], 10, input_size=32)
    associative = ModelSpec([LayerSpec("mingru", 128, True, scan="associative")], 10, input_size=32)
    lstm = ModelSpec([LayerSpec("lstm", 128)], 10, input_size=32)
    bi = ModelSpec([LayerSpec("gru", 512, True)], 10, input_size=32)
    assert [default_placement(bi, b, 2, "cpu") for b in (16, 63, 64)] == ["directions"] * 3  # one layer: any batch
    assert default_placement(two_bi, 16, 2, "cpu") == "directions"  # stacked: 1.04x-1.23x at B16
    assert default_placement(two_bi, 64, 2, "cpu") == "one device"  # stacked at B64: a tie; the size rule's pick
    assert [default_placement(two_bi, 16, 4, "cpu"), default_placement(two_bi, 16, 2, "gpu"),
            default_placement(two_bi, 16, 2, "cpu", 2)] == ["batch split"] * 3  # not measured: the split
    assert default_placement(two_bi, 64, 1, "cpu") == "one device"
    assert [default_placement(s, 64, 2, "cpu") for s in (mixed, associative, lstm)] == ["batch split"] * 3
