"""``python -m perceptron1_jax``: the ``perceptron1`` command."""

import sys

from perceptron1_jax.cli import main

sys.exit(main())
