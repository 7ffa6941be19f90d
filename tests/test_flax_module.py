"""The Flax nnx module: its gradient is the explicit backward (equal to jax.grad of the plain loss in
float64), it trains with nnx.Optimizer, and differentiating the inputs through it is refused."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from helpers import assert_trees_close, max_scale, random_model

import perceptron1_jax as p1
from perceptron1_jax.flax_module import RecurrentModel, params_of

pytestmark = pytest.mark.standard_promotion  # nnx.Optimizer drives optax

SPEC = p1.ModelSpec([p1.LayerSpec("lstm", 4, True), p1.LayerSpec("gru", 3, True)], 3, vocab_size=7, embed_size=3,
                    dropout=0.3, many_to_many=True)


def test_nnx_grad_is_the_explicit_backward(x64, monkeypatch):
    params, ids, labels, lengths = random_model(0, SPEC, 3, 5, with_lengths=True)
    model = RecurrentModel(SPEC, rngs=nnx.Rngs(0), params=params)
    key = jax.random.key(2)
    calls = []
    import perceptron1_jax.layers as layers

    original = layers.backward_scan
    monkeypatch.setattr(layers, "backward_scan", lambda *a, **k: calls.append(1) or original(*a, **k))
    loss, grads = nnx.value_and_grad(lambda m: m.loss(ids, labels, lengths, dropout_key=key))(model)
    assert len(calls) == 4  # one reverse scan per direction per layer, no autodiff of the scans
    ref_loss, ref_grads = jax.value_and_grad(p1.model_loss)(params, ids, labels, SPEC, lengths, key)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
    assert_trees_close(params_of(grads), ref_grads, rtol=1e-6, atol=1e-12 * max_scale(ref_grads))
    assert_trees_close(params_of(nnx.state(model, nnx.Param)), params, rtol=0, atol=0)
    np.testing.assert_allclose(model(ids, lengths), p1.model_apply(params, ids, SPEC, lengths), rtol=0)


def test_trains_with_nnx_optimizer():
    model = RecurrentModel(SPEC, rngs=nnx.Rngs(1))
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, 7, (8, 6)), jnp.int32)
    labels = ids % 3  # the class of each token: learnable at every step

    @nnx.jit
    def step(model, optimizer, key):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(ids, labels, dropout_key=key))(model)
        optimizer.update(model, grads)
        return loss

    first = float(step(model, optimizer, jax.random.key(0)))
    for k in range(1, 40):
        last = float(step(model, optimizer, jax.random.key(k)))
    assert last < 0.5 * first
    assert float(jnp.mean(jnp.argmax(model(ids), -1) == labels)) > 0.9


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_explicit_loss_vjp_covers_inputs_and_targets(x64, loss):
    spec = p1.ModelSpec([p1.LayerSpec("gru", 2, True)], 2, input_size=3, loss=loss, many_to_many=True)
    params, xs, targets, lengths = random_model(0, spec, 2, 4, with_lengths=True)
    argnums = (0, 1, 2) if loss == "mse" else (0, 1)
    ours = jax.grad(p1.model_loss_explicit, argnums=argnums)(params, xs, targets, spec, lengths)
    ref = jax.grad(p1.model_loss, argnums=argnums)(params, xs, targets, spec, lengths)
    assert_trees_close(ours, ref, rtol=1e-6, atol=1e-13)
    per_problem = jax.vmap(jax.grad(p1.model_loss_explicit, argnums=1), in_axes=(None, 0, None, None))(
        params, jnp.stack([xs, -xs]), targets, spec)
    np.testing.assert_allclose(per_problem[1], jax.grad(p1.model_loss, argnums=1)(params, -xs, targets, spec),
                               rtol=1e-6, atol=1e-13)
    with pytest.raises(ValueError, match="targets: expected"):
        p1.model_loss_explicit(params, xs, targets[:1], spec)
