"""Cells of your own (custom_cell, register_cell): an elementwise recurrence (IndRNN) and a cell of
two carries (a peephole LSTM), each with and without a hand-written local backward, through the
explicit BPTT of the model grid (depth, directions, lengths, readouts, losses, lean, truncated, a
mesh, gradient flow, training) against jax.grad in float64; every contract error named."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS
from perceptron1_jax.truncated import run_windows

# ---------------------------------------------------------------- IndRNN: h' = tanh(x W + u * h + b)


def ind_shapes(input_size, hidden_size):
    return {"W": (input_size, hidden_size), "u": (hidden_size,), "b": (hidden_size,)}


def ind_init(key, input_size, hidden_size, dtype):
    k_w, k_u = jax.random.split(key)
    return {"W": (jax.random.normal(k_w, (input_size, hidden_size)) / np.sqrt(input_size)).astype(dtype),
            "u": jax.random.uniform(k_u, (hidden_size,), dtype, 0.2, 0.9), "b": jnp.zeros((hidden_size,), dtype)}


def ind_step(params, carry, x):
    (h,) = carry
    return (jnp.tanh(x @ params["W"] + params["u"] * h + params["b"]),)


def ind_backward(params, carry_prev, x, dcarry):
    """``da = dh' (1 - h'^2)``; ``dW = x^T da``, ``du = sum da h``, ``db = sum da``; ``dh = da u``, ``dx = da W^T``."""
    (h,) = carry_prev
    (new_h,) = ind_step(params, carry_prev, x)
    da = dcarry[0] * (1 - new_h * new_h)
    grads = {"W": x.T @ da, "u": jnp.sum(da * h, axis=0), "b": jnp.sum(da, axis=0)}
    return grads, (da * params["u"],), da @ params["W"].T


# ---------------------------------------------------------------- peephole LSTM: carry (h, c)


def peep_shapes(input_size, hidden_size):
    return {"W": (input_size, 4 * hidden_size), "U": (hidden_size, 4 * hidden_size), "b": (4 * hidden_size,),
            "p_i": (hidden_size,), "p_f": (hidden_size,), "p_o": (hidden_size,)}


def peep_init(key, input_size, hidden_size, dtype):
    keys = jax.random.split(key, 2)
    return {"W": (jax.random.normal(keys[0], (input_size, 4 * hidden_size)) / np.sqrt(input_size)).astype(dtype),
            "U": (jax.random.normal(keys[1], (hidden_size, 4 * hidden_size)) / np.sqrt(hidden_size)).astype(dtype),
            "b": jnp.zeros((4 * hidden_size,), dtype), **{k: jnp.zeros((hidden_size,), dtype)
                                                           for k in ("p_i", "p_f", "p_o")}}


def _peep_forward(params, carry, x):
    h, c = carry
    zi, zf, zg, zo = jnp.split(x @ params["W"] + h @ params["U"] + params["b"], 4, axis=-1)
    i, f = jax.nn.sigmoid(zi + params["p_i"] * c), jax.nn.sigmoid(zf + params["p_f"] * c)
    g = jnp.tanh(zg)
    new_c = f * c + i * g
    o = jax.nn.sigmoid(zo + params["p_o"] * new_c)
    return (o * jnp.tanh(new_c), new_c), (i, f, g, o)


def peep_step(params, carry, x):
    return _peep_forward(params, carry, x)[0]


def peep_backward(params, carry_prev, x, dcarry):
    """The peephole LSTM's local backward (the peepholes add ``p * c`` terms to the gate inputs)."""
    h, c = carry_prev
    (_, new_c), (i, f, g, o) = _peep_forward(params, carry_prev, x)
    dh, dc_in = dcarry
    tc = jnp.tanh(new_c)
    dzo = dh * tc * o * (1 - o)
    dnew_c = dc_in + dh * o * (1 - tc * tc) + dzo * params["p_o"]
    dzi, dzf, dzg = dnew_c * g * i * (1 - i), dnew_c * c * f * (1 - f), dnew_c * i * (1 - g * g)
    dz = jnp.concatenate([dzi, dzf, dzg, dzo], axis=-1)
    grads = {"W": x.T @ dz, "U": h.T @ dz, "b": jnp.sum(dz, axis=0), "p_i": jnp.sum(dzi * c, axis=0),
             "p_f": jnp.sum(dzf * c, axis=0), "p_o": jnp.sum(dzo * new_c, axis=0)}
    dc = dnew_c * f + dzi * params["p_i"] + dzf * params["p_f"]
    return grads, (dz @ params["U"].T, dc), dz @ params["W"].T


