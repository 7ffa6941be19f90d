"""perceptron1_jax: recurrent networks trained with explicit Backpropagation Through Time, as pure
JAX functions.

Public API (shapes: ``xs`` is ``(batch, time, input)``, hidden states ``(batch, hidden)``)::

    params = init_params(key, "lstm", input_size, hidden_size, num_classes)
    hs, final = unroll(params, xs, "lstm")           # plain lax.scan (autodiff reference)
    logits = predict(params, xs, "lstm")             # many-to-one (batch, classes)
    value = loss(params, xs, labels, "lstm")         # softmax cross-entropy
    value, grads = bptt(params, xs, labels, "lstm")  # explicit reverse-scan BPTT
    hs, final = unroll_bptt(params, xs, "lstm")      # unroll whose VJP is the explicit BPTT
    state = train(TrainConfig(task="copy", cell="lstm"), out="runs/copy")
"""

from perceptron1_jax.bptt import BPTTExtras, bptt, unroll_bptt
from perceptron1_jax.cells import CELLS
from perceptron1_jax.diagnostics import GradientFlow
from perceptron1_jax.diagnostics import decay_rate
from perceptron1_jax.diagnostics import gradient_flow
from perceptron1_jax.diagnostics import set_spectral_radius
from perceptron1_jax.model import accuracy, init_params, loss, predict
from perceptron1_jax.optim import make_optimizer
from perceptron1_jax.train import TrainConfig
from perceptron1_jax.train import load_checkpoint
from perceptron1_jax.train import train
from perceptron1_jax.truncated import run_windows
from perceptron1_jax.unroll import unroll

__version__ = "0.1.0"

__all__ = (
    "BPTTExtras",
    "CELLS",
    "GradientFlow",
    "TrainConfig",
    "accuracy",
    "bptt",
    "decay_rate",
    "gradient_flow",
    "init_params",
    "load_checkpoint",
    "loss",
    "make_optimizer",
    "predict",
    "run_windows",
    "set_spectral_radius",
    "train",
    "unroll",
    "unroll_bptt",
)
