"""predict/loss/accuracy: the readout rules for many-to-one and many-to-many."""

import jax.numpy as jnp
import numpy as np
from helpers import random_problem
from test_losses import naive_cross_entropy

import perceptron1_jax as p1


def test_predict_reads_the_last_valid_step(x64):
    params, xs, _, _ = random_problem(0, "gru", 3, 5, 2, 4, 3)
    lengths = jnp.array([2, 5, 1], jnp.int32)
    hs, _ = p1.unroll(params, xs, "gru", lengths)
    logits = p1.predict(params, xs, "gru", lengths)
    last = hs[jnp.arange(3), lengths - 1]
    np.testing.assert_allclose(logits, last @ params["readout"]["W"] + params["readout"]["b"], rtol=1e-13)


def test_many_to_one_loss_is_batch_mean(x64):
    params, xs, labels, _ = random_problem(1, "lstm", 4, 3, 2, 3, 5)
    logits = p1.predict(params, xs, "lstm")
    np.testing.assert_allclose(p1.loss(params, xs, labels, "lstm"), naive_cross_entropy(logits, labels).mean(),
                               rtol=1e-12)
    np.testing.assert_allclose(p1.accuracy(params, xs, labels, "lstm"),
                               np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def test_many_to_many_loss_is_token_mean_over_valid_steps(x64):
    params, xs, labels, _ = random_problem(2, "elman", 3, 4, 2, 3, 4, many_to_many=True)
    lengths = jnp.array([4, 1, 2], jnp.int32)
    hs, _ = p1.unroll(params, xs, "elman", lengths)
    logits = hs @ params["readout"]["W"] + params["readout"]["b"]
    per_token = naive_cross_entropy(logits, labels)
    valid = np.arange(4)[None, :] < np.asarray(lengths)[:, None]
    np.testing.assert_allclose(p1.loss(params, xs, labels, "elman", lengths), per_token[valid].sum() / valid.sum(),
                               rtol=1e-12)
    correct = (np.argmax(np.asarray(logits), -1) == np.asarray(labels))[valid]
    np.testing.assert_allclose(p1.accuracy(params, xs, labels, "elman", lengths), correct.mean(), rtol=1e-12)


# --------------------------------------------------------------------------- layered models

import jax  # noqa: E402
import pytest  # noqa: E402
from helpers import random_model  # noqa: E402

from perceptron1_jax.cells import CELLS, cell_step  # noqa: E402


def _loop_direction(cell, params, xs, length, reverse):
    """Python-loop reference of one direction over one sequence ``xs: (T, I)``: the states after
    each valid step, in the original time order (the reverse direction starts at ``length - 1``)."""
    spec = CELLS[cell]
    carry = tuple(jnp.zeros((1, params["W_h"].shape[0]), xs.dtype) for _ in range(spec.carry_size))
    order = range(length - 1, -1, -1) if reverse else range(length)
    states = {}
    for t in order:
        carry = cell_step(spec, params, carry, xs[t][None])
        states[t] = carry[0][0]
    return states, carry[0][0]


def _loop_model(spec, params, xs, lengths):
    """Loop reference of a float-input model without dropout: per-sequence features for the head."""
    features = []
    for b in range(xs.shape[0]):
        seq, length = xs[b], int(lengths[b])
        for k, layer in enumerate(spec.layers):
            runs = [_loop_direction(layer.cell, params["layers"][k][d], seq, length, d == "bwd")
                    for d in layer.directions]
            valid = jnp.stack([jnp.concatenate([r[0][t] for r in runs]) for t in range(length)])
            finals = jnp.concatenate([r[1] for r in runs])
            seq = jnp.concatenate([valid, jnp.zeros((xs.shape[1] - length, valid.shape[1]), xs.dtype)])
        features.append((valid, finals))
    return features


@pytest.mark.parametrize("many_to_many", [False, True])
def test_bidirectional_stack_matches_a_python_loop(x64, many_to_many):
    # Packed-sequence semantics: the backward direction starts at each sequence's last valid step;
    # many-to-one reads [forward state at the last valid step, backward state after step 0].
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3, True), p1.LayerSpec("lstm", 2, True)], 4, input_size=2,
                        many_to_many=many_to_many, loss="mse")
    params, xs, targets, _ = random_model(0, spec, 3, 5)
    lengths = jnp.array([5, 2, 1], jnp.int32)
    outputs = p1.model_apply(params, xs, spec, lengths)
    head = params["head"]
    expected = _loop_model(spec, params, xs, lengths)
    sq_errors = []
    for b, (valid, finals) in enumerate(expected):
        length = int(lengths[b])
        if many_to_many:
            want = valid @ head["W"] + head["b"]
            np.testing.assert_allclose(outputs[b, :length], want, rtol=1e-12)
            sq_errors.append(np.asarray((want - targets[b, :length]) ** 2))
        else:
            want = finals @ head["W"] + head["b"]
            np.testing.assert_allclose(outputs[b], want, rtol=1e-12)
            sq_errors.append(np.asarray((want - targets[b]) ** 2)[None])
    # MSE: the mean over every valid element (torch.nn.MSELoss over the valid rows).
    np.testing.assert_allclose(p1.model_loss(params, xs, targets, spec, lengths),
                               np.concatenate(sq_errors).mean(), rtol=1e-12)


