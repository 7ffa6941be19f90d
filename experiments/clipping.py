"""Gradient clipping in the exploding regime.

An Elman network whose recurrent matrix starts at spectral radius 2 (above 1: the regime where
gradients can explode, Pascanu, Mikolov & Bengio 2013) is trained with SGD with momentum on the
copy task at lag 10, with and without ``optax.clip_by_global_norm(1)``, from the same initial
parameters. Plot: training loss and the global gradient norm before clipping per step; table:
final and best eval accuracy, the largest gradient norm seen, and the fraction of steps where
clipping fired.
"""

from __future__ import annotations

import math

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import curves, main_guard, publish, train_run

import perceptron1_jax as p1


def main(quick: bool = False, out=None, seed: int = 0, task: str = "copy", seq_len: int = 10, hidden: int = 64,
         steps: int = 800, radius: float = 2.0, lr: float = 0.1, clip: float = 1.0):
    if quick:
        seq_len, hidden, steps = 10, 8, 20
    model = p1.TrainConfig(task=task, cell="elman", hidden=hidden, seq_len=seq_len).model_spec
    params = p1.set_spectral_radius(p1.init_model(jax.random.key(seed + 7), model), radius)
    rows, runs = [], {}
    for label, bound in (("no clipping", None), (f"clip_by_global_norm({clip:g})", clip)):
        run = train_run(out, f"clipping-{'none' if bound is None else 'clip'}", params=params, task=task,
                        cell="elman", hidden=hidden, seq_len=seq_len, optimizer="sgd", lr=lr, momentum=0.9,
                        clip=bound, steps=steps, seed=seed, log_every=1, eval_every=max(steps // 20, 1),
                        target_accuracy=0.0)
        runs[label] = run.history
        logged = [r for r in run.history if "loss" in r]
        norms = np.array([r["grad_norm"] for r in logged])
        evals = [r["eval_accuracy"] for r in run.history if "eval_accuracy" in r]
        rows.append({
            "run": label,
            "final_eval_accuracy": evals[-1],
            "best_eval_accuracy": max(evals),
            "final_train_loss": logged[-1]["loss"],
            "max_grad_norm": float(np.nanmax(norms)),
            "median_grad_norm": float(np.nanmedian(norms)),
            "steps_with_nan_loss": int(sum(not math.isfinite(r["loss"]) for r in logged)),
            "fraction_clipped": float(np.mean([r["clipped"] for r in logged])) if bound else 0.0,
        })
    fig, (ax_loss, ax_norm) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, history in runs.items():
        ax_loss.plot(*curves(history, "loss"), label=label, alpha=0.8)
        ax_norm.plot(*curves(history, "grad_norm"), label=label, alpha=0.8)
    ax_loss.set(xlabel="step", ylabel="training cross-entropy (nats, log scale)", yscale="log",
                title=f"Elman, W_h spectral radius {radius:g}, SGD lr {lr:g}, {task} T={seq_len}")
    ax_norm.axhline(clip, color="k", ls="--", lw=1, label=f"clip bound {clip:g}")
    ax_norm.set(xlabel="step", ylabel="global gradient norm before clipping (log scale)", yscale="log",
                title="gradient norm per step")
    return publish(fig, out, "clipping", rows, "Clipping in the exploding regime")


if __name__ == "__main__":
    main_guard(main)
