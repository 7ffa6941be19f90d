"""The Python API at its edges, each against an independent reference: float16 past 65,504 valid
steps (a float32 run of the same numbers), int8/uint8 lengths past their range (int32 lengths),
NaN past the lengths (the same inputs with zeros there; jax.grad), half-precision parameters
(gradients in each parameter's dtype, close to float32's; lean and the associative scan too),
bfloat16 weights to and from PyTorch's layout, and the custom-cell contract (shapes as lists, an
init that ignores its dtype)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model, random_problem

import perceptron1_jax as p1
from perceptron1_jax import losses
from perceptron1_jax.cells import CELLS
from perceptron1_jax.interop import from_torch, to_torch


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _norm_error(a, b):
    """Largest relative error of the leaves' norms, and whether every leaf is non-zero."""
    pairs = [(float(jnp.linalg.norm(x.astype(jnp.float32))), float(jnp.linalg.norm(y.astype(jnp.float32))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)]
    return max(abs(x - y) / y for x, y in pairs if y > 0), all(x > 0 for x, _ in pairs)


# --------------------------------------------------------------------------- 1. float16 counts


def test_the_weights_of_a_mask_count_in_integers():
    mask = jnp.ones((70_000,), bool).at[:100].set(False)
    weights = losses.position_weights(jnp.zeros((70_000,), jnp.int32), mask, jnp.float16)
    assert weights.dtype == jnp.float16 and float(weights[-1]) == pytest.approx(1 / 69_900, rel=1e-3)
    logits = jax.random.normal(jax.random.key(0), (70_000, 3), jnp.float16)
    labels = jnp.arange(70_000) % 3
    ref = losses.cross_entropy(logits.astype(jnp.float32), labels, mask)
    assert float(losses.cross_entropy(logits, labels, mask)) == pytest.approx(float(ref), rel=1e-2)


def test_float16_many_to_many_past_65504_valid_steps_keeps_its_loss_and_gradients():
    batch, time = 128, 544  # at least 66,560 valid steps
    params, xs, labels, _ = random_problem(0, "gru", batch, time, 2, 3, 4, dtype=jnp.float32, many_to_many=True)
    lengths = jnp.asarray(np.random.default_rng(1).integers(520, time + 1, batch), jnp.int32)
    assert int(lengths.sum()) > 65_504
    ref_loss, ref_grads = p1.bptt(params, xs, labels, "gru", lengths)  # the same numbers in float32
    loss, grads = p1.bptt(_cast(params, jnp.float16), xs.astype(jnp.float16), labels, "gru", lengths)
    assert float(loss) == pytest.approx(float(ref_loss), rel=2e-2)
    error, nonzero = _norm_error(grads, ref_grads)
    assert nonzero and error < 5e-2, error
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3)], 2, input_size=2, loss="mse", many_to_many=True)
    model, _, _, _ = random_model(2, spec, batch, time, dtype=jnp.float32)
    targets = jnp.asarray(np.random.default_rng(3).standard_normal((batch, time, 2)), jnp.float32)
    ref_mse = p1.model_loss(model, xs, targets, spec, lengths)
    mse = p1.model_loss(_cast(model, jnp.float16), xs.astype(jnp.float16), targets.astype(jnp.float16), spec,
                        lengths)
    assert float(mse) == pytest.approx(float(ref_mse), rel=2e-2)


# --------------------------------------------------------------------------- 2. small integer lengths


@pytest.mark.parametrize("dtype, time, values", [(jnp.int8, 200, [100, 127, 3]), (jnp.uint8, 300, [255, 200, 1])])
def test_small_integer_lengths_equal_int32_lengths(dtype, time, values, x64):
    params, xs, labels, _ = random_problem(4, "lstm", 3, time, 2, 3, 4, many_to_many=True)
    wide, narrow = jnp.asarray(values, jnp.int32), jnp.asarray(values, dtype)
    assert_trees_close(p1.bptt(params, xs, labels, "lstm", narrow), p1.bptt(params, xs, labels, "lstm", wide), 0)
    assert_trees_close(p1.unroll(params, xs, "lstm", narrow), p1.unroll(params, xs, "lstm", wide), 0)
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3, bidirectional=True)], 4, input_size=2, many_to_many=True)
    model, _, _, _ = random_model(5, spec, 3, time)
    assert_trees_close(p1.model_bptt(model, xs, labels, spec, narrow), p1.model_bptt(model, xs, labels, spec, wide),
                       0)


# --------------------------------------------------------------------------- 3. NaN past the lengths


def test_nan_past_the_lengths_never_reaches_a_gradient(x64):
    params, xs, labels, _ = random_problem(6, "lstm", 4, 9, 3, 5, 4)
    lengths = jnp.asarray([9, 4, 1, 6], jnp.int32)
    padding = jnp.arange(9, dtype=jnp.int32)[None, :] >= lengths[:, None]
    poisoned = jnp.where(padding[..., None], jnp.nan, xs)
    clean = jnp.where(padding[..., None], 0.0, xs)
    loss, grads = p1.bptt(params, poisoned, labels, "lstm", lengths)
    ref_loss, ref_grads = p1.bptt(params, clean, labels, "lstm", lengths)
    assert_trees_close((loss, grads), (ref_loss, ref_grads), 1e-12)
    autodiff = jax.grad(p1.loss)(params, poisoned, labels, "lstm", lengths)
    assert_trees_close(autodiff, ref_grads, 1e-6)
    via_unroll = jax.grad(lambda p: jnp.sum(p1.unroll_bptt(p, poisoned, "lstm", lengths)[1][0]))(params)
    assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(via_unroll))
    spec = p1.ModelSpec([p1.LayerSpec("gru", 4, bidirectional=True), p1.LayerSpec("elman", 3)], 4, input_size=3)
    model, _, _, _ = random_model(7, spec, 4, 9)
    assert_trees_close(p1.model_bptt(model, poisoned, labels, spec, lengths),
                       p1.model_bptt(model, clean, labels, spec, lengths), 1e-12)


