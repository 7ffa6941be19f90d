"""The compact SnAp-1 and e-prop influence (:class:`perceptron1_jax.influence.Compact`, one layer of a
built-in cell) against the dense masked one (:class:`~perceptron1_jax.influence.Dense`), in float64
at rtol 1e-10: every built-in cell, many-to-one with lengths and h0, many-to-many with resets,
random feedback, batch 1 and T = 1, and online updates; it is the one chosen where it applies, and
it keeps ``K P`` numbers per example where the dense one keeps ``S P``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model, random_problem

import perceptron1_jax as p1
from perceptron1_jax import influence, online
from perceptron1_jax.cells import CELLS

BUILT_IN = ("elman", "lstm", "gru", "mingru", "minlstm")


def dense(monkeypatch, run):
    """``run()`` with the compact influence off: it takes the dense one (in its own compiled program,
    as ``compact`` is a static argument)."""
    monkeypatch.setattr(influence, "compact_applies", lambda spec, method: False)
    try:
        return run()
    finally:
        monkeypatch.undo()


CASES = [  # (batch, time, many_to_many, lengths, h0, resets)
    (3, 5, False, True, True, False),
    (2, 4, True, False, False, True),
    (1, 1, True, True, True, False),
]


@pytest.mark.parametrize("cell", BUILT_IN)
@pytest.mark.parametrize("method", ["snap1", "eprop"])
def test_the_compact_influence_equals_the_dense_one(x64, monkeypatch, cell, method):
    for case, (batch, time, many_to_many, lengths, h0, resets) in enumerate(CASES):
        params, xs, labels, lens = random_problem(case, cell, batch, time, 3, 4, 3, many_to_many=many_to_many,
                                                  with_lengths=lengths)
        rng = np.random.default_rng(case + 100)
        parts = [jnp.asarray(rng.standard_normal((batch, 4)) * 0.5) for _ in range(CELLS[cell].carry_size)]
        first = (parts[0] if len(parts) == 1 else tuple(parts)) if h0 else None
        starts = jnp.asarray(rng.random((batch, time)) < 0.4) if resets else None
        key = jax.random.key(case)
        feedback = "random" if method == "eprop" and case == 1 else "symmetric"
        run = functools.partial(p1.online_grad, params, xs, labels, cell, lens, first, method=method,
                                resets=starts, key=key, feedback=feedback)
        compact, reference = run(), dense(monkeypatch, run)
        np.testing.assert_allclose(compact[0], reference[0], rtol=1e-10)
        assert_trees_close(compact[1], reference[1], rtol=1e-10, atol=1e-14)


def test_online_updates_take_the_compact_influence_alike(x64, monkeypatch):
    spec = p1.ModelSpec((p1.LayerSpec("lstm", 3),), num_outputs=3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(0, spec, 2, 6)

    def record(p, carry, loss, grads):
        return p, carry, (loss, grads)

    run = lambda: p1.online_updates(params, xs, targets, spec, every=2, update=record, carry=(),  # noqa: E731
                                    method="snap1")
    assert_trees_close(run()[2], dense(monkeypatch, run)[2], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("cell", BUILT_IN)
def test_the_compact_influence_is_chosen_where_it_applies_and_keeps_k_p_numbers(cell):
    spec = p1.ModelSpec((p1.LayerSpec(cell, 4),), num_outputs=2, input_size=3)
    params = p1.init_model(jax.random.key(0), spec)
    pattern, compact = online._prepare(params, spec, "snap1", 2)
    assert compact and set(pattern) == set(params["layers"][0]["fwd"])
    tracker = online._Walk(params, spec, "snap1", "symmetric", pattern, None, compact).tracker
    assert isinstance(tracker, influence.Compact)
    numbers = sum(a.size for a in jax.tree.leaves(tracker.start(2, jnp.float32)))
    recurrent = sum(a.size for a in jax.tree.leaves(params["layers"]))
    assert numbers == 2 * CELLS[cell].carry_size * recurrent
    for other in (p1.ModelSpec((p1.LayerSpec(cell, 4),) * 2, 2, input_size=3),  # a stack
                  p1.ModelSpec((p1.LayerSpec(cell, 4),), 2, vocab_size=5, embed_size=3)):  # tokens
        assert not influence.compact_applies(other, "snap1")
    assert not influence.compact_applies(spec, "rtrl") and not influence.compact_applies(spec, "uoro")


def test_the_patterns_keep_every_structural_entry_at_a_size_where_gates_saturate():
    """Read at magnitude-one weights, a GRU of 64 units lost 2 of its 192 columns to saturated gates
    (a derivative of exactly 0 in float32); the patterns must hold what the structure says."""
    for cell in BUILT_IN:
        spec = p1.ModelSpec((p1.LayerSpec(cell, 64),), 4, input_size=8)
        for name, mask in influence.compact_masks(spec, "float32").items():
            assert mask[0].all(), (cell, name)  # h: every column of its unit
            if cell == "lstm":  # c: all but the output gate's block, which reaches h alone
                columns = mask[1].reshape(-1, 4, 64)
                assert columns[:, :3].all() and not columns[:, 3].any(), name
    spec = p1.ModelSpec((p1.LayerSpec("gru", 16),), 4, input_size=8)  # the dense one reads the same points
    dense = influence.immediate_pattern(spec, "float32")  # (S, P): each parameter feeds exactly one unit
    np.testing.assert_array_equal(dense.sum(axis=0), 1)
