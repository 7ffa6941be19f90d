"""Long-range dependencies: Elman vs LSTM vs GRU on the adding problem and the copy task as the lag
grows (Hochreiter & Schmidhuber 1997 report LSTM solving the adding problem at T = 100 and beyond,
where plain RNNs fail).

Every (task, lag, cell) gets the same budget: Adam, global-norm clipping 1, early stop of each
member at the task's target accuracy, as a population of 5 seeds times a small learning-rate grid.
Plot: best held-out accuracy against the lag (mean over the seeds of the better learning rate,
band min to max) with the chance baseline; table: per learning rate, the best held-out accuracy
mean ± standard deviation and how many members reached the target.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from _common import (
    main_guard,
    member_values,
    pm,
    publish,
    reached,
    seeds_for,
    setting_members,
    spread,
    train_population,
)

from perceptron1_jax.tasks import TASKS

CELLS = ("elman", "lstm", "gru")


def main(quick: bool = False, out=None, seed: int = 0, lags=(10, 50, 100, 200), hidden: int = 32,
         steps: int = 1000, lrs=(1e-3, 3e-3)):
    if quick:
        lags, hidden, steps = (4, 8), 8, 10
    seeds = seeds_for(quick)
    rows, best = [], {}
    for task in ("adding", "copy"):
        for lag in lags:
            for cell in CELLS:
                state = train_population(out, f"long-{task}-{lag}-{cell}", seeds, {"lr": lrs}, task=task, cell=cell,
                                         hidden=hidden, seq_len=lag, clip=1.0, steps=steps, seed=seed,
                                         eval_every=max(steps // 10, 1), num_train=4096)
                evals = member_values(state, "eval_accuracy")
                for lr in lrs:
                    members = setting_members(state, lr=lr)
                    bests = [max(evals[k]) for k in members]
                    rows.append({"task": task, "lag": lag, "cell": cell, "lr": lr, "seeds": len(members),
                                 "best_eval_accuracy": pm(bests), "reached_target": reached(state, members),
                                 "steps_to_target": pm([state.status[k]["target_step"] for k in members], 0),
                                 "chance": TASKS[task].chance})
                    mean = spread(bests)[0]
                    if (task, lag, cell) not in best or mean > best[task, lag, cell][0]:
                        best[task, lag, cell] = (mean, min(bests), max(bests), lr)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, task in zip(axes, ("adding", "copy")):
        for cell in CELLS:
            points = np.asarray([best[task, lag, cell][:3] for lag in lags])
            line = ax.plot(lags, points[:, 0], "o-", label=f"{cell} (mean of {seeds}, better lr)")[0]
            ax.fill_between(lags, points[:, 1], points[:, 2], color=line.get_color(), alpha=0.2, lw=0)
        ax.axhline(TASKS[task].chance, color="k", ls="--", lw=1, label="chance")
        ax.set(xscale="log", xlabel="lag T (steps between the cue and the read-out, log scale)",
               ylabel="best held-out accuracy (fraction)", ylim=(0, 1.02),
               title=f"{task}: {steps} steps budget, hidden {hidden}")
    return publish(fig, out, "long_range", rows,
                   "Long-range tasks: best held-out accuracy by lag (mean ± std over seeds)",
                   notes=f"{seeds} seeds per (task, lag, cell, lr); learning rates {list(lrs)}; reached_target: "
                         "members at the task's target accuracy (adding 0.9, copy 0.99), each stopped there.")


if __name__ == "__main__":
    main_guard(main)
