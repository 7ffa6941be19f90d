"""Online gradients against their oracles, in float64: exact RTRL equals the explicit BPTT for
every cell (built-in and two user cells, one with two carries), many-to-one and many-to-many,
lengths, h0 and resets; SnAp-1 equals it for the diagonal recurrences; e-prop equals it at T = 1;
every approximation differs from it at T > 1; UORO is unbiased (the error of the mean over K keys
falls like 1/sqrt(K)); bad requests are refused by name."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_problem, user_tanh_cell

import perceptron1_jax as p1
from perceptron1_jax.cells import CELLS

BUILT_IN = ("elman", "lstm", "gru", "mingru", "minlstm")
DIAGONAL = ("mingru", "minlstm", "user_linear")


def _peep_shapes(i, h):
    return {"W": (i, 4 * h), "U": (h, 4 * h), "b": (4 * h,), "p_f": (h,)}


def _peep_init(key, i, h, dtype):
    return {name: jax.random.normal(jax.random.fold_in(key, k), shape, dtype) * 0.3
            for k, (name, shape) in enumerate(_peep_shapes(i, h).items())}


def _peep_step(params, carry, x):
    h, c = carry
    zi, zf, zg, zo = jnp.split(x @ params["W"] + h @ params["U"] + params["b"], 4, axis=-1)
    c = jax.nn.sigmoid(zf + params["p_f"] * c) * c + jax.nn.sigmoid(zi) * jnp.tanh(zg)
    return jax.nn.sigmoid(zo) * jnp.tanh(c), c


def _linear_step(params, carry, x):
    a, b = _linear(params, x)
    return (a * carry[0] + b,)


def _linear(params, x):
    return jax.nn.sigmoid(x @ params["A"]), jnp.tanh(x @ params["B"] + params["c"])


@pytest.fixture(scope="module", autouse=True)
def user_cells():
    """Three user cells for this module: a tanh cell (one carry), a peephole LSTM (two carries)
    and a diagonal (linear) recurrence."""
    p1.register_cell(p1.custom_cell("user_peephole", _peep_shapes, _peep_init, _peep_step, carry_size=2))
    lin_shapes = lambda i, h: {"A": (i, h), "B": (i, h), "c": (h,)}  # noqa: E731
    p1.register_cell(p1.custom_cell("user_linear", lin_shapes, lambda k, i, h, d: {
        n: jax.random.normal(jax.random.fold_in(k, j), s, d) for j, (n, s) in enumerate(lin_shapes(i, h).items())},
        _linear_step, linear=_linear))
    with user_tanh_cell("user_tanh"):
        yield
    CELLS.pop("user_peephole"), CELLS.pop("user_linear")


def problem(cell, seed, batch, time, *, many_to_many, lengths, h0=False, resets=False):
    params, xs, labels, lens = random_problem(seed, cell, batch, time, 3, 4, 3, many_to_many=many_to_many,
                                              with_lengths=lengths)
    rng = np.random.default_rng(seed + 100)
    carry = None
    if h0:
        parts = [jnp.asarray(rng.standard_normal((batch, 4)) * 0.5) for _ in range(CELLS[cell].carry_size)]
        carry = parts[0] if len(parts) == 1 else tuple(parts)
    starts = jnp.asarray(rng.random((batch, time)) < 0.3) if resets else None
    return params, xs, labels, lens, carry, starts


def bptt_of(cell, params, xs, labels, lengths, h0, resets):
    return p1.bptt(params, xs, labels, cell, lengths, h0, resets=resets)


# (batch, time, many_to_many, lengths, h0, resets): T = 1 and batch = 1 included
CASES = [(3, 5, False, True, True, False), (2, 4, True, True, False, True), (1, 1, False, False, True, False),
         (1, 6, True, False, True, True), (3, 1, True, True, False, False)]


@pytest.mark.parametrize("cell", [*BUILT_IN, "user_tanh", "user_peephole"])
def test_exact_rtrl_equals_bptt(x64, cell):
    for k, (batch, time, m2m, lengths, h0, resets) in enumerate(CASES):
        params, xs, labels, lens, carry, starts = problem(cell, k, batch, time, many_to_many=m2m, lengths=lengths,
                                                          h0=h0, resets=resets)
        value, grads = p1.online_grad(params, xs, labels, cell, lens, carry, method="rtrl", resets=starts)
        ref_value, ref_grads = bptt_of(cell, params, xs, labels, lens, carry, starts)
        np.testing.assert_allclose(value, ref_value, rtol=1e-9)
        assert_trees_close(grads, ref_grads, rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("cell", DIAGONAL)
def test_snap1_is_exact_for_diagonal_recurrences(x64, cell):
    for k, (batch, time, m2m, lengths, h0, resets) in enumerate(CASES[:2]):
        params, xs, labels, lens, carry, starts = problem(cell, k, batch, time, many_to_many=m2m, lengths=lengths,
                                                          h0=h0, resets=resets)
        _, grads = p1.online_grad(params, xs, labels, cell, lens, carry, method="snap1", resets=starts)
        assert_trees_close(grads, bptt_of(cell, params, xs, labels, lens, carry, starts)[1], rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("cell", [*BUILT_IN, "user_peephole"])
def test_every_method_is_exact_at_one_step(x64, cell):
    params, xs, labels, lens, carry, _ = problem(cell, 7, 3, 1, many_to_many=False, lengths=False, h0=True)
    ref = bptt_of(cell, params, xs, labels, lens, carry, None)[1]
    for method in ("snap1", "eprop"):
        _, grads = p1.online_grad(params, xs, labels, cell, lens, carry, method=method)
        assert_trees_close(grads, ref, rtol=1e-9, atol=1e-13)


def relative_gap(grads, ref):
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(t["cell"])]) for t in (grads, ref))
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("cell", ["elman", "lstm", "gru", "user_peephole"])
def test_each_approximation_differs_from_bptt_after_one_step(x64, cell):
    params, xs, labels, lens, carry, _ = problem(cell, 3, 3, 6, many_to_many=True, lengths=True, h0=True)
    ref = bptt_of(cell, params, xs, labels, lens, carry, None)[1]
    for method, extra in (("snap1", {}), ("eprop", {}), ("eprop", {"feedback": "random"}), ("uoro", {})):
        value, grads = p1.online_grad(params, xs, labels, cell, lens, carry, method=method, key=jax.random.key(0),
                                      **extra)
        assert relative_gap(grads, ref) > 1e-3, (method, extra)
        np.testing.assert_allclose(value, p1.loss(params, xs, labels, cell, lens, carry), rtol=1e-12)
        if extra:  # the readout's own gradient is exact whatever the learning signal
            assert_trees_close(grads["readout"], ref["readout"], rtol=1e-9, atol=1e-13)


def test_uoro_is_unbiased_its_error_falls_like_one_over_sqrt_k(x64):
    params, xs, labels, lens, carry, _ = problem("gru", 5, 2, 5, many_to_many=True, lengths=False)
    ref = np.concatenate([np.ravel(x) for x in jax.tree.leaves(bptt_of("gru", params, xs, labels, lens, carry,
                                                                        None)[1]["cell"])])
    keys = jax.random.split(jax.random.key(1), 4096)
    each = jax.jit(jax.vmap(lambda k: p1.online_grad(params, xs, labels, "gru", method="uoro", key=k)[1]["cell"]))(keys)
    flat = np.concatenate([np.asarray(x).reshape(4096, -1) for x in jax.tree.leaves(each)], axis=1)  # (K, P)
    error_64 = np.mean([np.linalg.norm(flat[i:i + 64].mean(0) - ref) for i in range(0, 4096, 64)])
    error_4096 = np.linalg.norm(flat.mean(0) - ref)
    ratio = error_4096 / error_64  # 1/8 for an unbiased estimator; near 1 for a biased one
    spread = np.linalg.norm(flat - flat.mean(0), axis=1).mean() / np.linalg.norm(ref)
    print(f"UORO, GRU H4 T5: error of the mean {error_64:.3e} (K=64), {error_4096:.3e} (K=4096), ratio {ratio:.3f}; "
          f"one estimate's distance from the mean / |grad| = {spread:.2f}")
    assert 1 / 16 < ratio < 1 / 4, ratio


def test_bad_requests_are_refused_by_name():
    params, xs, labels, _ = random_problem(0, "gru", 2, 3, 3, 4, 3, dtype=jnp.float32)
    with pytest.raises(ValueError, match=r"method: expected one of \['rtrl', 'snap1', 'eprop', 'uoro'\], got 'bptt'"):
        p1.online_grad(params, xs, labels, "gru", method="bptt")
    with pytest.raises(ValueError, match=r"key: expected a jax.random key for method 'uoro'"):
        p1.online_grad(params, xs, labels, "gru", method="uoro")
    with pytest.raises(ValueError, match=r"key: expected a jax.random key for method 'eprop' \(its random feedback"):
        p1.online_grad(params, xs, labels, "gru", method="eprop", feedback="random")
    with pytest.raises(ValueError, match=r"feedback: expected 'symmetric' for method 'rtrl'"):
        p1.online_grad(params, xs, labels, "gru", method="rtrl", feedback="random", key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"labels: "):
        p1.online_grad(params, xs, labels[:1], "gru", method="rtrl")
    from perceptron1_jax import online

    with pytest.raises(ValueError, match=r"method: exact RTRL's influence needs batch 4096 x state 2048 x params"):
        online._check_influence_fits(4096, 2048, 4 * 1024 * 2048, jnp.dtype(jnp.float32))


STACKS = [  # (layers, tokens, loss, many_to_many, lengths, resets, carries0, batch, time)
    ((("gru", 4), ("lstm", 3)), False, "cross_entropy", True, True, True, True, 3, 5),
    ((("elman", 3), ("user_peephole", 3), ("minlstm", 2)), True, "mse", False, True, False, True, 2, 4),
    ((("lstm", 3), ("gru", 2)), True, "cross_entropy", False, False, True, False, 1, 1),
    ((("mingru", 3), ("minlstm", 4)), False, "mse", True, False, False, False, 2, 6),
]


def stack_problem(layers, tokens, loss, many_to_many, lengths, resets, carries0, batch, time, seed=0):
    from helpers import random_model

    spec = p1.ModelSpec(tuple(p1.LayerSpec(cell, size) for cell, size in layers), num_outputs=3,
                        input_size=None if tokens else 2, vocab_size=7 if tokens else None,
                        embed_size=3 if tokens else None, loss=loss, many_to_many=many_to_many)
    params, xs, targets, lens = random_model(seed, spec, batch, time, with_lengths=lengths)
    rng = np.random.default_rng(seed + 1)
    starts = jnp.asarray(rng.random((batch, time)) < 0.3) if resets else None
    first = None
    if carries0:
        first = tuple({"fwd": tuple(jnp.asarray(rng.standard_normal((batch, size)) * 0.5)
                                    for _ in range(CELLS[cell].carry_size))} for cell, size in layers)
        first = tuple({"fwd": c["fwd"][0] if len(c["fwd"]) == 1 else c["fwd"]} for c in first)
    return spec, params, xs, targets, lens, starts, first


@pytest.mark.parametrize("case", range(len(STACKS)))
def test_exact_rtrl_of_a_stack_equals_model_bptt(x64, case):
    spec, params, xs, targets, lens, starts, first = stack_problem(*STACKS[case])
    value, grads = p1.model_online_grad(params, xs, targets, spec, lens, method="rtrl", resets=starts, carries0=first)
    ref_value, ref_grads = p1.model_bptt(params, xs, targets, spec, lens, resets=starts, carries0=first)
    np.testing.assert_allclose(value, ref_value, rtol=1e-9)
    assert_trees_close(grads, ref_grads, rtol=1e-9, atol=1e-13)
    if case == 3:  # a stack of diagonal recurrences: SnAp-1 keeps every influence that is not zero
        _, snap = p1.model_online_grad(params, xs, targets, spec, lens, method="snap1")
        assert_trees_close(snap, ref_grads, rtol=1e-9, atol=1e-13)
    else:
        _, snap = p1.model_online_grad(params, xs, targets, spec, lens, method="snap1", resets=starts,
                                       carries0=first)
        gap = relative_gap({"cell": snap["layers"]}, {"cell": ref_grads["layers"]})
        assert gap > 1e-3 or xs.shape[1] == 1, gap


def test_a_bidirectional_stack_is_refused_by_name(x64):
    spec = p1.ModelSpec((p1.LayerSpec("gru", 3, bidirectional=True),), num_outputs=2, input_size=2)
    from helpers import random_model

    params, xs, targets, _ = random_model(0, spec, 2, 3)
    with pytest.raises(ValueError, match=r"spec: expected one-direction layers .*got a bidirectional layer 0"):
        p1.model_online_grad(params, xs, targets, spec, method="rtrl")


def test_alignment_reports_cosine_and_norm_ratio_per_parameter(x64):
    params, xs, labels, lens, carry, _ = problem("elman", 4, 3, 6, many_to_many=True, lengths=True, h0=True)
    table = p1.gradient_alignment(params, xs, labels, "elman", lens, carry, methods=("rtrl", "snap1"))
    assert set(table) == {"rtrl", "snap1"} and set(table["rtrl"]) == {"cell/W_x", "cell/W_h", "cell/b", "readout/W",
                                                                       "readout/b", "all"}
    for group in table["rtrl"].values():
        assert group["cosine"] == pytest.approx(1, abs=1e-12) and group["norm_ratio"] == pytest.approx(1, abs=1e-9)
    assert table["snap1"]["cell/W_h"]["cosine"] < 1 - 1e-6 and table["snap1"]["readout/W"]["cosine"] == pytest.approx(1)
    spec, params, xs, targets, lens, _, _ = stack_problem(*STACKS[3])
    stack = p1.model_gradient_alignment(params, xs, targets, spec, lens, methods="snap1")
    assert stack["snap1"]["all"]["cosine"] == pytest.approx(1, abs=1e-12)  # exact for diagonal stacks
    with pytest.raises(ValueError, match=r"methods: expected one or more of"):
        p1.gradient_alignment(params, xs, targets, "elman", methods=())


@pytest.mark.standard_promotion
def test_gradflow_prints_the_alignment_table(tmp_path, capsys):
    from perceptron1_jax.cli import main

    args = ["gradflow", "--cell", "gru", "--task", "copy", "--seq-len", "5", "--hidden", "4", "--batch", "2",
            "--png", str(tmp_path / "flow.png")]
    assert main([*args, "--alignment", "rtrl,eprop,uoro"]) == 0
    out = capsys.readouterr().out
    assert "alignment with the explicit BPTT gradient, gru at init: cosine (|online| / |bptt|)" in out
    row = next(line for line in out.splitlines() if line.startswith("all "))
    assert row.split()[1:3] == ["1.000", "(1.00)"], row  # exact RTRL, float32
    assert main([*args, "--alignment", "rtrl,bptt"]) == 2
    assert capsys.readouterr().err.strip() == ("perceptron1: error: --alignment: expected one or more of "
                                               "rtrl,snap1,eprop,uoro, got rtrl,bptt")
