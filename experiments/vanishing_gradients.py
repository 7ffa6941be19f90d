"""Vanishing and exploding gradients through time: ||dL/dh_t|| against the lag T - t.

Panel 1: Elman, LSTM and GRU on the copy task, at initialization and after training.
Panel 2: the Elman cell at initialization with its recurrent matrix rescaled to spectral radius
below and above 1 (Pascanu, Mikolov & Bengio 2013: a radius below 1 is sufficient for the
gradient to vanish, above 1 necessary for it to explode).
Table: the fitted geometric rate per step back (< 1 vanishing, > 1 exploding) of every profile.
"""

from __future__ import annotations

import jax
import matplotlib.pyplot as plt
from _common import flow_axes, main_guard, publish, train_run

import perceptron1_jax as p1
from perceptron1_jax import tasks


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 50, hidden: int = 64, steps: int = 2000,
         radii=(0.5, 0.9, 1.0, 1.5, 3.0)):
    if quick:
        lag, hidden, steps, radii = 12, 8, 20, (0.5, 1.5)
    key = jax.random.key(seed)
    data = tasks.copy(jax.random.fold_in(key, 1), 128, lag)
    rows, cells_panel, radius_panel = [], {}, {}
    for cell in ("elman", "lstm", "gru"):
        model = p1.TrainConfig(task="copy", cell=cell, hidden=hidden, seq_len=lag).model_spec
        params = p1.init_model(jax.random.fold_in(key, 2), model)
        run = train_run(out, f"vanishing-{cell}", params=params, task="copy", cell=cell, hidden=hidden, seq_len=lag,
                        lr=1e-3, clip=1.0, steps=steps, seed=seed, eval_every=100)
        final_acc = [r["eval_accuracy"] for r in run.history if "eval_accuracy" in r][-1]
        for stage, weights in (("init", params), (f"trained {run.step} steps", run.params)):
            flow = p1.gradient_flow(weights, data.xs, data.labels, model)[0]["fwd"]
            label = f"{cell}, {stage}"
            cells_panel[label] = flow.dh_norm
            rows.append({"profile": label, "rate_per_step": p1.decay_rate(flow.dh_norm),
                         "dh_first_over_last": float(flow.dh_norm[0] / flow.dh_norm[-1]),
                         "eval_accuracy": final_acc if stage != "init" else float("nan")})
    for radius in radii:
        params = p1.init_params(jax.random.fold_in(key, 3), "elman", data.xs.shape[-1], hidden, tasks.COPY_SYMBOLS)
        flow = p1.gradient_flow(p1.set_spectral_radius(params, radius), data.xs, data.labels, "elman")
        label = f"elman, spectral radius {radius:g}"
        radius_panel[label] = flow.dh_norm
        rows.append({"profile": label, "rate_per_step": p1.decay_rate(flow.dh_norm),
                     "dh_first_over_last": float(flow.dh_norm[0] / flow.dh_norm[-1]),
                     "eval_accuracy": float("nan")})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    flow_axes(left, cells_panel, f"copy task, T = {lag}: init vs trained")
    flow_axes(right, radius_panel, f"Elman at init, T = {lag}: recurrent spectral radius")
    return publish(fig, out, "vanishing_gradients", rows, "Gradient flow: geometric rate of ||dL/dh_t|| per step back")


if __name__ == "__main__":
    main_guard(main)
