"""The associative scan of linear recurrences (LayerSpec(..., scan="associative")): forward and
explicit backward equal to the sequential path in float64 at rtol 1e-10 over the model grid (depth,
directions, lengths, readouts, losses, T = 1, batch = 1), for minGRU, minLSTM and a user cell that
declares h' = a * h + b (with and without a hand-written backward); truncated BPTT, training and
every refusal named."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS
from perceptron1_jax.cli import describe_spec, main
from perceptron1_jax.truncated import run_windows

# ------------------------------------------ a gated diagonal linear recurrence: h' = a(x) * h + x W_b


def diag_shapes(input_size, hidden_size):
    return {"W_a": (input_size, hidden_size), "b_a": (hidden_size,), "W_b": (input_size, hidden_size)}


def diag_init(key, input_size, hidden_size, dtype):
    k_a, k_b = jax.random.split(key)
    scale = 1.0 / float(np.sqrt(input_size))  # a Python float: the arrays keep the dtype asked for
    return {"W_a": jax.random.normal(k_a, (input_size, hidden_size), dtype) * scale,
            "b_a": jnp.ones((hidden_size,), dtype),
            "W_b": jax.random.normal(k_b, (input_size, hidden_size), dtype) * scale}


def diag_linear(params, x):
    return jax.nn.sigmoid(x @ params["W_a"] + params["b_a"]), x @ params["W_b"]


def diag_step(params, carry, x):
    a, b = diag_linear(params, x)
    return (a * carry[0] + b,)


def diag_backward(params, carry_prev, x, dcarry):
    """``da = dh' * h``, ``dz_a = da * a (1 - a)``; ``dW_a = x^T dz_a``, ``db_a = sum dz_a``,
    ``dW_b = x^T dh'``; ``dh = dh' * a``, ``dx = dz_a W_a^T + dh' W_b^T``."""
    (h,) = carry_prev
    (dh,) = dcarry
    a, _ = diag_linear(params, x)
    dz_a = dh * h * a * (1 - a)
    grads = {"W_a": x.T @ dz_a, "b_a": jnp.sum(dz_a, axis=0), "W_b": x.T @ dh}
    return grads, (dh * a,), dz_a @ params["W_a"].T + dh @ params["W_b"].T


