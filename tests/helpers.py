"""Test helpers: random problems with non-zero biases and random inputs, and tree comparisons."""

from __future__ import annotations

import contextlib
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS


def random_problem(seed, cell, batch, time, input_size, hidden, classes, *, dtype=jnp.float64,
                   many_to_many=False, with_lengths=False):
    """Random params (biases included: zeros hide missing terms), inputs, labels and optional
    lengths from one numpy seed (numpy, so that building a problem compiles nothing)."""
    rng = np.random.default_rng(seed)
    shapes = CELLS[cell].param_shapes(input_size, hidden)

    def normal(shape, scale):
        return jnp.asarray(np.asarray(scale * rng.standard_normal(shape), dtype))

    params = {
        "cell": {name: normal(shape, 0.8 / np.sqrt(max(shape[0], 1)) if len(shape) == 2 else 0.3)
                 for name, shape in shapes.items()},
        "readout": {"W": normal((hidden, classes), 1.0 / np.sqrt(hidden)), "b": normal((classes,), 0.3)},
    }
    xs = normal((batch, time, input_size), 1.0)
    labels = jnp.asarray(np.asarray(rng.integers(0, classes, (batch, time) if many_to_many else (batch,)), jnp.int32))
    lengths = jnp.asarray(np.asarray(rng.integers(1, time + 1, (batch,)), jnp.int32)) if with_lengths else None
    return params, xs, labels, lengths


def reference_value_and_grad(cell):
    """``jax.value_and_grad`` of the plain autodiff loss, jitted (one compile per shape)."""
    return jax.jit(jax.value_and_grad(lambda q, x, y, n, h0=None: p1.loss(q, x, y, cell, n, h0)))


def assert_trees_close(actual, expected, rtol, atol=0.0):
    """Leaf-wise ``assert_allclose`` with the leaf's path in the message."""
    actual_leaves = jax.tree_util.tree_leaves_with_path(actual)
    expected_leaves = jax.tree_util.tree_leaves_with_path(expected)
    assert [p for p, _ in actual_leaves] == [p for p, _ in expected_leaves]
    for (path, a), (_, e) in zip(actual_leaves, expected_leaves):
        assert a.shape == e.shape and a.dtype == e.dtype, (path, a.shape, e.shape, a.dtype, e.dtype)
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=jax.tree_util.keystr(path))


def assert_trees_equal(actual, expected):
    """Every leaf of the two trees equal, bit for bit (a resumed run against a straight one)."""
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def max_scale(tree):
    """Largest absolute entry over a pytree (for absolute tolerances relative to the scale)."""
    return max(float(np.max(np.abs(np.asarray(a, np.float64)))) for a in jax.tree.leaves(tree))  # numpy: no program


def random_model(seed, spec, batch, time, *, dtype=jnp.float64, with_lengths=False):
    """Random params of ``spec`` (every leaf, biases included, drawn non-zero), inputs of the
    spec's kind, targets of its loss, and optional lengths, from one numpy seed."""
    rng = np.random.default_rng(seed)
    params = jax.eval_shape(lambda: p1.init_model(jax.random.key(seed), spec, dtype))  # shapes: nothing to compile

    def draw(a):
        scale = 0.8 / np.sqrt(a.shape[0]) if a.ndim == 2 else 0.3
        return jnp.asarray(np.asarray(scale * rng.standard_normal(a.shape), dtype))

    params = jax.tree.map(draw, params)
    if spec.tokens:
        xs = jnp.asarray(np.asarray(rng.integers(0, spec.vocab_size, (batch, time)), jnp.int32))
    else:
        xs = jnp.asarray(np.asarray(rng.standard_normal((batch, time, spec.input_size)), dtype))
    steps = (batch, time) if spec.many_to_many else (batch,)
    if spec.loss == "mse":
        targets = jnp.asarray(np.asarray(rng.standard_normal(steps + (spec.num_outputs,)), dtype))
    else:
        targets = jnp.asarray(np.asarray(rng.integers(0, spec.num_outputs, steps), jnp.int32))
    lengths = jnp.asarray(np.asarray(rng.integers(1, time + 1, (batch,)), jnp.int32)) if with_lengths else None
    return params, xs, targets, lengths


def wait_for_metrics(out, proc, enough, timeout=120, what="the records"):
    """Poll ``out/metrics.jsonl`` until ``enough(its text)`` holds, while ``proc`` (a training
    subprocess) runs: an ``AssertionError`` with its stderr if it ends first, or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        metrics = out / "metrics.jsonl"
        if metrics.exists() and enough(metrics.read_text()):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


@contextlib.contextmanager
def loop_form(setter, enabled):
    """Run a block with a loop form chosen process-wide (the deprecated ``p1.set_wavefront``,
    ``p1.set_fused_directions``; the public functions fold it into the spec), restored after."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        previous = setter(enabled)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            setter(previous)


def model_everything(spec, params, xs, targets, lengths=None, key=None):
    """Outputs, and the explicit backward with every side output kept (loss, gradients, per layer and
    direction dL/dh_t, dZ, dL/dx, dL/dh0; dL/dx of the first layer's input), for comparing two forms."""
    from perceptron1_jax.bptt import explicit_model

    loss, grads, back = jax.jit(lambda p: explicit_model(p, xs, targets, spec, lengths, key, keep_dhs=True,
                                                         keep_dz=True))(params)
    per_layer = [{d: (b.dhs_tm, b.dzx_tm, b.dzh_part_tm, b.dcarry0, b.dxs_tm) for d, b in layer.items()}
                 for layer in back.backs]
    return p1.model_apply(params, xs, spec, lengths, key), loss, grads, per_layer, back.dxs_tm


@contextlib.contextmanager
def user_tanh_cell(name):
    """A user cell ``h' = tanh(x W + h U + b)`` with a derived backward (its dZx is dL/dx itself),
    registered under ``name`` for the block."""

    def step(params, carry, x):
        return (jnp.tanh(x @ params["W"] + carry[0] @ params["U"] + params["b"]),)

    p1.register_cell(p1.custom_cell(
        name, lambda i, h: {"W": (i, h), "U": (h, h), "b": (h,)},
        lambda key, i, h, dtype: {"W": jax.random.normal(key, (i, h), dtype) * (1.0 / float(np.sqrt(i))),
                                  "U": jnp.eye(h, dtype=dtype) * 0.5, "b": jnp.ones((h,), dtype)},
        step))
    try:
        yield
    finally:
        CELLS.pop(name)
