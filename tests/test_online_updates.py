"""True online learning (:func:`perceptron1_jax.online_updates`, ``TrainConfig(online_every=k)``),
in float64 against oracles: each update's exact RTRL gradient reaches back to the sequence's start
(``jax.grad`` of that stretch's loss through the whole history, rtol 1e-9); after an SGD update the
influence gathered under the old parameters is carried on (``jax.grad`` of a composed function);
for every method, updates that change nothing add up to the whole sequence's online gradient (so
neither the influence nor UORO's signs restart at an update); a stream handed from one call to the
next goes on as one call over both; bad requests are refused by name."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model

import perceptron1_jax as p1
from perceptron1_jax.model import forward, public_carries

CASES = [  # (layers, tokens, loss, resets, batch, time, every)
    ((("gru", 3), ("lstm", 2)), False, "cross_entropy", True, 2, 6, 2),
    ((("elman", 3),), True, "mse", False, 1, 3, 1),
    ((("minlstm", 2), ("gru", 3)), False, "mse", True, 3, 4, 4),
]


def problem(layers, tokens, loss, resets, batch, time, seed=0):
    spec = p1.ModelSpec(tuple(p1.LayerSpec(cell, size) for cell, size in layers), num_outputs=3,
                        input_size=None if tokens else 2, vocab_size=7 if tokens else None,
                        embed_size=3 if tokens else None, loss=loss, many_to_many=True)
    params, xs, targets, _ = random_model(seed, spec, batch, time)
    starts = jnp.asarray(np.random.default_rng(seed + 1).random((batch, time)) < 0.3) if resets else None
    return spec, params, xs, targets, starts


def stretch_loss(params, xs, targets, spec, resets, start, stop, history_params=None):
    """The mean loss of the steps ``[start, stop)``, the carry entering them from a forward pass
    over ``[0, start)`` with ``history_params`` (default ``params``): differentiable in both."""
    def cut(a, i, j):
        return None if a is None else a[:, i:j]

    carries0 = None
    if start:
        carries0 = public_carries(spec, forward(params if history_params is None else history_params,
                                                xs[:, :start], spec, resets=cut(resets, 0, start)).finals)
    return p1.model_loss(params, xs[:, start:stop], targets[:, start:stop], spec, resets=cut(resets, start, stop),
                         carries0=carries0)


def record_only(params, carry, loss, grads):
    return params, carry, (loss, grads)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_each_exact_update_reaches_back_to_the_start(x64, case):
    *shape, every = CASES[case]
    spec, params, xs, targets, starts = problem(*shape)
    _, _, (values, grads), _ = p1.online_updates(params, xs, targets, spec, every=every, update=record_only, carry=(),
                                              method="rtrl", resets=starts)
    for j in range(xs.shape[1] // every):
        loss = lambda p, j=j: stretch_loss(p, xs, targets, spec, starts, j * every, (j + 1) * every)  # noqa: E731
        value, ref = jax.value_and_grad(loss)(params)
        np.testing.assert_allclose(values[j], value, rtol=1e-9)
        assert_trees_close(jax.tree.map(lambda g, j=j: g[j], grads), ref, rtol=1e-9, atol=1e-13)


def test_after_an_update_the_old_influence_is_carried_on(x64):
    spec, params, xs, targets, starts = problem((("gru", 3), ("lstm", 2)), False, "cross_entropy", True, 2, 6)
    lr = 0.3

    def sgd(p, carry, loss, grads):
        return jax.tree.map(lambda a, g: a - lr * g, p, grads), carry, grads

    after, _, grads, _ = p1.online_updates(params, xs, targets, spec, every=3, update=sgd, carry=(), method="rtrl",
                                        resets=starts)
    first = jax.grad(stretch_loss)(params, xs, targets, spec, starts, 0, 3)
    moved = jax.tree.map(lambda a, g: a - lr * g, params, first)
    # the second update: its steps under the moved parameters, the influence of the first three
    # steps as gathered under the old ones (their carry as a function of theta - moved + params)
    second = jax.grad(lambda th: stretch_loss(th, xs, targets, spec, starts, 3, 6,
                                              jax.tree.map(lambda t, m, p: t - m + p, th, moved, params)))(moved)
    assert_trees_close(jax.tree.map(lambda g: g[0], grads), first, rtol=1e-9, atol=1e-13)
    assert_trees_close(jax.tree.map(lambda g: g[1], grads), second, rtol=1e-9, atol=1e-13)
    assert_trees_close(after, jax.tree.map(lambda a, g: a - lr * g, moved, second), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("method", ["rtrl", "snap1", "eprop", "uoro"])
def test_updates_that_change_nothing_add_up_to_the_whole_sequence(x64, method):
    spec, params, xs, targets, starts = problem((("gru", 3), ("lstm", 2)), False, "cross_entropy", True, 2, 6)
    key = jax.random.key(3)
    _, _, (values, grads), _ = p1.online_updates(params, xs, targets, spec, every=2, update=record_only, carry=(),
                                              method=method, key=key, resets=starts)
    value, whole = p1.model_online_grad(params, xs, targets, spec, method=method, key=key, resets=starts)
    np.testing.assert_allclose(jnp.mean(values), value, rtol=1e-9)
    assert_trees_close(jax.tree.map(lambda g: jnp.mean(g, axis=0), grads), whole, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("layers, method", [((("gru", 3), ("lstm", 2)), "rtrl"), ((("lstm", 3),), "snap1"),
                                            ((("elman", 3), ("gru", 2)), "uoro")])
def test_a_stream_goes_on_across_calls_as_one(x64, layers, method):
    spec, params, xs, targets, starts = problem(layers, False, "cross_entropy", True, 2, 6)

    def sgd(p, carry, loss, grads):
        return jax.tree.map(lambda a, g: a - 0.3 * g, p, grads), carry + 1, loss

    run = functools.partial(p1.online_updates, spec=spec, every=2, update=sgd, method=method, key=jax.random.key(5))
    whole = run(params, xs, targets, carry=0, resets=starts)
    first = run(params, xs[:, :4], targets[:, :4], carry=0, resets=starts[:, :4])
    second = run(first[0], xs[:, 4:], targets[:, 4:], carry=first[1], resets=starts[:, 4:], stream=first[3])
    assert_trees_close(second[0], whole[0], rtol=1e-12, atol=1e-15)
    assert int(second[1]) == 3 and int(second[3].step) == 6
    np.testing.assert_allclose(np.concatenate([first[2], second[2]]), whole[2], rtol=1e-12)
    assert_trees_close(second[3], whole[3], rtol=1e-12, atol=1e-15)
    other = "uoro" if method != "uoro" else "rtrl"
    with pytest.raises(ValueError, match=r"stream: expected the OnlineStream of a previous call with this model"):
        run(params, xs, targets, carry=0, resets=starts, method=other, stream=first[3])


def test_bad_requests_are_refused_by_name(x64):
    spec, params, xs, targets, _ = problem((("gru", 3),), False, "cross_entropy", False, 2, 6)
    run = lambda **kw: p1.online_updates(params, xs, targets, spec, **{  # noqa: E731
        "every": 2, "update": record_only, "carry": (), "method": "rtrl", **kw})
    with pytest.raises(ValueError, match=r"every: expected a divisor of the sequence length 6, got 4"):
        run(every=4)
    with pytest.raises(ValueError, match=r"every: expected a positive int"):
        run(every=0)
    with pytest.raises(ValueError, match=r"method: expected one of"):
        run(method="bptt")
    one = p1.ModelSpec(spec.layers, 3, input_size=2)
    with pytest.raises(ValueError, match=r"spec: expected a many-to-many model .* got many_to_many=False"):
        p1.online_updates(params, xs, targets[:, 0], one, every=2, update=record_only, carry=(), method="rtrl")
    both = p1.ModelSpec((p1.LayerSpec("gru", 3, bidirectional=True),), 3, input_size=2, many_to_many=True)
    both_params, *_ = random_model(0, both, 2, 6)
    with pytest.raises(ValueError, match=r"spec: expected one-direction layers .*got a bidirectional layer 0"):
        p1.online_updates(both_params, xs, targets, both, every=2, update=record_only, carry=(), method="rtrl")