USER = {"diag": None, "diag_hand": diag_backward}


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The user cells, registered for this module only (other modules iterate CELLS)."""
    for name, backward in USER.items():
        p1.register_cell(p1.custom_cell(name, diag_shapes, diag_init, diag_step, backward=backward,
                                        linear=diag_linear))
    yield
    for name in USER:
        CELLS.pop(name)


GRID = [  # (layers as (size, bidirectional), many_to_many, loss, lengths, batch, time)
    (((5, False),), False, "cross_entropy", True, 3, 7),
    (((4, True), (3, False)), True, "cross_entropy", True, 2, 9),
    (((3, False), (4, True)), False, "mse", False, 1, 1),
    (((4, True),), True, "mse", True, 3, 4),
    (((2, False), (3, False)), False, "cross_entropy", False, 1, 16),
]


def _spec(cell, layers, many_to_many, loss, scan):
    return p1.ModelSpec([p1.LayerSpec(cell, size, bidirectional=bi, scan=scan) for size, bi in layers],
                        num_outputs=3, input_size=2, loss=loss, many_to_many=many_to_many)


@pytest.mark.parametrize("cell", ["mingru", "minlstm", *USER])
@pytest.mark.parametrize("case", range(len(GRID)))
def test_the_associative_scan_equals_the_sequential_one(x64, cell, case):
    layers, many_to_many, loss, with_lengths, batch, time = GRID[case]
    sequential, associative = (_spec(cell, layers, many_to_many, loss, scan) for scan in ("sequential", "associative"))
    params, xs, targets, lengths = random_model(case, sequential, batch, time, with_lengths=with_lengths)
    np.testing.assert_allclose(p1.model_apply(params, xs, associative, lengths),
                               p1.model_apply(params, xs, sequential, lengths), rtol=1e-10, atol=1e-14)
    value, grads, extras = p1.model_bptt(params, xs, targets, associative, lengths, return_extras=True)
    ref_value, ref_grads, ref_extras = p1.model_bptt(params, xs, targets, sequential, lengths, return_extras=True)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-10, atol=1e-14)
    assert_trees_close(extras, ref_extras, rtol=1e-10, atol=1e-14)  # every dL/dh_t, dL/dx and dL/dh0
    autodiff = jax.grad(p1.model_loss)(params, xs, targets, associative, lengths)  # through associative_scan
    assert_trees_close(autodiff, ref_grads, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("cell", ["mingru", "diag_hand"])
def test_truncated_bptt_and_gradient_flow_take_the_associative_scan(x64, cell):
    layers = ((3, False), (4, False))
    sequential, associative = (_spec(cell, layers, True, "cross_entropy", s) for s in ("sequential", "associative"))
    params, xs, targets, _ = random_model(4, sequential, 2, 12)
    _, windows, _ = run_windows(params, xs, targets, associative, k1=4, k2=6)
    _, reference, _ = run_windows(params, xs, targets, sequential, k1=4, k2=6)
    for (_, loss, grads), (_, ref_loss, ref_grads) in zip(windows, reference, strict=True):
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        assert_trees_close(grads, ref_grads, rtol=1e-10, atol=1e-14)
    flows = p1.model_gradient_flow(params, xs, targets, associative)
    ref_flows = p1.model_gradient_flow(params, xs, targets, sequential)
    np.testing.assert_allclose(flows[0]["fwd"].dh_norm, ref_flows[0]["fwd"].dh_norm, rtol=1e-10)


@pytest.mark.standard_promotion  # optax
def test_training_with_the_associative_scan_follows_the_sequential_run(x64, tmp_path):
    runs = {}
    for scan in ("sequential", "associative"):
        cfg = p1.TrainConfig(task="adding", seq_len=12, layers="minlstm:8,mingru:8", scan=scan, steps=5,
                             eval_every=5, batch_size=16, num_train=64, num_eval=32, dtype="float64",
                             target_accuracy=0.0)
        runs[scan] = p1.train(cfg, tmp_path / scan, progress=False, log=lambda _: None)  # checks grads too
    assert_trees_close(runs["associative"].params, runs["sequential"].params, rtol=1e-8, atol=1e-12)
    assert p1.load_run(tmp_path / "associative").spec.layers[1].scan == "associative"
    # The scan is how time is walked, not the model: a sequential run resumes with the associative scan.
    quiet = {"progress": False, "log": lambda _: None}
    p1.train(dataclasses.replace(cfg, scan="sequential", steps=3), tmp_path / "switched", **quiet)
    resumed = p1.train(cfg, tmp_path / "switched", resume=True, **quiet)
    assert resumed.step == 5
    assert_trees_close(resumed.params, runs["sequential"].params, rtol=1e-8, atol=1e-12)


def test_what_the_associative_scan_refuses_is_named(capsys):
    with pytest.raises(ValueError, match=r"scan: 'associative' needs a cell whose recurrence is linear in h "
                                         r"\(one of \[.*'mingru', 'minlstm'\]\), got cell 'lstm'"):
        p1.LayerSpec("lstm", 4, scan="associative")
    with pytest.raises(ValueError, match=r"scan: expected one of \['sequential', 'associative'\], got 'parallel'"):
        p1.LayerSpec("mingru", 4, scan="parallel")
    spec = _spec("mingru", ((3, False),), False, "cross_entropy", "associative")
    params, xs, targets, _ = random_model(0, spec, 2, 4, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"lean: expected None for a layer with scan='associative'.*got 2"):
        p1.model_bptt(params, xs, targets, spec, lean=2)
    assert describe_spec(spec) == "mingru:3 (associative scan) -> cross_entropy head (3)"
    assert main(["train", "--cell", "gru", "--scan", "associative"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("perceptron1: error: scan: 'associative' needs a cell") and len(err.splitlines()) == 1


def test_a_linear_declaration_is_checked_against_the_step():
    with pytest.raises(ValueError, match=r"cell 'bad': linear: expected a \* h \+ b to equal step"):
        p1.custom_cell("bad", diag_shapes, diag_init, diag_step,
                       linear=lambda p, x: (diag_linear(p, x)[0], 0 * x @ p["W_b"]))
    with pytest.raises(ValueError, match=r"cell 'bad': linear: \(a, b\)\[1\]: expected float32\[2, 4\]"):
        p1.custom_cell("bad", diag_shapes, diag_init, diag_step, linear=lambda p, x: (diag_linear(p, x)[0], x))
    with pytest.raises(ValueError, match=r"cell 'bad': linear: expected carry_size 1 \(h' = a \* h \+ b\), got 2"):
        p1.custom_cell("bad", diag_shapes, diag_init, lambda p, c, x: c, carry_size=2, linear=diag_linear)
    assert "bad" not in CELLS