def test_token_model_embeds_its_inputs(x64):
    spec = p1.ModelSpec([p1.LayerSpec("elman", 3)], 2, vocab_size=5, embed_size=4, many_to_many=True)
    params, ids, _, _ = random_model(1, spec, 2, 3)
    float_spec = p1.ModelSpec([p1.LayerSpec("elman", 3)], 2, input_size=4, many_to_many=True)
    float_params = {"layers": params["layers"], "head": params["head"]}
    np.testing.assert_allclose(p1.model_apply(params, ids, spec),
                               p1.model_apply(float_params, params["embed"][ids], float_spec), rtol=1e-14)


def test_dropout_is_inverted_and_only_with_a_key(x64):
    spec = p1.ModelSpec([p1.LayerSpec("elman", 64), p1.LayerSpec("elman", 3)], 2, input_size=2, dropout=0.5)
    params, xs, _, _ = random_model(2, spec, 4, 3)
    plain = p1.model_apply(params, xs, spec)
    np.testing.assert_allclose(plain, p1.model_apply(params, xs, spec, dropout_key=None), rtol=0)
    dropped = [p1.model_apply(params, xs, spec, dropout_key=jax.random.key(k)) for k in range(2)]
    assert not np.allclose(dropped[0], plain)
    np.testing.assert_allclose(dropped[0], p1.model_apply(params, xs, spec, dropout_key=jax.random.key(0)), rtol=0)
    # Inverted dropout: multipliers 0 or 1 / (1 - p), mean 1.
    from perceptron1_jax.layers import dropout_mask

    mask = np.asarray(dropout_mask(jax.random.key(3), 0.25, (200, 500), jnp.float64))
    assert set(np.unique(mask)) == {0.0, 1 / 0.75}
    assert abs(mask.mean() - 1.0) < 0.01 and abs((mask == 0).mean() - 0.25) < 0.01


@pytest.mark.parametrize("args, error, message", [
    (dict(xs=np.zeros((2, 3, 5))), ValueError, r"xs: expected input size 2 \(spec.input_size\), got shape \(2, 3, 5\)"),
    (dict(targets=np.zeros((2,), np.int32)), ValueError, r"targets: expected shape \(2, 3\) \(many_to_many=True\)"),
    (dict(targets=np.full((2, 3), 4, np.int32)), ValueError, r"targets: expected class ids in \[0, 4\), got values"),
    (dict(targets=np.zeros((2, 3))), TypeError, r"targets: expected integer class ids"),
    (dict(lengths=np.array([0, 3])), ValueError, r"lengths: expected values in \[1, 3\]"),
    (dict(dropout_key=3), TypeError, r"dropout_key: expected a jax.random key"),
    (dict(spec="lstm"), TypeError, r"spec: expected a ModelSpec, got str 'lstm'"),
])
def test_model_inputs_are_checked(args, error, message):
    spec = p1.ModelSpec([p1.LayerSpec("lstm", 3, True)], 4, input_size=2, many_to_many=True)
    call = dict(params=p1.init_model(jax.random.key(0), spec), xs=np.zeros((2, 3, 2), np.float32),
                targets=np.zeros((2, 3), np.int32), spec=spec, lengths=None, dropout_key=None)
    call.update(args)
    with pytest.raises(error, match=message):
        p1.model_bptt(**call)


def test_model_params_and_token_inputs_are_checked():
    spec = p1.ModelSpec([p1.LayerSpec("gru", 3, True), p1.LayerSpec("gru", 2)], 2, vocab_size=5, embed_size=4)
    params = p1.init_model(jax.random.key(0), spec)
    ids = np.array([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match=r"xs: expected token ids in \[0, 5\), got values in \[2, 5\]"):
        p1.model_apply(params, ids + 1, spec)
    with pytest.raises(TypeError, match="xs: expected integer token ids"):
        p1.model_apply(params, ids.astype(np.float32), spec)
    with pytest.raises(ValueError, match=r"params\['layers'\]\[1\]\['fwd'\]\['W_x'\]: expected shape \(6, 6\), got"):
        bad = {**params, "layers": [params["layers"][0], {"fwd": {**params["layers"][1]["fwd"],
                                                                 "W_x": jnp.zeros((4, 6))}}]}
        p1.model_apply(bad, ids, spec)
    one_way = {**params, "layers": [{"fwd": params["layers"][0]["fwd"]}, params["layers"][1]]}
    with pytest.raises(ValueError, match=r"\['layers'\]\[0\]: expected directions \['bwd', 'fwd'\], got \['fwd'\]"):
        p1.model_apply(one_way, ids, spec)
    with pytest.raises(ValueError, match=r"params: expected keys \['embed', 'head', 'layers'\]"):
        p1.model_apply({"layers": params["layers"], "head": params["head"]}, ids, spec)
    mse = p1.ModelSpec([p1.LayerSpec("gru", 3)], 2, input_size=1, loss="mse")
    mse_params = p1.init_model(jax.random.key(0), mse)
    xs = np.zeros((2, 4, 1), np.float32)
    with pytest.raises(ValueError, match=r"targets: expected finite values, got a non-finite value at flat index 1"):
        p1.model_loss(mse_params, xs, np.array([[0, np.nan], [0, 0]], np.float32), mse)
    with pytest.raises(ValueError, match=r"targets: expected shape \(2, 2\) \(many_to_many=False, loss='mse'\)"):
        p1.model_loss(mse_params, xs, np.zeros((2, 4, 2), np.float32), mse)
