"""The public API: every name in __all__ exists, and the documented keyword names are as written."""

import inspect

import perceptron1_jax as p1


def test_all_names_exist():
    for name in p1.__all__:
        assert hasattr(p1, name), name


def test_signatures():
    def params_of(fn):
        return list(inspect.signature(fn).parameters)

    assert params_of(p1.init_params) == ["key", "cell", "input_size", "hidden_size", "num_classes", "dtype"]
    assert params_of(p1.unroll)[:5] == ["params", "xs", "cell", "lengths", "h0"]
    assert params_of(p1.unroll_bptt)[:5] == ["params", "xs", "cell", "lengths", "h0"]
    assert params_of(p1.predict)[:4] == ["params", "xs", "cell", "lengths"]
    assert params_of(p1.loss)[:5] == ["params", "xs", "labels", "cell", "lengths"]
    assert params_of(p1.bptt)[:5] == ["params", "xs", "labels", "cell", "lengths"]
    assert "return_extras" in params_of(p1.bptt)
    assert params_of(p1.load_checkpoint) == ["path", "member"]  # p1.load_checkpoint(run, member=k) (#18)
    assert "population" in params_of(p1.train)
    assert params_of(p1.Population) == ["seeds", "lr", "momentum", "clip", "clip_value", "dropout", "weight_decay"]
