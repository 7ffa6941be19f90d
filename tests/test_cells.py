"""Cells: the hand-written local backward against jax.vjp of the forward step, the forward step
against Flax linen's cells with mapped weights (an independent implementation), and the
initializers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_problem

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS, cell_step, project_inputs
from perceptron1_jax.interop import from_flax, to_flax

CELL_NAMES = sorted(CELLS)
FLAX_CELLS = {"elman": [nn.SimpleCell], "lstm": [nn.LSTMCell, nn.OptimizedLSTMCell], "gru": [nn.GRUCell]}


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("batch, input_size, hidden", [(1, 1, 1), (3, 2, 4), (2, 5, 3)])
def test_backward_step_equals_vjp_of_step(x64, cell, batch, input_size, hidden):
    spec = CELLS[cell]
    params, xs, _, _ = random_problem(batch * 10 + hidden, cell, batch, 1, input_size, hidden, 2)
    cell_params = params["cell"]
    rng = np.random.default_rng(hidden)
    carry = tuple(jnp.asarray(rng.standard_normal((batch, hidden))) for _ in range(spec.carry_size))
    zx = project_inputs(spec, cell_params, xs[:, 0])

    recurrent = "W_h" in cell_params  # minGRU and minLSTM have none: their dzh is zero
    w_h = cell_params["W_h"] if recurrent else jnp.zeros((hidden, spec.num_gates * hidden), zx.dtype)

    def forward(zx, carry, w_h):
        new_carry, _ = spec.step({**cell_params, "W_h": w_h} if recurrent else cell_params, carry, zx)
        return new_carry

    new_carry, vjp = jax.vjp(forward, zx, carry, w_h)
    _, residuals = spec.step(cell_params, carry, zx)
    dcarry = tuple(jnp.asarray(rng.standard_normal((batch, hidden))) for _ in range(spec.carry_size))
    dzx, dzh_part, dprev = spec.backward_step(cell_params, carry, new_carry, residuals, dcarry)
    dzh = spec.full_dzh(dzx, dzh_part)
    ref_dzx, ref_dprev, ref_dwh = vjp(dcarry)
    np.testing.assert_allclose(dzx, ref_dzx, rtol=1e-12, atol=1e-14)
    assert_trees_close(dprev, ref_dprev, rtol=1e-12, atol=1e-14)
    # The recurrent pre-activation gradient reproduces dW_h = h^T dZh.
    np.testing.assert_allclose(carry[0].T @ dzh, ref_dwh, rtol=1e-12, atol=1e-14)


def _flax_carry(cell, carry):
    return (carry[1], carry[0]) if cell == "lstm" else carry[0]


@pytest.mark.parametrize("cell", sorted(FLAX_CELLS))
def test_step_equals_flax_cells_with_mapped_weights(x64, cell):
    params, xs, _, _ = random_problem(1, cell, 3, 1, 4, 5, 2)
    cell_params = params["cell"]
    rng = np.random.default_rng(0)
    carry = tuple(jnp.asarray(rng.standard_normal((3, 5))) for _ in range(CELLS[cell].carry_size))
    ours = cell_step(CELLS[cell], cell_params, carry, xs[:, 0])
    for flax_cell in FLAX_CELLS[cell]:
        module = flax_cell(features=5, param_dtype=jnp.float64)
        new_carry, out = module.apply({"params": to_flax(cell, cell_params)}, _flax_carry(cell, carry), xs[:, 0])
        np.testing.assert_allclose(out, ours[0], rtol=1e-12, atol=1e-14)
        assert_trees_close(new_carry, _flax_carry(cell, ours), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("cell", sorted(FLAX_CELLS))
def test_flax_round_trip(cell):
    module = FLAX_CELLS[cell][0](features=3)
    x = jnp.arange(1.0, 5.0).reshape(2, 2)
    carry = module.initialize_carry(jax.random.key(0), x.shape)
    flax_params = module.init(jax.random.key(1), carry, x)["params"]
    ours = from_flax(cell, flax_params)
    back = to_flax(cell, ours)
    assert_trees_close(back, flax_params, rtol=0, atol=0)


@pytest.mark.parametrize("cell", CELL_NAMES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_init_shapes_dtypes_and_defaults(cell, dtype):
    params = p1.init_params(jax.random.key(0), cell, 3, 4, 5, dtype=dtype)
    gates = CELLS[cell].num_gates
    expected = CELLS[cell].param_shapes(3, 4)
    assert {k: v.shape for k, v in params["cell"].items()} == expected
    assert params["readout"]["W"].shape == (4, 5) and params["readout"]["b"].shape == (5,)
    assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(params))
    if cell in ("mingru", "minlstm"):  # no W_h; zero biases
        np.testing.assert_array_equal(np.asarray(params["cell"]["b"], np.float64), 0.0)
        return
    w_h = np.asarray(params["cell"]["W_h"], np.float64)
    for k in range(gates):  # each gate block of W_h is orthogonal
        block = w_h[:, 4 * k : 4 * (k + 1)]
        np.testing.assert_allclose(block.T @ block, np.eye(4), atol=1e-5 if dtype == jnp.float32 else 5e-2)
    if cell != "elman":  # the forget gate (LSTM f, GRU update gate z) starts open: bias 1
        bias = np.asarray(params["cell"]["b" if cell == "lstm" else "b_x"], np.float64)
        np.testing.assert_array_equal(bias[4:8], 1.0)
        np.testing.assert_array_equal(np.delete(bias, np.s_[4:8]), 0.0)
    if cell == "gru":
        np.testing.assert_array_equal(np.asarray(params["cell"]["b_h"], np.float64), 0.0)


def test_init_is_a_pure_function_of_the_key():
    a = p1.init_params(jax.random.key(3), "gru", 2, 3, 4)
    b = p1.init_params(jax.random.key(3), "gru", 2, 3, 4)
    c = p1.init_params(jax.random.key(4), "gru", 2, 3, 4)
    assert_trees_close(a, b, rtol=0, atol=0)
    assert not np.allclose(a["cell"]["W_x"], c["cell"]["W_x"])
    legacy = p1.init_params(jax.random.PRNGKey(3), "gru", 2, 3, 4)
    assert legacy["cell"]["W_x"].shape == (2, 9)


def test_mingru_and_minlstm_have_no_recurrent_matrix_and_say_so_where_one_is_needed():
    from perceptron1_jax.cli import CELL_NAMES
    from perceptron1_jax.interop import to_flax

    assert set(CELL_NAMES) == set(CELLS)
    for cell in ("mingru", "minlstm"):
        params = p1.init_params(jax.random.key(0), cell, 3, 4, 2)
        assert set(params["cell"]) == {"W_x", "b"} and params["cell"]["W_x"].shape == (3, CELLS[cell].num_gates * 4)
        with pytest.raises(ValueError, match="params: expected cells with a recurrent matrix W_h"):
            p1.set_spectral_radius(params, 0.9)
        with pytest.raises(ValueError, match=f"cell: expected one of \\['elman', 'lstm', 'gru'\\] \\(Flax linen has "
                                             f"no {cell} cell\\)"):
            to_flax(cell, params["cell"])


def test_mingru_is_linear_in_h_with_gates_from_x_alone(x64):
    """h' = (1 - z) h + z h~ with z and h~ from x: doubling h's deviation from h~ doubles h' - h~."""
    params = p1.init_params(jax.random.key(1), "mingru", 3, 4, 2, dtype=jnp.float64)["cell"]
    params = {**params, "b": params["b"] + 0.3}
    x = jax.random.normal(jax.random.key(2), (2, 3), jnp.float64)
    h = jax.random.normal(jax.random.key(3), (2, 4), jnp.float64)
    zx = project_inputs(CELLS["mingru"], params, x)
    z, candidate = jax.nn.sigmoid(zx[:, :4]), zx[:, 4:]
    (new,), _ = CELLS["mingru"].step(params, (h,), zx)
    np.testing.assert_allclose(new, (1 - z) * h + z * candidate, rtol=1e-14)
    minlstm = p1.init_params(jax.random.key(1), "minlstm", 3, 4, 2, dtype=jnp.float64)["cell"]
    (new_l,), _ = CELLS["minlstm"].step(minlstm, (h,), jnp.concatenate([zx, zx[:, :4]], axis=-1))
    f, i = jax.nn.sigmoid(zx[:, :4]), jax.nn.sigmoid(zx[:, 4:])
    np.testing.assert_allclose(new_l, (f * h + i * zx[:, :4]) / (f + i), rtol=1e-14)
