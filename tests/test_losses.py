"""Softmax cross-entropy: stability, the explicit gradient, masking (token mean), accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceptron1_jax import losses


def naive_cross_entropy(logits, labels):
    logits = np.asarray(logits, np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return -np.log(np.take_along_axis(probs, np.asarray(labels)[..., None], -1)[..., 0])


def test_matches_naive_formula(x64):
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((6, 4)))
    labels = jnp.asarray(rng.integers(0, 4, 6), jnp.int32)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels), naive_cross_entropy(logits, labels).mean(),
                               rtol=1e-13)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_stable_for_huge_logits(x64, dtype):
    logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], dtype)
    labels = jnp.array([0, 2], jnp.int32)
    value, grad = losses.cross_entropy_with_grad(logits, labels)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    np.testing.assert_allclose(value, (0.0 + 5e3) / 2, rtol=1e-6)
    assert np.all(np.isfinite(jax.grad(losses.cross_entropy)(logits, labels)))


def test_masked_mean_is_token_mean_and_gradient_is_explicit(x64):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.standard_normal((3, 5, 4)))
    labels = jnp.asarray(rng.integers(0, 4, (3, 5)), jnp.int32)
    mask = jnp.asarray([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], bool)
    per_token = naive_cross_entropy(logits, labels)
    expected = per_token[np.asarray(mask)].sum() / 8
    value, grad = losses.cross_entropy_with_grad(logits, labels, mask)
    np.testing.assert_allclose(value, expected, rtol=1e-13)
    np.testing.assert_allclose(losses.cross_entropy(logits, labels, mask), expected, rtol=1e-13)
    np.testing.assert_allclose(grad, jax.grad(losses.cross_entropy)(logits, labels, mask), rtol=1e-12, atol=1e-15)
    assert np.all(np.asarray(grad)[~np.asarray(mask)] == 0)


def test_accuracy_with_mask():
    logits = jnp.array([[[2.0, 1.0], [0.0, 3.0]], [[1.0, 0.0], [1.0, 0.0]]])
    labels = jnp.array([[0, 0], [1, 0]], jnp.int32)
    np.testing.assert_allclose(losses.accuracy(logits, labels), 0.5)
    mask = jnp.array([[True, False], [True, True]])
    np.testing.assert_allclose(losses.accuracy(logits, labels, mask), 2 / 3, rtol=1e-6)
