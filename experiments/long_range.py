"""Long-range dependencies: Elman vs LSTM vs GRU on the adding problem and the copy task as the lag
grows (Hochreiter & Schmidhuber 1997 report LSTM solving the adding problem at T = 100 and beyond,
where plain RNNs fail).

Every (task, lag, cell) gets the same budget: Adam, global-norm clipping 1, early stop at the
task's target accuracy. Plot: held-out accuracy against the lag with the chance baseline; table:
the best held-out accuracy and the steps used.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import main_guard, publish, train_run

from perceptron1_jax.tasks import TASKS

CELLS = ("elman", "lstm", "gru")


def main(quick: bool = False, out=None, seed: int = 0, lags=(10, 50, 100, 200), hidden: int = 32,
         steps: int = 1000, lr: float = 3e-3):
    if quick:
        lags, hidden, steps = (4, 8), 8, 10
    rows = []
    for task in ("adding", "copy"):
        for lag in lags:
            for cell in CELLS:
                run = train_run(out, f"long-{task}-{lag}-{cell}", task=task, cell=cell, hidden=hidden, seq_len=lag,
                                lr=lr, clip=1.0, steps=steps, seed=seed, eval_every=max(steps // 10, 1),
                                num_train=4096)
                evals = [r["eval_accuracy"] for r in run.history if "eval_accuracy" in r]
                rows.append({"task": task, "lag": lag, "cell": cell, "best_eval_accuracy": max(evals),
                             "final_eval_accuracy": evals[-1], "steps": run.step,
                             "chance": TASKS[task].chance})
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, task in zip(axes, ("adding", "copy")):
        for cell in CELLS:
            mine = [r for r in rows if r["task"] == task and r["cell"] == cell]
            ax.plot([r["lag"] for r in mine], [r["best_eval_accuracy"] for r in mine], "o-", label=cell)
        ax.axhline(TASKS[task].chance, color="k", ls="--", lw=1, label="chance")
        ax.set(xscale="log", xlabel="lag T (steps between the cue and the read-out, log scale)",
               ylabel="best held-out accuracy (fraction)", ylim=(0, 1.02),
               title=f"{task}: {steps} steps budget, hidden {hidden}")
    return publish(fig, out, "long_range", rows, "Long-range tasks: best held-out accuracy by lag")


if __name__ == "__main__":
    main_guard(main)
