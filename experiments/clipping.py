"""Gradient clipping in the exploding regime.

An Elman network whose recurrent matrix starts at spectral radius 2 (above 1: the regime where
gradients can explode, Pascanu, Mikolov & Bengio 2013) is trained with SGD with momentum on the
copy task at lag 10, with and without ``optax.clip_by_global_norm(1)``: two populations of 5 seeds,
member k of both starting from the same initial parameters. Plot: training loss and the global
gradient norm before clipping per step (mean and band over the seeds); table: final and best eval
accuracy, the largest gradient norm seen and the fraction of steps where clipping fired, mean ±
standard deviation over the seeds.
"""

from __future__ import annotations

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import band, main_guard, member_records, member_values, pm, publish, seeds_for, stacked, train_population

import perceptron1_jax as p1


def main(quick: bool = False, out=None, seed: int = 0, task: str = "copy", seq_len: int = 10, hidden: int = 64,
         steps: int = 800, radius: float = 2.0, lr: float = 0.1, clip: float = 1.0):
    if quick:
        seq_len, hidden, steps = 10, 8, 20
    seeds = seeds_for(quick)
    base = p1.TrainConfig(task=task, cell="elman", hidden=hidden, seq_len=seq_len, seed=seed)
    members = p1.training.member_configs(base, p1.Population(seeds=seeds))
    init = stacked(lambda m: p1.set_spectral_radius(p1.init_model(jax.random.key(m.seed + 7), m.model_spec), radius),
                   members)
    rows, states = [], {}
    for label, bound in (("no clipping", None), (f"clip_by_global_norm({clip:g})", clip)):
        state = train_population(out, f"clipping-{'none' if bound is None else 'clip'}", seeds, params=init,
                                 task=task, cell="elman", hidden=hidden, seq_len=seq_len, optimizer="sgd", lr=lr,
                                 momentum=0.9, clip=bound, steps=steps, seed=seed, log_every=1,
                                 eval_every=max(steps // 20, 1), target_accuracy=0.0)
        states[label] = state
        evals = member_values(state, "eval_accuracy")
        norms = [np.asarray([np.nan if v is None else v for v in vs], float)
                 for vs in member_values(state, "grad_norm")]
        losses = member_values(state, "loss")
        rows.append({
            "run": label, "seeds": state.size,
            "final_eval_accuracy": pm([e[-1] for e in evals]),
            "best_eval_accuracy": pm([max(e) for e in evals]),
            "final_train_loss": pm([ls[-1] for ls in losses], 4),
            "max_grad_norm": pm([float(np.nanmax(n)) for n in norms], 1),
            "median_grad_norm": pm([float(np.nanmedian(n)) for n in norms], 2),
            "members_above_0.9": f"{sum(e[-1] >= 0.9 for e in evals)}/{state.size}",
            "fraction_clipped": pm([float(np.mean([r["clipped"] for r in member_records(state, k, "loss")]))
                                    for k in range(state.size)], 3) if bound else "0",
        })
    fig, (ax_loss, ax_norm) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, state in states.items():
        band(ax_loss, state, "loss", list(range(state.size)), label)
        band(ax_norm, state, "grad_norm", list(range(state.size)), label)
    ax_loss.set(xlabel="step", ylabel="training cross-entropy (nats, log scale)", yscale="log",
                title=f"Elman, W_h spectral radius {radius:g}, SGD lr {lr:g}, {task} T={seq_len} ({seeds} seeds)")
    ax_norm.axhline(clip, color="k", ls="--", lw=1, label=f"clip bound {clip:g}")
    ax_norm.set(xlabel="step", ylabel="global gradient norm before clipping (log scale)", yscale="log",
                title="gradient norm per step (mean, band: min to max)")
    return publish(fig, out, "clipping", rows, "Clipping in the exploding regime (mean ± std over seeds)",
                   notes=f"{seeds} seeds; member k of both runs starts from the same parameters.")


if __name__ == "__main__":
    main_guard(main)
