"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/test_parallel.py does): the
explicit BPTT with the batch split over 4 host devices equals the one-device call in float64
(resets included)."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from refusals import assert_refused  # noqa: E402

import perceptron1_jax as p1  # noqa: E402
from perceptron1_jax.diagnostics import max_relative_error  # noqa: E402

assert len(jax.devices()) == 4, jax.devices()
mesh = p1.make_mesh()
rng = np.random.default_rng(0)


def noisy(params):
    return jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)), params)  # non-zero biases


def check(name, spec, batch, time, lengths=True, lean=None, resets=False):
    params = noisy(p1.init_model(jax.random.key(1), spec, jnp.float64))
    xs = (jnp.asarray(rng.integers(0, spec.vocab_size, (batch, time))) if spec.tokens
          else jnp.asarray(rng.standard_normal((batch, time, spec.input_size))))
    shape = (batch, time) if spec.many_to_many else (batch,)
    targets = (jnp.asarray(rng.standard_normal((*shape, spec.num_outputs))) if spec.loss == "mse"
               else jnp.asarray(rng.integers(0, spec.num_outputs, shape)))
    lens = jnp.asarray(rng.integers(1, time + 1, batch)) if lengths else None
    starts = jnp.asarray(rng.random((batch, time)) < 0.3) if resets else None
    one = p1.model_bptt(params, xs, targets, spec, lens, lean=lean, resets=starts)
    many = p1.model_bptt(params, xs, targets, spec, lens, lean=lean, mesh=mesh, resets=starts)
    loss_err, grad_err = abs(float(one[0] - many[0])) / abs(float(one[0])), max_relative_error(many[1], one[1])
    print(f"{name}: loss {loss_err:.1e}, gradients {grad_err:.1e}")
    assert loss_err < 1e-10 and grad_err < 1e-10, name


L = p1.LayerSpec
check("2x bi-lstm, tokens, many-to-many, lengths", p1.ModelSpec((L("lstm", 5, True), L("gru", 4)), 6, vocab_size=9,
                                                                 embed_size=3, many_to_many=True), 8, 7)
check("gru, many-to-one, MSE, lengths", p1.ModelSpec((L("gru", 6),), 2, input_size=3, loss="mse"), 4, 5)
check("elman, many-to-many, no lengths, lean 2", p1.ModelSpec((L("elman", 4),), 3, input_size=2, many_to_many=True),
      12, 9, lengths=False, lean=2)
check("bi-gru then lstm, many-to-many, lengths, resets", p1.ModelSpec((L("gru", 4, True), L("lstm", 3)), 3,
                                                                      input_size=2, many_to_many=True), 8, 6,
      resets=True)

# The single-layer API, a mesh of two devices, and the errors.
params = noisy(p1.init_params(jax.random.key(2), "gru", 3, 5, 4, jnp.float64))
xs, labels = jnp.asarray(rng.standard_normal((6, 4, 3))), jnp.asarray(rng.integers(0, 4, (6, 4)))
lengths = jnp.asarray(rng.integers(1, 5, 6))
one = p1.bptt(params, xs, labels, "gru", lengths)
two = p1.bptt(params, xs, labels, "gru", lengths, mesh=p1.make_mesh(jax.devices()[:2]))
assert max_relative_error(two[1], one[1]) < 1e-10 and abs(float(two[0] - one[0])) < 1e-12
assert_refused([
    (lambda: p1.bptt(params, xs, labels, "gru", lengths, mesh=mesh), "expected a batch divisible by the 4 devices"),
    (lambda: p1.bptt(params, xs, labels, "gru", mesh="cpu"), "mesh: expected a jax.sharding.Mesh"),
    (lambda: p1.bptt(params, xs[:4], labels[:4], "gru", return_extras=True, mesh=mesh),
     "return_extras: expected False"),
], (ValueError, TypeError))
print("OK")
