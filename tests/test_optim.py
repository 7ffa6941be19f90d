"""Optimizers are optax chains chosen by name; clipping composes in front."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from perceptron1_jax.optim import make_optimizer

pytestmark = pytest.mark.standard_promotion  # optax mixes Python floats and int32 step counts

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0])}
GRADS = {"w": jnp.array([30.0, -40.0, 0.5])}


@pytest.mark.parametrize("name, reference", [
    ("sgd", optax.sgd(0.1, momentum=0.9)),
    ("adam", optax.adam(0.1)),
    ("rmsprop", optax.rmsprop(0.1)),
])
def test_named_optimizer_equals_optax(name, reference):
    ours = make_optimizer(name, 0.1)
    state, ref_state = ours.init(PARAMS), reference.init(PARAMS)
    for _ in range(3):
        update, state = ours.update(GRADS, state, PARAMS)
        ref_update, ref_state = reference.update(GRADS, ref_state, PARAMS)
        np.testing.assert_allclose(update["w"], ref_update["w"], rtol=1e-6)


def test_clipping_by_global_norm_and_by_value():
    clipped = make_optimizer("sgd", 1.0, momentum=0.0, clip=1.0)
    update, _ = clipped.update(GRADS, clipped.init(PARAMS), PARAMS)
    np.testing.assert_allclose(jnp.linalg.norm(update["w"]), 1.0, rtol=1e-6)
    by_value = make_optimizer("sgd", 1.0, momentum=0.0, clip_value=2.0)
    update, _ = by_value.update(GRADS, by_value.init(PARAMS), PARAMS)
    np.testing.assert_allclose(update["w"], [-2.0, 2.0, -0.5])


def test_schedules():
    opt = make_optimizer("sgd", 1.0, momentum=0.0, schedule="cosine", total_steps=4)
    state = opt.init(PARAMS)
    sizes = []
    for _ in range(4):
        update, state = opt.update({"w": jnp.ones(3)}, state, PARAMS)
        sizes.append(-float(update["w"][0]))
    assert sizes[0] == pytest.approx(1.0) and sizes[0] > sizes[1] > sizes[2] > sizes[3] > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "lion", "lr": 0.1}, "optimizer: expected one of"),
    ({"name": "adam", "lr": 0.0}, "lr: expected a positive learning rate, got 0.0"),
    ({"name": "adam", "lr": 0.1, "clip": -1.0}, "clip: expected a positive"),
    ({"name": "adam", "lr": 0.1, "schedule": "step"}, "schedule: expected one of"),
    ({"name": "sgd", "lr": 0.1, "momentum": -0.5}, "momentum: expected a value >= 0"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(**kwargs)
