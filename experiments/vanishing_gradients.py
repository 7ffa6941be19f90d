"""Vanishing and exploding gradients through time: ||dL/dh_t|| against the lag T - t.

Panel 1: Elman, LSTM and GRU on the copy task, at initialization and after training, each a
population of 5 seeds (the mean profile, the band from the smallest to the largest member).
Panel 2: the Elman cell at initialization with its recurrent matrix rescaled to spectral radius
below and above 1 (Pascanu, Mikolov & Bengio 2013: a radius below 1 is sufficient for the
gradient to vanish, above 1 necessary for it to explode), over 5 initializations.
Table: the fitted geometric rate per step back (< 1 vanishing, > 1 exploding) of every profile,
mean ± standard deviation over the seeds.
"""

from __future__ import annotations

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import flow_axes, main_guard, pm, publish, reached, seeds_for, spread, stacked, train_population

import perceptron1_jax as p1
from perceptron1_jax import tasks
from perceptron1_jax.training.population_step import member_of


def _rates(profiles):
    return [p1.decay_rate(p) for p in profiles]


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 50, hidden: int = 64, steps: int = 2000,
         radii=(0.5, 0.9, 1.0, 1.5, 3.0)):
    if quick:
        lag, hidden, steps, radii = 12, 8, 20, (0.5, 1.5)
    seeds = seeds_for(quick)
    key = jax.random.key(seed)
    data = tasks.copy(jax.random.fold_in(key, 1), 128, lag)
    rows, cells_panel, radius_panel = [], {}, {}
    for cell in ("elman", "lstm", "gru"):
        cfg = p1.TrainConfig(task="copy", cell=cell, hidden=hidden, seq_len=lag, lr=1e-3, clip=1.0, steps=steps,
                             seed=seed, eval_every=100)
        members = p1.training.member_configs(cfg, p1.Population(seeds=seeds))
        init = stacked(lambda m: p1.init_model(jax.random.fold_in(jax.random.key(m.seed), 2), m.model_spec), members)
        state = train_population(out, f"vanishing-{cell}", seeds, params=init, task="copy", cell=cell, hidden=hidden,
                                 seq_len=lag, lr=1e-3, clip=1.0, steps=steps, seed=seed, eval_every=100)
        finals = [[r["eval_accuracy"] for r in state.history if r.get("member") == k and "eval_accuracy" in r][-1]
                  for k in range(state.size)]
        for stage, weights in (("init", init), ("trained", state.params)):
            profiles = [np.asarray(p1.gradient_flow(member_of(weights, k), data.xs, data.labels,
                                                    state.spec)[0]["fwd"].dh_norm) for k in range(state.size)]
            label = f"{cell}, {stage}"
            cells_panel[label] = np.exp(np.mean(np.log(np.maximum(profiles, 1e-300)), axis=0))  # geometric mean
            rate_mean, rate_std = spread(_rates(profiles))
            rows.append({"profile": label, "seeds": state.size, "rate_per_step_mean": rate_mean,
                         "rate_per_step_std": rate_std,
                         "eval_accuracy": pm(finals) if stage != "init" else "",
                         "reached_99": reached(state, list(range(state.size))) if stage != "init" else "",
                         "steps_to_99": pm([s["target_step"] for s in state.status], 0) if stage != "init" else ""})
    for radius in radii:
        profiles = []
        for k in range(seeds):
            params = p1.init_params(jax.random.fold_in(jax.random.key(seed + k), 3), "elman", data.xs.shape[-1],
                                    hidden, tasks.COPY_SYMBOLS)
            flow = p1.gradient_flow(p1.set_spectral_radius(params, radius), data.xs, data.labels, "elman")
            profiles.append(np.asarray(flow.dh_norm))
        label = f"elman, spectral radius {radius:g}"
        radius_panel[label] = np.exp(np.mean(np.log(np.maximum(profiles, 1e-300)), axis=0))
        rate_mean, rate_std = spread(_rates(profiles))
        rows.append({"profile": label, "seeds": seeds, "rate_per_step_mean": rate_mean, "rate_per_step_std": rate_std,
                     "eval_accuracy": "", "reached_99": "", "steps_to_99": ""})
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    flow_axes(left, cells_panel, f"copy task, T = {lag}: init vs trained (geometric mean of {seeds} seeds)")
    flow_axes(right, radius_panel, f"Elman at init, T = {lag}: recurrent spectral radius ({seeds} inits)")
    return publish(fig, out, "vanishing_gradients", rows,
                   "Gradient flow: geometric rate of ||dL/dh_t|| per step back (mean ± std over seeds)",
                   notes=f"{seeds} seeds per cell; training stops each member at 99% held-out accuracy "
                         "(reached_99: how many did; steps_to_99 over those that did).")


if __name__ == "__main__":
    main_guard(main)
