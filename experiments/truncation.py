"""Full BPTT against truncated BPTT on a dependency of known lag.

The copy task with lag T = 15 (the answer is the symbol of step 1, read after step 15) is trained
by an LSTM with full BPTT and with the gradient truncated to the last k in {5, 20, 50} steps
(``--tbptt-k1 T --tbptt-k2 k``), each a population of 5 seeds. The model can learn the dependency
only when k covers the lag (k >= T): with k = 5 the first step never receives a gradient.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import band, main_guard, member_values, pm, publish, seeds_for, train_population


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 15, ks=(5, 20, 50), hidden: int = 32,
         steps: int = 1200):
    if quick:
        lag, ks, hidden, steps = 6, (2, 8), 8, 10
    seeds = seeds_for(quick)
    rows, states = [], {}
    for k in (None, *ks):
        label = "full BPTT" if k is None else f"truncated k2 = {k}"
        extra = {} if k is None else {"tbptt_k1": lag, "tbptt_k2": k}
        state = train_population(out, f"truncation-{'full' if k is None else k}", seeds, task="copy", cell="lstm",
                                 hidden=hidden, seq_len=lag, lr=3e-3, clip=1.0, steps=steps, seed=seed,
                                 eval_every=max(steps // 20, 1), target_accuracy=0.0, **extra)
        states[label] = state
        evals = member_values(state, "eval_accuracy")
        rows.append({"run": label, "covers_lag": k is None or k >= lag, "seeds": state.size,
                     "best_eval_accuracy": pm([max(e) for e in evals]),
                     "final_eval_accuracy": pm([e[-1] for e in evals]),
                     "members_above_0.99": f"{sum(max(e) >= 0.99 for e in evals)}/{state.size}"})
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, state in states.items():
        band(ax, state, "eval_accuracy", list(range(state.size)), label)
    ax.axhline(1 / 8, color="k", ls="--", lw=1, label="chance")
    ax.set(xlabel="step", ylabel="held-out accuracy (fraction)", ylim=(0, 1.02),
           title=f"copy task, lag {lag}: full vs truncated BPTT (LSTM, {seeds} seeds)")
    return publish(fig, out, "truncation", rows, f"Truncated BPTT on a dependency of lag {lag} (mean ± std over seeds)")


if __name__ == "__main__":
    main_guard(main)
