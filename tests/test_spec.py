"""ModelSpec/LayerSpec: hashable, static under jit, every bad field refused when the spec is made."""

import jax
import pytest

import perceptron1_jax as p1
from perceptron1_jax.spec import param_shapes, parse_layers, spec_from_dict, spec_to_dict


def test_specs_are_hashable_and_lists_become_tuples():
    a = p1.ModelSpec([p1.LayerSpec("lstm", 8, True), p1.LayerSpec("gru", 4)], 3, input_size=2)
    b = p1.ModelSpec((p1.LayerSpec("lstm", 8, True), p1.LayerSpec("gru", 4)), 3, input_size=2)
    assert a == b and hash(a) == hash(b) and isinstance(a.layers, tuple)
    assert a.layers[0].features == 16 and a.head_features == 4 and a.layer_input_size(1) == 16
    assert spec_from_dict(spec_to_dict(a)) == a


@pytest.mark.parametrize("make, message", [
    (lambda: p1.LayerSpec("rnn", 4),
     "cell: expected one of \\['elman', 'gru', 'lstm', 'mingru', 'minlstm'\\], got 'rnn'"),
    (lambda: p1.LayerSpec("gru", 0), "hidden_size: expected a positive int, got 0"),
    (lambda: p1.LayerSpec("gru", 2.5), "hidden_size: expected a positive int, got float 2.5"),
    (lambda: p1.LayerSpec("gru", 4, bidirectional=1), "bidirectional: expected True or False, got int 1"),
    (lambda: p1.ModelSpec([], 3, input_size=2), "layers: expected a non-empty sequence of LayerSpec"),
    (lambda: p1.ModelSpec(["lstm"], 3, input_size=2), "layers\\[0\\]: expected a LayerSpec, got str 'lstm'"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 0, input_size=2), "num_outputs: expected a positive int, got 0"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3), "input_size/vocab_size: expected exactly one"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, vocab_size=5, embed_size=2),
     "input_size/vocab_size: expected exactly one"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, vocab_size=5), "embed_size: expected a positive int"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, embed_size=2),
     "embed_size: expected None for float inputs"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=-1), "input_size: expected a positive int, got -1"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, loss="l1"),
     "loss: expected one of \\['cross_entropy', 'mse'\\], got 'l1'"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, dropout=1.0),
     "dropout: expected a rate in \\[0, 1\\), got 1.0"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, dropout=-0.1), "dropout: expected a rate"),
    (lambda: p1.ModelSpec([p1.LayerSpec("gru", 4)], 3, input_size=2, many_to_many="yes"),
     "many_to_many: expected True or False"),
])
def test_bad_specs_are_refused_when_made(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_parse_layers():
    assert parse_layers("lstm:128, gru:64", bidirectional=True) == (
        p1.LayerSpec("lstm", 128, True), p1.LayerSpec("gru", 64, True))
    for bad in ("lstm", "lstm:", "lstm:x", "", "lstm:128,,gru:2"):
        with pytest.raises(ValueError, match="layers: expected cell:size per layer"):
            parse_layers(bad)
    with pytest.raises(ValueError, match="cell: expected one of"):
        parse_layers("tree:3")


def test_spec_is_static_under_jit():
    spec = p1.ModelSpec([p1.LayerSpec("elman", 3)], 2, input_size=2)
    params = p1.init_model(jax.random.key(0), spec)
    assert jax.tree.map(lambda a: a.shape, params) == {
        "layers": [{"fwd": {"W_x": (2, 3), "W_h": (3, 3), "b": (3,)}}], "head": {"W": (3, 2), "b": (2,)}}
    assert param_shapes(spec) == jax.tree.map(lambda a: a.shape, params,
                                              is_leaf=lambda a: hasattr(a, "shape"))
    traced = jax.jit(p1.init_model, static_argnums=1)(jax.random.key(0), spec)
    assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool((a == b).all()), traced, params)))
