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

Layered models (stacked, bidirectional, embeddings, dropout, cross-entropy or MSE heads)::

    spec = ModelSpec([LayerSpec("lstm", 128, bidirectional=True), LayerSpec("lstm", 64)], num_outputs=2,
                     vocab_size=1000, embed_size=64, dropout=0.2)
    params = init_model(key, spec)
    outputs = model_apply(params, ids, spec, lengths)                  # (batch, 2) logits
    value, grads = model_bptt(params, ids, labels, spec, lengths, dropout_key=key)  # explicit BPTT

Your own data (npz, text, text classes, CSV), then text and predictions from a trained run::

    state = train(TrainConfig(layers="lstm:256", seq_len=64), "runs/book", data=load_data("book.txt"))
    run = load_run("runs/book")
    text = generate(run, "It was", 300, temperature=0.8, seed=1)
    result = predict_examples(run, xs, lengths)       # .predictions, .probabilities
    export_params("runs/book", "book.npz")            # layers/0/fwd/W_x, ...: numpy.load opens it
    params = load_params("book.npz")                  # back in the model's layout
"""

from perceptron1_jax.bptt import BPTTExtras, ModelExtras, bptt, model_bptt, model_loss_explicit, unroll_bptt
from perceptron1_jax.cells import CELLS
from perceptron1_jax.custom_cells import custom_cell, register_cell
from perceptron1_jax.data import Data, DataError, DataInfo, from_arrays, load_data
from perceptron1_jax.diagnostics import GradientFlow
from perceptron1_jax.diagnostics import decay_rate
from perceptron1_jax.diagnostics import gradient_flow
from perceptron1_jax.diagnostics import model_gradient_flow
from perceptron1_jax.diagnostics import set_spectral_radius
from perceptron1_jax.export import export_params, load_params
from perceptron1_jax.generate import generate
from perceptron1_jax.layers import set_fused_directions
from perceptron1_jax.alignment import gradient_alignment, model_gradient_alignment
from perceptron1_jax.online import OnlineStream, model_online_grad, online_grad, online_updates
from perceptron1_jax.model import accuracy, init_model, init_params, loss, model_apply, model_loss, model_step, predict
from perceptron1_jax.optim import make_optimizer
from perceptron1_jax.parallel import direction_mesh, initialize_distributed, make_mesh, use_cpu_devices
from perceptron1_jax.prediction import predict_examples
from perceptron1_jax.scan import set_hoist_input_projection
from perceptron1_jax.runs import Run, load_run
from perceptron1_jax.spec import LayerSpec, LoopForms, ModelSpec
from perceptron1_jax.train import TrainConfig
from perceptron1_jax.train import load_checkpoint
from perceptron1_jax.train import train
from perceptron1_jax.training.population import Population
from perceptron1_jax.wavefront import set_wavefront
from perceptron1_jax.truncated import run_windows
from perceptron1_jax.unroll import step, unroll

__version__ = "0.1.0"

__all__ = (
    "BPTTExtras",
    "CELLS",
    "Data",
    "DataError",
    "DataInfo",
    "GradientFlow",
    "LayerSpec",
    "LoopForms",
    "ModelExtras",
    "ModelSpec",
    "OnlineStream",
    "Population",
    "Run",
    "TrainConfig",
    "accuracy",
    "bptt",
    "custom_cell",
    "decay_rate",
    "export_params",
    "from_arrays",
    "generate",
    "gradient_alignment",
    "gradient_flow",
    "init_model",
    "initialize_distributed",
    "load_params",
    "init_params",
    "load_checkpoint",
    "load_data",
    "load_run",
    "loss",
    "make_mesh",
    "direction_mesh",
    "make_optimizer",
    "model_apply",
    "model_bptt",
    "model_gradient_flow",
    "model_gradient_alignment",
    "model_loss",
    "model_online_grad",
    "model_loss_explicit",
    "model_step",
    "online_grad",
    "online_updates",
    "predict",
    "predict_examples",
    "register_cell",
    "run_windows",
    "set_fused_directions",
    "set_hoist_input_projection",
    "set_spectral_radius",
    "set_wavefront",
    "step",
    "train",
    "unroll",
    "unroll_bptt",
    "use_cpu_devices",
)
