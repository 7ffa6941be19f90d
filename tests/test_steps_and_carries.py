"""Carries in and out, and one step at a time (float64): a one-direction stack run in chunks with the
carries passed on equals the whole run (1e-12); ``model_bptt``'s ``dh0`` is the gradient with respect
to ``carries0`` (against ``jax.grad``); ``p1.step``/``p1.model_step`` stepped ``T`` times equal the
unroll and ``model_apply``, resets included, under ``jit``; bad carries and steps are refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model, random_problem, user_tanh_cell

import perceptron1_jax as p1

L = p1.LayerSpec
USER = "user_tanh_steps"


@pytest.mark.parametrize("tokens", [False, True])
def test_a_stream_in_chunks_equals_the_whole_run(tokens, x64):
    extra = {"vocab_size": 6, "embed_size": 3} if tokens else {"input_size": 2}
    spec = p1.ModelSpec((L("lstm", 4), L("gru", 3), L("elman", 3)), 3, many_to_many=True, **extra)
    params, xs, _, _ = random_model(0, spec, 2, 9)
    whole, finals = p1.model_apply(params, xs, spec, return_carries=True)
    outs, carries = [], None
    for start, stop in ((0, 3), (3, 7), (7, 9)):
        out, carries = p1.model_apply(params, xs[:, start:stop], spec, carries0=carries, return_carries=True)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), whole, rtol=1e-12, atol=1e-14)
    assert_trees_close(carries, finals, rtol=1e-12, atol=1e-14)
    assert isinstance(finals[0]["fwd"], tuple) and finals[1]["fwd"].shape == (2, 3)  # (h, c) for the LSTM


def test_loss_and_gradients_take_carries0(x64):
    spec = p1.ModelSpec((L("lstm", 4, True), L("gru", 3)), 3, input_size=2, many_to_many=True, loss="mse")
    params, xs, targets, lengths = random_model(1, spec, 3, 5, with_lengths=True)
    rng = np.random.default_rng(1)
    carries0 = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape)),
                            p1.model_apply(params, xs, spec, return_carries=True)[1])
    resets = jnp.asarray(rng.random((3, 5)) < 0.3)
    loss, grads, extras = p1.model_bptt(params, xs, targets, spec, lengths, carries0=carries0, resets=resets,
                                        return_extras=True)
    value, (reference, d_carries) = jax.value_and_grad(
        lambda p, c: p1.model_loss(p, xs, targets, spec, lengths, carries0=c, resets=resets), argnums=(0, 1)
    )(params, carries0)
    np.testing.assert_allclose(loss, value, rtol=1e-12)
    assert_trees_close(grads, reference, rtol=1e-6, atol=1e-12)
    assert_trees_close(extras.dh0, d_carries, rtol=1e-6, atol=1e-12)
    assert float(jnp.max(jnp.abs(extras.dh0[1]["fwd"]))) > 0
    # A row whose first step is a reset ignores carries0: its gradient with respect to them is zero.
    first = resets.at[0, 0].set(True)
    _, _, extras = p1.model_bptt(params, xs, targets, spec, lengths, carries0=carries0, resets=first,
                                 return_extras=True)
    assert float(jnp.max(jnp.abs(extras.dh0[0]["fwd"][0][0]))) == 0.0
    assert float(jnp.max(jnp.abs(extras.dh0[0]["fwd"][0][1]))) > 0


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "minlstm", USER])
def test_step_t_times_equals_the_unroll(cell, x64):
    with user_tanh_cell(USER):
        params, xs, _, _ = random_problem(2, "elman", 3, 6, 2, 4, 3)
        params = {"cell": jax.tree.map(lambda a: a + 0.1, p1.init_params(jax.random.key(2), cell, 2, 4, 3,
                                                                          jnp.float64)["cell"]),
                  "readout": params["readout"]}
        resets = jnp.asarray(np.random.default_rng(2).random((3, 6)) < 0.3)
        hs, final = p1.unroll(params, xs, cell, resets=resets)
        stepped = jax.jit(p1.step, static_argnames="cell")
        carry, steps = None, []
        for t in range(6):
            carry, h = stepped(params, carry, xs[:, t], cell=cell, reset=resets[:, t])
            steps.append(h)
        np.testing.assert_allclose(jnp.stack(steps, axis=1), hs, rtol=1e-12, atol=1e-14)
        assert_trees_close(carry, final, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("tokens", [False, True])
def test_model_step_t_times_equals_model_apply(tokens, x64):
    extra = {"vocab_size": 6, "embed_size": 3} if tokens else {"input_size": 2}
    spec = p1.ModelSpec((L("gru", 4), L("lstm", 3)), 5, many_to_many=True, **extra)
    params, xs, _, _ = random_model(3, spec, 2, 7)
    resets = jnp.asarray(np.random.default_rng(3).random((2, 7)) < 0.3)
    whole = p1.model_apply(params, xs, spec, resets=resets)
    stepped = jax.jit(p1.model_step, static_argnames="spec")
    carries, outs = None, []
    for t in range(7):
        carries, out = stepped(params, carries, xs[:, t], spec=spec, reset=resets[:, t])
        outs.append(out)
    np.testing.assert_allclose(jnp.stack(outs, axis=1), whole, rtol=1e-12, atol=1e-14)
    # A many-to-one spec: the last step's output is model_apply's.
    one = p1.ModelSpec(spec.layers, 5, many_to_many=False, **extra)
    np.testing.assert_allclose(outs[-1], p1.model_apply(params, xs, one, resets=resets), rtol=1e-12, atol=1e-14)


def test_bad_carries_and_steps_are_refused_by_name():
    spec = p1.ModelSpec((L("lstm", 4), L("gru", 3)), 3, input_size=2)
    params, xs, _, _ = random_model(0, spec, 2, 5, dtype=jnp.float32)
    good = p1.model_apply(params, xs, spec, return_carries=True)[1]
    for carries, message in [
        ([good[0]], r"carries0: expected a list of 2 layers"),
        ([{"bwd": good[0]["fwd"]}, good[1]], r"carries0\[0\]: expected directions \['fwd'\], got \['bwd'\]"),
        ([{"fwd": good[0]["fwd"][0]}, good[1]], r"carries0\[0\]\['fwd'\]: expected a pair \(h, c\)"),
        ([good[0], {"fwd": jnp.zeros((2, 4))}], r"carries0\[1\]\['fwd'\]: expected an array of shape \(2, 3\)"),
        ([good[0], {"fwd": jnp.zeros((2, 3), jnp.float16)}], r"carries0\[1\]\['fwd'\]: expected dtype float32"),
    ]:
        with pytest.raises((TypeError, ValueError), match=message):
            p1.model_apply(params, xs, spec, carries0=carries)
    with pytest.raises(ValueError, match=r"carries: expected a list of 2 layers"):
        p1.model_step(params, [good[0]], xs[:, 0], spec)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, input_size\), got \(2, 5, 2\)"):
        p1.model_step(params, None, xs, spec)
    with pytest.raises(TypeError, match=r"reset: expected dtype bool"):
        p1.model_step(params, None, xs[:, 0], spec, reset=jnp.zeros(2))
    with pytest.raises(ValueError, match=r"resets: expected shape \(2, 1\)"):
        p1.model_step(params, None, xs[:, 0], spec, reset=jnp.zeros(3, bool))
    bi = p1.ModelSpec((L("lstm", 4, True),), 3, input_size=2)
    with pytest.raises(ValueError, match=r"spec: expected one-direction layers .* got a bidirectional layer 0"):
        p1.model_step(p1.init_model(jax.random.key(0), bi), None, xs[:, 0], bi)
    single, xs1, _, _ = random_problem(0, "gru", 2, 3, 2, 4, 3, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, input\), got \(2, 3, 2\)"):
        p1.step(single, None, xs1, "gru")
    with pytest.raises(ValueError, match=r"carry: expected an array of shape \(2, 4\)"):
        p1.step(single, jnp.zeros((2, 5)), xs1[:, 0], "gru")
