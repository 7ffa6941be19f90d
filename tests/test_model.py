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
