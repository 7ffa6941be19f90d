"""No global switch (float64): the loop forms are a static field of the spec (``LoopForms``) that
``jax.jit`` sees, so two forms compile side by side in one process and give the same numbers; no
function of the library clears JAX's caches; the deprecated setters still choose the form of specs
that leave it unset, with a DeprecationWarning; the field survives a spec's round trip."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_trees_close, random_model

import perceptron1_jax as p1
from perceptron1_jax.bptt import _model_bptt, explicit_model
from perceptron1_jax.spec import spec_from_dict, spec_to_dict

L = p1.LayerSpec
PACKAGE = pathlib.Path(p1.__file__).parent


def two_specs(form):
    layers = ((L("lstm", 4, True), L("gru", 3)) if form == "fused_directions"
              else (L("lstm", 4), L("gru", 3), L("elman", 3)))
    return [p1.ModelSpec(layers, 3, input_size=2, many_to_many=True, forms=p1.LoopForms(**{form: value}))
            for value in (False, True)]


@pytest.mark.parametrize("form", ["hoist", "wavefront", "fused_directions"])
def test_two_forms_compile_side_by_side(form, x64):
    off, on = two_specs(form)
    params, xs, targets, lengths = random_model(0, off, 3, 6, with_lengths=True)
    resets = jnp.asarray(np.random.default_rng(0).random((3, 6)) < 0.3)
    fn = jax.jit(lambda p, spec: explicit_model(p, xs, targets, spec, lengths, resets=resets)[:2],
                 static_argnums=1)
    programs = [fn.lower(params, spec).as_text() for spec in (off, on)]
    assert programs[0] != programs[1]  # two programs, one process, no cache cleared
    (loss_off, grads_off), (loss_on, grads_on) = fn(params, off), fn(params, on)
    np.testing.assert_allclose(loss_on, loss_off, rtol=1e-12)
    assert_trees_close(grads_on, grads_off, rtol=1e-10, atol=1e-13)
    reference = jax.grad(p1.model_loss)(params, xs, targets, on, lengths, resets=resets)
    assert_trees_close(p1.model_bptt(params, xs, targets, on, lengths, resets=resets)[1], reference, rtol=1e-6,
                       atol=1e-13)


def test_no_function_of_the_library_clears_the_caches(monkeypatch):
    assert not [path.name for path in PACKAGE.rglob("*.py") if "clear_caches(" in path.read_text()]
    monkeypatch.setattr(jax, "clear_caches", lambda: pytest.fail("jax.clear_caches() was called"))
    for setter in (p1.set_wavefront, p1.set_fused_directions, p1.set_hoist_input_projection):
        with pytest.warns(DeprecationWarning, match="is deprecated: choose the form per model"):
            previous = setter(True)
        with pytest.warns(DeprecationWarning):
            setter(previous)


def test_the_deprecated_setters_still_choose_the_form(x64):
    spec = p1.ModelSpec((L("lstm", 4), L("gru", 3)), 3, input_size=2, many_to_many=True)
    params, xs, targets, _ = random_model(1, spec, 2, 5)
    default = p1.model_bptt(params, xs, targets, spec)
    compiled = _model_bptt._cache_size()
    with pytest.warns(DeprecationWarning):
        previous = p1.set_wavefront(True)
    try:
        wave = p1.model_bptt(params, xs, targets, spec)
        assert _model_bptt._cache_size() == compiled + 1  # the spec jit saw changed: a new program
    finally:
        with pytest.warns(DeprecationWarning):
            p1.set_wavefront(previous)
    assert_trees_close(wave, default, rtol=1e-10, atol=1e-13)


def test_forms_are_checked_and_written_only_when_chosen():
    with pytest.raises(TypeError, match="wavefront: expected True, False or None, got str 'yes'"):
        p1.LoopForms(wavefront="yes")
    with pytest.raises(TypeError, match="forms: expected a LoopForms, got dict"):
        p1.ModelSpec((L("gru", 3),), 2, input_size=1, forms={"hoist": True})
    plain = p1.ModelSpec((L("gru", 3),), 2, input_size=1)
    assert "forms" not in spec_to_dict(plain) and spec_from_dict(spec_to_dict(plain)) == plain
    chosen = p1.ModelSpec((L("gru", 3),), 2, input_size=1, forms=p1.LoopForms(hoist=True))
    assert spec_from_dict(spec_to_dict(chosen)) == chosen
