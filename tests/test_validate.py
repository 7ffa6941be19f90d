"""Bad input gets a ValueError/TypeError naming the argument, the expected and the received value,
raised in Python before XLA runs; shape checks also fire under jit and vmap."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perceptron1_jax as p1

B, T, I, H, C = 2, 5, 3, 4, 3


def _problem(cell="gru"):
    params = p1.init_params(jax.random.key(0), cell, I, H, C)
    xs = jnp.asarray(np.random.default_rng(0).standard_normal((B, T, I)), jnp.float32)
    labels = jnp.array([0, 2], jnp.int32)
    return params, xs, labels


def _with(params, path, value):
    out = jax.tree.map(lambda a: a, params)
    node = out
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


PARAMS, XS, LABELS = _problem()
LSTM_PARAMS = p1.init_params(jax.random.key(0), "lstm", I, H, C)

# (id, call, exception type, fragments the message must contain: argument, expected, received)
CASES = [
    ("unknown cell", lambda: p1.loss(PARAMS, XS, LABELS, "rnn"), ValueError, ["cell", "'elman'", "'rnn'"]),
    ("cell not a string", lambda: p1.bptt(PARAMS, XS, LABELS, 3), ValueError, ["cell", "got 3"]),
    ("xs rank 2", lambda: p1.loss(PARAMS, XS[0], LABELS, "gru"), ValueError, ["xs", "rank 3", "(5, 3)"]),
    ("xs rank 4", lambda: p1.unroll(PARAMS, XS[None], "gru"), ValueError, ["xs", "rank 3", "(1, 2, 5, 3)"]),
    ("xs input size", lambda: p1.bptt(PARAMS, XS[..., :2], LABELS, "gru"), ValueError,
     ["xs", "input size 3", "(2, 5, 2)"]),
    ("xs integer", lambda: p1.loss(PARAMS, XS.astype(jnp.int32), LABELS, "gru"), TypeError,
     ["xs", "floating", "int32"]),
    ("xs dtype mismatch", lambda: p1.bptt(PARAMS, XS.astype(jnp.float16), LABELS, "gru"), TypeError,
     ["xs", "float32", "float16"]),
    ("empty time", lambda: p1.loss(PARAMS, XS[:, :0], LABELS, "gru"), ValueError, ["xs", "non-empty", "(2, 0, 3)"]),
    ("empty batch", lambda: p1.unroll(PARAMS, XS[:0], "gru"), ValueError, ["xs", "non-empty", "(0, 5, 3)"]),
    ("xs not an array", lambda: p1.unroll(PARAMS, "abc", "gru"), TypeError, ["xs", "an array", "'abc'"]),
    ("params not a dict", lambda: p1.loss([1, 2], XS, LABELS, "gru"), TypeError, ["params", "dict", "list"]),
    ("params without readout", lambda: p1.bptt(_with(PARAMS, ["readout"], None), XS, LABELS, "gru"),
     ValueError, ["params", "readout"]),
    ("params extra key", lambda: p1.bptt({**PARAMS, "extra": {}}, XS, LABELS, "gru"), ValueError,
     ["params", "'extra'"]),
    ("cell params missing key", lambda: p1.loss(_with(PARAMS, ["cell", "b_h"], None), XS, LABELS, "gru"),
     ValueError, ["params['cell']", "'b_h'"]),
    ("W_h wrong shape", lambda: p1.loss(_with(PARAMS, ["cell", "W_h"], jnp.zeros((4, 9))), XS, LABELS, "gru"),
     ValueError, ["params['cell']['W_h']", "(4, 12)", "(4, 9)"]),
    ("lstm params for elman", lambda: p1.loss(LSTM_PARAMS, XS, LABELS, "elman"), ValueError,
     ["params['cell']['W_h']", "(16, 16)", "(4, 16)"]),
    ("gru params for lstm", lambda: p1.loss(PARAMS, XS, LABELS, "lstm"), ValueError, ["params['cell']"]),
    ("readout rows", lambda: p1.bptt(_with(PARAMS, ["readout", "W"], jnp.zeros((5, C))), XS, LABELS, "gru"),
     ValueError, ["params['readout']['W']", f"({H}, {C})", "(5, 3)"]),
    ("readout bias", lambda: p1.bptt(_with(PARAMS, ["readout", "b"], jnp.zeros((C + 1,))), XS, LABELS, "gru"),
     ValueError, ["params['readout']['b']", "(3,)", "(4,)"]),
    ("integer params", lambda: p1.loss(_with(PARAMS, ["cell", "b_x"], jnp.zeros((12,), jnp.int32)), XS, LABELS,
                                       "gru"), TypeError, ["params['cell']['b_x']", "floating", "int32"]),
    ("mixed param dtypes", lambda: p1.loss(_with(PARAMS, ["readout", "b"], jnp.zeros((C,), jnp.float16)), XS,
                                           LABELS, "gru"), TypeError, ["params['readout']['b']", "float32",
                                                                       "float16"]),
    ("float labels", lambda: p1.bptt(PARAMS, XS, LABELS.astype(jnp.float32), "gru"), TypeError,
     ["labels", "integer", "float32"]),
    ("label too large", lambda: p1.bptt(PARAMS, XS, jnp.array([0, 3], jnp.int32), "gru"), ValueError,
     ["labels", "[0, 3)", "[0, 3]"]),
    ("negative label", lambda: p1.loss(PARAMS, XS, jnp.array([-1, 0], jnp.int32), "gru"), ValueError,
     ["labels", "[0, 3)", "[-1, 0]"]),
    ("labels shape", lambda: p1.loss(PARAMS, XS, jnp.zeros((B, T + 1), jnp.int32), "gru"), ValueError,
     ["labels", "(2,)", "(2, 5)", "(2, 6)"]),
    ("labels missing", lambda: p1.bptt(PARAMS, XS, None, "gru"), TypeError, ["labels", "None"]),
    ("length zero", lambda: p1.bptt(PARAMS, XS, LABELS, "gru", jnp.array([0, 5], jnp.int32)), ValueError,
     ["lengths", "[1, 5]", "[0, 5]"]),
    ("length too long", lambda: p1.unroll(PARAMS, XS, "gru", jnp.array([6, 5], jnp.int32)), ValueError,
     ["lengths", "[1, 5]", "[5, 6]"]),
    ("lengths shape", lambda: p1.loss(PARAMS, XS, LABELS, "gru", jnp.array([5], jnp.int32)), ValueError,
     ["lengths", "(2,)", "(1,)"]),
    ("float lengths", lambda: p1.loss(PARAMS, XS, LABELS, "gru", jnp.array([5.0, 1.0], jnp.float32)), TypeError,
     ["lengths", "integer", "float32"]),
    ("h0 shape", lambda: p1.unroll(PARAMS, XS, "gru", h0=jnp.zeros((B, H + 1))), ValueError,
     ["h0", "(2, 4)", "(2, 5)"]),
    ("h0 dtype", lambda: p1.unroll(PARAMS, XS, "gru", h0=jnp.zeros((B, H), jnp.float16)), TypeError,
     ["h0", "float32", "float16"]),
    ("lstm h0 not a pair", lambda: p1.unroll(LSTM_PARAMS, XS, "lstm", h0=jnp.zeros((B, H))), TypeError,
     ["h0", "pair (h, c)"]),
    ("init hidden zero", lambda: p1.init_params(jax.random.key(0), "gru", 3, 0, 2), ValueError,
     ["hidden_size", "positive", "0"]),
    ("init negative classes", lambda: p1.init_params(jax.random.key(0), "gru", 3, 4, -2), ValueError,
     ["num_classes", "positive", "-2"]),
    ("init float size", lambda: p1.init_params(jax.random.key(0), "gru", 2.5, 4, 2), TypeError,
     ["input_size", "int", "2.5"]),
    ("init bool size", lambda: p1.init_params(jax.random.key(0), "gru", True, 4, 2), TypeError,
     ["input_size", "int", "True"]),
    ("init bad key", lambda: p1.init_params(0, "gru", 3, 4, 2), TypeError, ["key", "jax.random", "int 0"]),
    ("init int dtype", lambda: p1.init_params(jax.random.key(0), "gru", 3, 4, 2, dtype=jnp.int32), TypeError,
     ["dtype", "floating", "int32"]),
    ("init unknown cell", lambda: p1.init_params(jax.random.key(0), "transformer", 3, 4, 2), ValueError,
     ["cell", "'transformer'"]),
    ("predict without readout", lambda: p1.predict(_with(PARAMS, ["readout"], None), XS, "gru"), ValueError,
     ["params", "readout"]),
]


@pytest.mark.parametrize("call, error, fragments", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, fragments):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)


ENTRY_POINTS = {
    "unroll": lambda xs: p1.unroll(PARAMS, xs, "gru"),
    "unroll_bptt": lambda xs: p1.unroll_bptt(PARAMS, xs, "gru"),
    "predict": lambda xs: p1.predict(PARAMS, xs, "gru"),
    "loss": lambda xs: p1.loss(PARAMS, xs, LABELS, "gru"),
    "accuracy": lambda xs: p1.accuracy(PARAMS, xs, LABELS, "gru"),
    "bptt": lambda xs: p1.bptt(PARAMS, xs, LABELS, "gru"),
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_every_entry_point_checks_shapes_eagerly_and_at_trace_time(name):
    call = ENTRY_POINTS[name]
    bad = XS[..., :2]
    for wrapped in (call, jax.jit(call)):
        with pytest.raises(ValueError, match=re.escape("xs: expected input size 3")):
            wrapped(bad)
    # Under vmap the function sees one slice: (B, T, I) per member of a stack.
    with pytest.raises(ValueError, match=re.escape("xs: expected input size 3")):
        jax.vmap(call)(jnp.stack([bad, bad]))
    jax.vmap(call)(jnp.stack([XS, XS]))  # the good shape works under vmap


def test_value_checks_apply_when_concrete_only():
    bad_labels = jnp.array([0, 7], jnp.int32)
    with pytest.raises(ValueError, match="labels"):
        p1.loss(PARAMS, XS, bad_labels, "gru")
    # Inside jit the values are unknown at trace time: no check (documented), no crash.
    value = jax.jit(lambda y: p1.loss(PARAMS, XS, y, "gru"))(bad_labels)
    assert value.shape == ()


def test_init_params_under_jit_and_vmap():
    keys = jax.random.split(jax.random.key(0), 3)
    ensemble = jax.vmap(lambda k: p1.init_params(k, "gru", I, H, C))(keys)
    assert ensemble["cell"]["W_h"].shape == (3, H, 3 * H)
    assert not np.allclose(ensemble["cell"]["W_h"][0], ensemble["cell"]["W_h"][1])
    jitted = jax.jit(lambda k: p1.init_params(k, "lstm", I, H, C))(keys[0])
    eager = p1.init_params(keys[0], "lstm", I, H, C)
    np.testing.assert_allclose(jitted["cell"]["W_h"], eager["cell"]["W_h"], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got 0"):
        jax.jit(lambda k: p1.init_params(k, "lstm", I, 0, C))(keys[0])
