"""``python -m perceptron1_jax``: the ``perceptron1`` command."""

from perceptron1_jax.cli import entry

entry()
