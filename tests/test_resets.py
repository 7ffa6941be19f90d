"""Resets inside a sequence (float64): a batch packed from random segments equals every segment run
alone (outputs and gradients, rtol 1e-10), and the explicit BPTT with resets equals ``jax.grad`` of
the plain path (rtol 1e-6), for every cell including a user cell, stacks, bidirectional layers, both
heads, lengths and every loop form (sequential, lean, associative, wavefront, fused directions);
``h0`` feeds only a row's first segment; malformed resets are refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model, random_problem, user_tanh_cell

import perceptron1_jax as p1

L = p1.LayerSpec
USER = "user_tanh_resets"


def packed_rows(rng, batch, time, with_lengths):
    """Per row its length and its segments ``[(start, stop), ...]`` covering ``[0, length)``, and the
    ``(batch, time)`` resets: True at each segment start after the first, at random at step 0, and at
    random on padding (where a reset changes nothing)."""
    lengths = rng.integers(1, time + 1, batch) if with_lengths else np.full(batch, time)
    resets = np.zeros((batch, time), bool)
    rows = []
    for b, length in enumerate(lengths):
        starts = [0] + [t for t in range(1, length) if rng.random() < 0.35]
        resets[b, starts[1:]] = True
        resets[b, 0] = rng.random() < 0.5
        resets[b, length:] = rng.random(time - length) < 0.5
        rows.append(list(zip(starts, starts[1:] + [int(length)])))
    return lengths, resets, rows


def unpacked(spec, xs, targets, rows, *, last_only=False):
    """Every segment (or each row's last one) as its own row from step 0, padded with its row's other
    steps (unread past the segment's length): ``(xs, targets, lengths)``."""
    time = xs.shape[1]
    pieces = [(b, start, stop) for b, segs in enumerate(rows) for start, stop in (segs[-1:] if last_only else segs)]
    index = np.array([[(start + t) % time for t in range(time)] for b, start, _ in pieces])
    row = np.array([b for b, _, _ in pieces])
    xs_u = xs[row[:, None], index]
    targets_u = targets[row[:, None], index] if spec.many_to_many else targets[row]
    return xs_u, targets_u, jnp.asarray([stop - start for _, start, stop in pieces], jnp.int32), pieces


def check_packing(spec, seed=0, *, batch=3, time=9, with_lengths=True, lean=None):
    rng = np.random.default_rng(seed)
    params, xs, targets, _ = random_model(seed, spec, batch, time)
    lengths, resets, rows = packed_rows(rng, batch, time, with_lengths)
    lengths, resets = jnp.asarray(lengths, jnp.int32), jnp.asarray(resets)
    xs_u, targets_u, lengths_u, pieces = unpacked(spec, xs, targets, rows, last_only=not spec.many_to_many)

    out = p1.model_apply(params, xs, spec, lengths, resets=resets)
    out_u = p1.model_apply(params, xs_u, spec, lengths_u)
    if spec.many_to_many:
        for k, (b, start, stop) in enumerate(pieces):
            np.testing.assert_allclose(out[b, start:stop], out_u[k, :stop - start], rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(out, out_u, rtol=1e-10, atol=1e-12)
    loss, grads = p1.model_bptt(params, xs, targets, spec, lengths, resets=resets, lean=lean)
    loss_u, grads_u = p1.model_bptt(params, xs_u, targets_u, spec, lengths_u)
    np.testing.assert_allclose(loss, loss_u, rtol=1e-10)
    assert_trees_close(grads, grads_u, rtol=1e-10, atol=1e-12)
    reference = jax.grad(p1.model_loss)(params, xs, targets, spec, lengths, resets=resets)
    assert_trees_close(grads, reference, rtol=1e-6, atol=1e-12)


CELLS = ["elman", "lstm", "gru", "mingru", "minlstm", USER]


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_a_packed_batch_equals_its_segments_run_alone(cell, bidirectional, x64):
    loss = "mse" if bidirectional else "cross_entropy"
    with user_tanh_cell(USER):
        spec = p1.ModelSpec((L(cell, 4, bidirectional), L(cell, 3)), 3, input_size=2, many_to_many=True, loss=loss)
        check_packing(spec, seed=CELLS.index(cell))


@pytest.mark.parametrize("cell", ["lstm", "gru", USER])
def test_many_to_one_reads_the_last_segment(cell, x64):
    with user_tanh_cell(USER):
        spec = p1.ModelSpec((L(cell, 4), L(cell, 3)), 3, input_size=2, loss="mse" if cell == "gru" else "cross_entropy")
        check_packing(spec, seed=7)


def test_tokens_without_lengths(x64):
    spec = p1.ModelSpec((L("gru", 4, True),), 5, vocab_size=7, embed_size=3, many_to_many=True)
    check_packing(spec, with_lengths=False)


@pytest.mark.parametrize("form", ["lean", "associative", "wavefront", "fused_directions"])
def test_every_loop_form(form, x64):
    if form == "associative":
        spec = p1.ModelSpec((L("mingru", 4, True, scan="associative"), L("minlstm", 3, scan="associative")), 3,
                            input_size=2, many_to_many=True)
    elif form == "wavefront":
        spec = p1.ModelSpec((L("lstm", 4), L("gru", 3), L("elman", 3)), 3, input_size=2, many_to_many=True,
                            forms=p1.LoopForms(wavefront=True, hoist=True))
    else:
        spec = p1.ModelSpec((L("lstm", 4, True), L("gru", 3)), 3, input_size=2, many_to_many=True,
                            forms=p1.LoopForms(fused_directions=form == "fused_directions"))
    check_packing(spec, seed=3, lean=3 if form == "lean" else None)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "mingru", USER])
def test_single_layer_functions_with_resets(cell, x64):
    """``unroll``/``unroll_bptt``/``bptt``/``loss``/``predict``/``accuracy`` take resets; the explicit
    gradients equal ``jax.grad`` of the plain path (T = 1 and batch = 1 included); h0 feeds only a
    row's first segment."""
    with user_tanh_cell(USER):
        for seed, (batch, time) in enumerate([(3, 6), (1, 1), (1, 5), (4, 1)]):
            params, xs, labels, lengths = random_problem(seed, "elman" if cell == USER else cell, batch, time, 2, 3,
                                                         4, many_to_many=seed % 2 == 0, with_lengths=True)
            if cell == USER:  # the single-layer functions take a user cell: sizes from xs and the readout
                fresh = p1.init_params(jax.random.key(seed), USER, 2, 3, 4, jnp.float64)
                params = {"cell": jax.tree.map(lambda a: a + 0.1, fresh["cell"]), "readout": params["readout"]}
            resets = jnp.asarray(np.random.default_rng(seed).random((batch, time)) < 0.4)
            h0 = jnp.asarray(np.random.default_rng(seed).standard_normal((batch, 3)))
            h0 = (h0, 2 * h0) if cell == "lstm" else h0
            loss, grads = p1.bptt(params, xs, labels, cell, lengths, h0, resets=resets)
            value, reference = jax.value_and_grad(p1.loss)(params, xs, labels, cell, lengths, h0, resets=resets)
            np.testing.assert_allclose(loss, value, rtol=1e-12)
            assert_trees_close(grads, reference, rtol=1e-6, atol=1e-12)

            assert_trees_close(_unroll_grads(p1.unroll_bptt, params, xs, cell, lengths, h0, resets),
                               _unroll_grads(p1.unroll, params, xs, cell, lengths, h0, resets), rtol=1e-6, atol=1e-12)
            # A row starting with a reset ignores h0; accuracy and predict take the resets too.
            first = resets.at[:, 0].set(True)
            hs_h0, _ = p1.unroll(params, xs, cell, lengths, h0, resets=first)
            hs_zero, _ = p1.unroll(params, xs, cell, lengths, None, resets=first)
            np.testing.assert_allclose(hs_h0, hs_zero, rtol=1e-13, atol=1e-15)
            if labels.ndim == 1:
                logits = p1.predict(params, xs, cell, lengths, h0, resets=resets)
                hs, _ = p1.unroll(params, xs, cell, lengths, h0, resets=resets)
                last = hs[jnp.arange(batch), lengths - 1]
                np.testing.assert_allclose(logits, last @ params["readout"]["W"] + params["readout"]["b"],
                                           rtol=1e-12)
                accuracy = p1.accuracy(params, xs, labels, cell, lengths, h0, resets=resets)
                np.testing.assert_allclose(accuracy, np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(labels)))


