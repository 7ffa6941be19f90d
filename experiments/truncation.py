"""Full BPTT against truncated BPTT on a dependency of known lag.

The copy task with lag T = 15 (the answer is the symbol of step 1, read after step 15) is trained
by an LSTM with full BPTT and with the gradient truncated to the last k in {5, 20, 50} steps
(``--tbptt-k1 T --tbptt-k2 k``). The model can learn the dependency only when k covers the lag
(k >= T): with k = 5 the first step never receives a gradient.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import curves, main_guard, publish, train_run


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 15, ks=(5, 20, 50), hidden: int = 32,
         steps: int = 1200):
    if quick:
        lag, ks, hidden, steps = 6, (2, 8), 8, 10
    rows, histories = [], {}
    for k in (None, *ks):
        label = "full BPTT" if k is None else f"truncated k2 = {k}"
        extra = {} if k is None else {"tbptt_k1": lag, "tbptt_k2": k}
        run = train_run(out, f"truncation-{'full' if k is None else k}", task="copy", cell="lstm", hidden=hidden,
                        seq_len=lag, lr=3e-3, clip=1.0, steps=steps, seed=seed, eval_every=max(steps // 20, 1),
                        target_accuracy=0.0, **extra)
        histories[label] = run.history
        evals = [r["eval_accuracy"] for r in run.history if "eval_accuracy" in r]
        rows.append({"run": label, "covers_lag": k is None or k >= lag, "best_eval_accuracy": max(evals),
                     "final_eval_accuracy": evals[-1]})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, history in histories.items():
        ax.plot(*curves(history, "eval_accuracy"), "o-", ms=3, label=label)
    ax.axhline(1 / 8, color="k", ls="--", lw=1, label="chance")
    ax.set(xlabel="step", ylabel="held-out accuracy (fraction)", ylim=(0, 1.02),
           title=f"copy task, lag {lag}: full vs truncated BPTT (LSTM)")
    return publish(fig, out, "truncation", rows, f"Truncated BPTT on a dependency of lag {lag}")


if __name__ == "__main__":
    main_guard(main)
