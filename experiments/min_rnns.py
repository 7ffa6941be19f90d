"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?") against GRU and LSTM on the
adding problem and the copy task at lags 50, 100 and 200.

The min cells' gates read the step input alone (``z = σ(x W_z + b_z)``, no ``h``): one layer cannot
tell the cue step of the copy task from a distractor showing the same symbol, so Feng et al. stack
them. Each min cell therefore runs with one layer and with two (the second layer's gates read the
first layer's output, which carries time). Every (task, lag, model) gets the same budget: Adam at
one learning rate, global-norm clipping 1, the same number of steps, early stop of each member at
the task's target accuracy, a population of 5 seeds. The table gives the best held-out accuracy
(mean ± std over the seeds), how many seeds reached the target, the parameter count and the wall
time of the whole population (compile included, members stopped at the target included).
"""

from __future__ import annotations

import time

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import main_guard, member_values, pm, publish, reached, seeds_for, spread, train_population

from perceptron1_jax.tasks import TASKS

MODELS = {  # name: layers ("cell:size,...") for a hidden size h
    "gru": "gru:{h}",
    "lstm": "lstm:{h}",
    "mingru": "mingru:{h}",
    "minlstm": "minlstm:{h}",
    "mingru x2": "mingru:{h},mingru:{h}",
    "minlstm x2": "minlstm:{h},minlstm:{h}",
}


def parameter_count(state) -> int:
    """Parameters of one member (the population stacks them on a leading axis)."""
    leaves = jax.tree.leaves(state.params)
    return int(sum(np.prod(leaf.shape[1:]) for leaf in leaves))


def main(quick: bool = False, out=None, seed: int = 0, lags=(50, 100, 200), hidden: int = 32, steps: int = 1000,
         lr: float = 3e-3):
    if quick:
        lags, hidden, steps = (4,), 8, 10
    seeds = seeds_for(quick)
    rows, best = [], {}
    for task in ("adding", "copy"):
        for lag in lags:
            for model, layers in MODELS.items():
                start = time.perf_counter()
                state = train_population(out, f"min-{task}-{lag}-{model.replace(' ', '')}", seeds, task=task,
                                         layers=layers.format(h=hidden), seq_len=lag, lr=lr, clip=1.0, steps=steps,
                                         seed=seed, eval_every=max(steps // 10, 1), num_train=4096)
                seconds = time.perf_counter() - start
                bests = [max(e) for e in member_values(state, "eval_accuracy")]
                members = list(range(state.size))
                rows.append({"task": task, "lag": lag, "model": model, "parameters": parameter_count(state),
                             "seeds": state.size, "best_eval_accuracy": pm(bests),
                             "reached_target": reached(state, members),
                             "steps_to_target": pm([state.status[k]["target_step"] for k in members], 0),
                             "population_seconds": round(seconds, 1), "chance": TASKS[task].chance})
                mean = spread(bests)[0]
                best[task, lag, model] = (mean, min(bests), max(bests))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, task in zip(axes, ("adding", "copy")):
        for model in MODELS:
            points = np.asarray([best[task, lag, model] for lag in lags])
            line = ax.plot(lags, points[:, 0], "o-" if "min" in model else "s--", label=f"{model}")[0]
            ax.fill_between(lags, points[:, 1], points[:, 2], color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(TASKS[task].chance, color="k", ls=":", lw=1, label="chance")
        ax.set(xscale="log", xlabel="lag T (log scale)", ylabel="best held-out accuracy (fraction)", ylim=(0, 1.02),
               title=f"{task}: {steps} steps, hidden {hidden}, lr {lr}, {seeds} seeds (band: min to max)")
    axes[0].legend(fontsize=8)
    return publish(fig, out, "min_rnns", rows,
                   "minGRU / minLSTM against GRU / LSTM: best held-out accuracy by lag (mean ± std over seeds)",
                   notes=f"{seeds} seeds per (task, lag, model); Adam lr {lr}, clip 1, {steps} steps, hidden {hidden} "
                         "per layer; reached_target: members at the task's target accuracy (adding 0.9, copy "
                         "0.99), each stopped there; population_seconds: wall time of the population on this "
                         "machine, compile included.")


if __name__ == "__main__":
    main_guard(main)