def _unroll_grads(unroll, params, xs, cell, lengths, h0, resets):
    """Gradients w.r.t. params and h0 of a loss of every h_t and of the final carry."""
    def f(p, h):
        hs, final = unroll(p, xs, cell, lengths, h, resets=resets)
        return jnp.sum(jnp.sin(hs)) + jnp.sum(jnp.cos(jax.tree.leaves(final)[0]))
    return jax.grad(f, argnums=(0, 1))(params, h0)


def test_resets_without_any_true_change_nothing(x64):
    spec = p1.ModelSpec((L("lstm", 4, True), L("gru", 3)), 3, input_size=2, many_to_many=True)
    params, xs, targets, lengths = random_model(0, spec, 3, 5, with_lengths=True)
    none = p1.model_bptt(params, xs, targets, spec, lengths)
    false = p1.model_bptt(params, xs, targets, spec, lengths, resets=jnp.zeros((3, 5), bool))
    assert_trees_close(false, none, rtol=1e-14)


def test_gradient_flow_and_windows_take_resets(x64):
    spec = p1.ModelSpec((L("gru", 4, True), L("lstm", 3)), 3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(1, spec, 1, 8)
    resets = jnp.zeros((1, 8), bool).at[0, 5].set(True)
    flows = p1.model_gradient_flow(params, xs, targets, spec, resets=resets)
    # Each segment alone: the packed loss is the mean over 8 steps, a segment's over its own steps.
    for start, stop in ((0, 5), (5, 8)):
        alone = p1.model_gradient_flow(params, xs[:, start:stop], targets[:, start:stop], spec)
        for layer, layer_alone in zip(flows, alone):
            for d in layer:
                scale = (stop - start) / 8
                np.testing.assert_allclose(layer[d].dh_norm[start:stop], scale * layer_alone[d].dh_norm, rtol=1e-10)
                np.testing.assert_allclose(layer[d].recurrent_contribution[start:stop],
                                           scale * layer_alone[d].recurrent_contribution, rtol=1e-10, atol=1e-14)
    # Truncated BPTT: one window over everything is the full explicit BPTT; a window after a reset
    # starts afresh, as that segment run alone.
    uni = p1.ModelSpec((L("gru", 4), L("lstm", 3)), 3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(2, uni, 1, 8)
    resets = jnp.zeros((1, 8), bool).at[0, 4].set(True)
    _, results, _ = p1.run_windows(params, xs, targets, uni, k1=8, resets=resets)
    assert_trees_close(results[0][2], p1.model_bptt(params, xs, targets, uni, resets=resets)[1], rtol=1e-12)
    _, chunks, _ = p1.run_windows(params, xs, targets, uni, k1=4, resets=resets)
    assert_trees_close(chunks[1][2], p1.model_bptt(params, xs[:, 4:], targets[:, 4:], uni)[1], rtol=1e-12)


@pytest.mark.parametrize("bad, message", [
    (jnp.zeros((3, 5), jnp.int32), "resets: expected dtype bool"),
    (jnp.zeros((3, 4), bool), r"resets: expected shape \(3, 5\) \(batch, time\), got \(3, 4\)"),
    ([[True] * 5] * 2, r"resets: expected shape \(3, 5\)"),
    ("yes", "resets: expected"),
])
def test_malformed_resets_are_refused_by_name(bad, message):
    spec = p1.ModelSpec((L("gru", 4),), 3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(0, spec, 3, 5, dtype=jnp.float32)
    for call in (lambda: p1.model_bptt(params, xs, targets, spec, resets=bad),
                 lambda: p1.model_apply(params, xs, spec, resets=bad)):
        with pytest.raises((TypeError, ValueError), match=message):
            call()
    single, xs1, labels, _ = random_problem(0, "gru", 3, 5, 2, 4, 3, dtype=jnp.float32)
    with pytest.raises((TypeError, ValueError), match=message):
        p1.bptt(single, xs1, labels, "gru", resets=bad)