USER_CELLS = {
    "indrnn": (ind_shapes, ind_init, ind_step, 1, None),
    "indrnn_hand": (ind_shapes, ind_init, ind_step, 1, ind_backward),
    "peephole": (peep_shapes, peep_init, peep_step, 2, None),
    "peephole_hand": (peep_shapes, peep_init, peep_step, 2, peep_backward),
}


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The four user cells, registered for this module only (other modules iterate CELLS)."""
    for name, (shapes, init, step, carry_size, backward) in USER_CELLS.items():
        p1.register_cell(p1.custom_cell(name, shapes, init, step, carry_size=carry_size, backward=backward))
    yield
    for name in USER_CELLS:
        CELLS.pop(name)


GRID = [  # (layers as (size, bidirectional), many_to_many, loss, lengths, batch, time)
    (((5, False),), False, "cross_entropy", True, 3, 7),
    (((4, True), (3, False)), True, "cross_entropy", True, 2, 5),
    (((3, False), (4, True)), False, "mse", False, 1, 1),
    (((4, True),), True, "mse", True, 3, 4),
]


def _spec(cell, layers, many_to_many, loss, dropout=0.0):
    return p1.ModelSpec([p1.LayerSpec(cell, size, bidirectional=bi) for size, bi in layers], num_outputs=3,
                        input_size=2, loss=loss, many_to_many=many_to_many, dropout=dropout)


@pytest.mark.parametrize("cell", list(USER_CELLS))
@pytest.mark.parametrize("case", range(len(GRID)))
def test_the_explicit_bptt_of_a_user_cell_equals_jax_grad(x64, cell, case):
    layers, many_to_many, loss, with_lengths, batch, time = GRID[case]
    spec = _spec(cell, layers, many_to_many, loss)
    params, xs, targets, lengths = random_model(case, spec, batch, time, with_lengths=with_lengths)
    value, grads = p1.model_bptt(params, xs, targets, spec, lengths)
    ref_value, ref_grads = jax.value_and_grad(p1.model_loss)(params, xs, targets, spec, lengths)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    assert_trees_close(grads, ref_grads, rtol=1e-6, atol=1e-12)
    if case % 2:  # lean mode recomputes the segments with the same step (two cases: compile time)
        _, lean_grads = p1.model_bptt(params, xs, targets, spec, lengths, lean=2)
        assert_trees_close(lean_grads, grads, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", ["indrnn", "peephole_hand"])
def test_dropout_mesh_truncation_and_gradient_flow_take_a_user_cell(x64, cell):
    spec = _spec(cell, ((4, True), (3, False)), True, "cross_entropy", dropout=0.3)
    params, xs, targets, lengths = random_model(7, spec, 4, 6, with_lengths=True)
    key = jax.random.key(3)
    value, grads = p1.model_bptt(params, xs, targets, spec, lengths, dropout_key=key)
    reference = jax.grad(p1.model_loss)(params, xs, targets, spec, lengths, key)
    assert_trees_close(grads, reference, rtol=1e-6, atol=1e-12)
    _, on_mesh = p1.model_bptt(params, xs, targets, spec, lengths, dropout_key=key, mesh=p1.make_mesh())
    assert_trees_close(on_mesh, grads, rtol=1e-10, atol=1e-14)
    flows = p1.model_gradient_flow(params, xs, targets, spec, lengths)
    assert flows[0]["bwd"].dh_norm.shape == (6,) and bool(jnp.all(jnp.isfinite(flows[1]["fwd"].dh_norm)))
    assert bool(jnp.all(jnp.isnan(flows[0]["fwd"].recurrent_contribution)))  # no W_h: said, not made up
    forward = dataclasses.replace(spec, layers=tuple(dataclasses.replace(s, bidirectional=False)
                                                     for s in spec.layers), dropout=0.0)
    params, xs, targets, _ = random_model(8, forward, 2, 6)
    _, results, _ = run_windows(params, xs, targets, forward, k1=6, k2=6)
    assert_trees_close(results[0][2], p1.model_bptt(params, xs, targets, forward)[1], rtol=1e-10, atol=1e-14)


@pytest.mark.standard_promotion  # optax
def test_a_user_cell_trains_from_python(tmp_path):
    cfg = p1.TrainConfig(task="three_step", layers="peephole_hand:16", steps=200, eval_every=200, log_every=10,
                         batch_size=32, num_train=512, num_eval=128, target_accuracy=0.0)
    state = p1.train(cfg, tmp_path / "run", progress=False, log=lambda _: None)  # checks grads against jax.grad
    losses = [r["loss"] for r in state.history if "loss" in r]
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses  # it learns
    assert p1.load_run(tmp_path / "run").spec.layers[0].cell == "peephole_hand"


def test_contract_errors_name_the_cell_and_the_array():
    with pytest.raises(ValueError, match=r"cell 'indrnn': already registered"):
        p1.register_cell(p1.custom_cell("indrnn", ind_shapes, ind_init, ind_step))
    with pytest.raises(ValueError, match=r"cell 'lstm': already registered"):
        p1.register_cell(p1.custom_cell("lstm", ind_shapes, ind_init, ind_step))
    with pytest.raises(ValueError, match=r"cell 'bad': step: carry\[0\]: expected float32\[2, 4\] .*, got "
                                         r"float32\[2, 3\]"):
        p1.custom_cell("bad", ind_shapes, ind_init, lambda p, c, x: (c[0][:, :3],))
    with pytest.raises(ValueError, match=r"cell 'bad': step: carry: expected the structure"):
        p1.custom_cell("bad", ind_shapes, ind_init, lambda p, c, x: (c[0], c[0]))
    with pytest.raises(ValueError, match=r"cell 'bad': step: expected a tuple of 1 carry arrays"):
        p1.custom_cell("bad", ind_shapes, ind_init, lambda p, c, x: c[0])
    wrong_dx = lambda p, c, x, d: (*ind_backward(p, c, x, d)[:2], x[:, :1])  # noqa: E731
    with pytest.raises(ValueError, match=r"cell 'bad': backward: dx: expected float32\[2, 3\] .*got float32\[2, 1\]"):
        p1.custom_cell("bad", ind_shapes, ind_init, ind_step, backward=wrong_dx)
    wrong_dparams = lambda p, c, x, d: ({**ind_backward(p, c, x, d)[0], "u": jnp.zeros(3)},  # noqa: E731
                                        *ind_backward(p, c, x, d)[1:])
    with pytest.raises(ValueError, match=r"cell 'bad': backward: dparams\['u'\]: expected float32\[4\]"):
        p1.custom_cell("bad", ind_shapes, ind_init, ind_step, backward=wrong_dparams)
    with pytest.raises(ValueError, match=r"cell 'bad': init: params\['b'\]: expected float32\[4\]"):
        p1.custom_cell("bad", ind_shapes, lambda k, i, h, d: {**ind_init(k, i, h, d), "b": jnp.zeros(5, d)}, ind_step)
    with pytest.raises(ValueError, match=r"cell 'bad': carry_size: expected a positive int, got 0"):
        p1.custom_cell("bad", ind_shapes, ind_init, ind_step, carry_size=0)
    assert "bad" not in CELLS
    with pytest.raises(ValueError, match=r"params\['cell'\]: expected the shapes of cell 'indrnn' for input size 3"):
        p1.unroll({"cell": {}}, jnp.zeros((1, 2, 3)), "indrnn")
