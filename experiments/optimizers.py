"""SGD (momentum 0.9) vs RMSProp vs Adam on the same task and budget.

An LSTM on the copy task at lag 20, each optimizer at its own customary learning rate and at a
common one, 1500 steps, global-norm clipping 1. Plot: training loss and held-out accuracy per
step; table: best held-out accuracy and the step it first reached 0.99 (if it did).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import curves, main_guard, publish, train_run

SETTINGS = (("sgd", 0.1), ("sgd", 3e-3), ("rmsprop", 3e-3), ("adam", 3e-3))


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 20, hidden: int = 32, steps: int = 1500):
    if quick:
        lag, hidden, steps = 6, 8, 10
    rows, histories = [], {}
    for optimizer, lr in SETTINGS:
        label = f"{optimizer} lr {lr:g}"
        run = train_run(out, f"optimizers-{optimizer}-{lr:g}", task="copy", cell="lstm", hidden=hidden,
                        seq_len=lag, optimizer=optimizer, lr=lr, clip=1.0, steps=steps, seed=seed,
                        eval_every=max(steps // 30, 1), target_accuracy=0.0)
        histories[label] = run.history
        evals = [(r["step"], r["eval_accuracy"]) for r in run.history if "eval_accuracy" in r]
        solved = [step for step, acc in evals if acc >= 0.99]
        rows.append({"optimizer": optimizer, "lr": lr, "best_eval_accuracy": max(a for _, a in evals),
                     "first_step_at_0.99": solved[0] if solved else "never"})
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, history in histories.items():
        ax_loss.plot(*curves(history, "loss"), label=label, alpha=0.8)
        ax_acc.plot(*curves(history, "eval_accuracy"), "o-", ms=3, label=label)
    ax_loss.set(xlabel="step", ylabel="training cross-entropy (nats, log scale)", yscale="log",
                title=f"LSTM, copy task lag {lag}")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy (fraction)", ylim=(0, 1.02), title="held-out accuracy")
    return publish(fig, out, "optimizers", rows, "Optimizers on the same task and budget")


if __name__ == "__main__":
    main_guard(main)
