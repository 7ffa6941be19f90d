"""The run that tests/scripts/two_processes.py trains in two processes and tests/test_parallel.py
in one: a GRU classifier with sequence lengths, float64."""

import numpy as np

from perceptron1_jax.data import from_arrays
from perceptron1_jax.train import TrainConfig

rng = np.random.default_rng(0)
DATA = from_arrays(rng.standard_normal((64, 6, 3)), labels=rng.integers(0, 3, 64), lengths=rng.integers(1, 7, 64))
CONFIG = TrainConfig(cell="gru", hidden=8, batch_size=8, steps=6, checkpoint_every=3, eval_every=3, log_every=3,
                     dtype="float64", target_accuracy=0)