# --------------------------------------------------------------------------- 4. half-precision parameters


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_gradients_come_in_each_parameters_dtype(dtype):
    params, xs, labels, _ = random_problem(8, "lstm", 4, 8, 3, 6, 4, dtype=jnp.float32)
    half, half_xs = _cast(params, dtype), xs.astype(dtype)
    _, ref = p1.bptt(params, xs, labels, "lstm")
    for kwargs in ({}, {"lean": 3}, {"mesh": p1.make_mesh()}):
        _, grads = p1.bptt(half, half_xs, labels, "lstm", **kwargs)
        assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(dtype)}, kwargs
        error, nonzero = _norm_error(grads, ref)
        assert nonzero and error < 5e-2, (kwargs, error)
        stepped = jax.tree.map(lambda p, g: p - 0.1 * g, half, grads)  # an SGD step keeps the dtype
        assert {p.dtype for p in jax.tree.leaves(stepped)} == {jnp.dtype(dtype)}
    spec = p1.ModelSpec([p1.LayerSpec("mingru", 6, scan="associative"), p1.LayerSpec("gru", 5, True)], 4,
                        input_size=3)
    model, _, _, _ = random_model(9, spec, 4, 8, dtype=jnp.float32)
    _, ref = p1.model_bptt(model, xs, labels, spec)
    _, grads = p1.model_bptt(_cast(model, dtype), half_xs, labels, spec)
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype(dtype)}
    error, nonzero = _norm_error(grads, ref)
    assert nonzero and error < 5e-2, error


# --------------------------------------------------------------------------- 5. bfloat16 and PyTorch's layout


def test_bfloat16_weights_go_to_and_come_back_from_pytorchs_layout():
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3, bidirectional=True), p1.LayerSpec("lstm", 2)], 4, input_size=2)
    params = _cast(p1.init_model(jax.random.key(0), spec), jnp.bfloat16)
    state = to_torch(params, spec)
    assert {a.dtype for a in state.values()} == {np.dtype(np.float32)}  # torch.from_numpy takes these
    back = from_torch({k: v.astype(jnp.bfloat16) for k, v in state.items()}, spec)  # NumPy bfloat16 in
    assert_trees_close(back, params, 0)
    assert_trees_close(_cast(from_torch(state, spec), jnp.bfloat16), params, 0)  # exact widening


def test_bfloat16_tensors_come_from_pytorch():
    torch = pytest.importorskip("torch")
    spec = p1.ModelSpec([p1.LayerSpec("lstm", 3)], 2, input_size=2)
    params = _cast(p1.init_model(jax.random.key(1), spec), jnp.bfloat16)
    tensors = {k: torch.from_numpy(v).to(torch.bfloat16) for k, v in to_torch(params, spec).items()}
    assert_trees_close(from_torch(tensors, spec), params, 0)


# --------------------------------------------------------------------------- 6. custom-cell contracts


def _tanh_step(params, carry, x):
    return (jnp.tanh(x @ params["W"] + carry[0] @ params["U"] + params["b"]),)


def test_param_shapes_as_lists_work_everywhere(x64):
    cell = p1.custom_cell("listed", lambda i, h: {"W": [i, h], "U": [h, h], "b": [h]},
                          lambda key, i, h, dtype: {"W": jax.random.normal(key, (i, h), dtype) * 0.5,
                                                    "U": jnp.eye(h, dtype=dtype) * 0.5, "b": jnp.ones((h,), dtype)},
                          _tanh_step)
    p1.register_cell(cell)
    try:
        spec = p1.ModelSpec([p1.LayerSpec("listed", 4)], 3, input_size=2)
        model, xs, targets, _ = random_model(10, spec, 3, 5)
        loss, grads = p1.model_bptt(model, xs, targets, spec)
        assert_trees_close(grads, jax.grad(p1.model_loss)(model, xs, targets, spec), 1e-6)
    finally:
        CELLS.pop("listed")


def test_an_init_that_ignores_its_dtype_is_named_when_the_cell_is_made():
    def float32_init(key, i, h, dtype):  # dtype ignored
        return {"W": jnp.zeros((i, h)), "U": jnp.zeros((h, h)), "b": jnp.zeros((h,))}

    with pytest.raises(ValueError, match=r"cell 'stubborn': init: params\['U'\]: expected float16\[4, 4\] .* got "
                                         r"float32\[4, 4\]"):
        p1.custom_cell("stubborn", lambda i, h: {"W": (i, h), "U": (h, h), "b": (h,)}, float32_init, _tanh_step)
