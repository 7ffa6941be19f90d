"""A ``flax.nnx.Module`` built from a :class:`~perceptron1_jax.ModelSpec`, trained by our explicit BPTT.

The module holds the model's parameters in the pinned layout, each array an ``nnx.Param``; its
forward is :func:`perceptron1_jax.model_apply` and its ``loss`` is
:func:`perceptron1_jax.bptt.model_loss_explicit`, whose ``custom_vjp`` makes ``nnx.grad`` run the
explicit backward pass. Train it like any module::

    model = RecurrentModel(spec, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, xs, targets, lengths, key):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(xs, targets, lengths, dropout_key=key))(model)
        optimizer.update(model, grads)
        return loss
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from perceptron1_jax import validate
from perceptron1_jax.bptt import model_loss_explicit
from perceptron1_jax.model import init_model, model_apply
from perceptron1_jax.spec import ModelSpec


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def params_of(state) -> dict:
    """An ``nnx.State`` of a :class:`RecurrentModel` (its ``nnx.state``, or the gradients of
    ``nnx.grad``) -> the plain pinned layout (``{"layers": [...], "head": ..., "embed": ...}``)."""
    to_pure = getattr(nnx, "to_pure_dict", None)
    pure = dict((to_pure(state) if to_pure is not None else state.to_pure_dict())["weights"])
    pure["layers"] = [pure["layers"][k] for k in range(len(pure["layers"]))]
    return pure


class RecurrentModel(nnx.Module):
    """``spec``'s model as an nnx module (parameters ``nnx.Param``, ``params()`` the plain pytree).

    Args:
      spec: the model.
      rngs: ``nnx.Rngs``; the ``params`` stream initializes the weights (:func:`~perceptron1_jax.init_model`).
      dtype: parameter dtype.
      params: optional plain params in ``spec``'s layout instead of a fresh init (e.g. ``from_torch``).
    """

    def __init__(self, spec: ModelSpec, *, rngs: nnx.Rngs, dtype=jnp.float32, params=None):
        self.spec = validate.check_spec(spec)
        if params is None:
            params = init_model(rngs.params(), spec, dtype)
        else:
            validate.check_model_params(params, spec)
        self.weights = nnx.data(jax.tree.map(nnx.Param, params))

    def params(self) -> dict:
        """The plain parameter pytree (arrays, or tracers under ``nnx.grad``/``nnx.jit``)."""
        return jax.tree.map(lambda v: v[...], self.weights, is_leaf=_is_variable)

    def __call__(self, xs, lengths=None, *, dropout_key=None):
        """Logits or predictions, as :func:`perceptron1_jax.model_apply`."""
        return model_apply(self.params(), xs, self.spec, lengths, dropout_key)

    def loss(self, xs, targets, lengths=None, *, dropout_key=None):
        """The model's loss; its gradient (``nnx.grad``) is the explicit BPTT."""
        return model_loss_explicit(self.params(), xs, targets, self.spec, lengths, dropout_key)
