"""SGD (momentum 0.9) vs RMSProp vs Adam on the same task and budget.

An LSTM on the copy task at lag 20, 1500 steps, global-norm clipping 1; each optimizer as a
population of 5 seeds times a small learning-rate grid around its customary rate. Plot: training
loss and held-out accuracy per step (the better learning rate of each optimizer: mean and band
over the seeds); table: per learning rate, the best held-out accuracy mean ± standard deviation,
how many members reached 0.99 and at which step.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
from _common import band, main_guard, member_values, pm, publish, seeds_for, setting_members, spread, train_population

GRIDS = {"sgd": (3e-3, 0.03, 0.1), "rmsprop": (1e-3, 3e-3), "adam": (1e-3, 3e-3)}


def _first_at(state, k, level=0.99):
    found = [r["step"] for r in state.history if r.get("member") == k and (r.get("eval_accuracy") or 0) >= level]
    return found[0] if found else None


def main(quick: bool = False, out=None, seed: int = 0, lag: int = 20, hidden: int = 32, steps: int = 1500):
    if quick:
        lag, hidden, steps = 6, 8, 10
    seeds = seeds_for(quick)
    rows, shown = [], []
    for optimizer, lrs in GRIDS.items():
        state = train_population(out, f"optimizers-{optimizer}", seeds, {"lr": lrs}, task="copy", cell="lstm",
                                 hidden=hidden, seq_len=lag, optimizer=optimizer, clip=1.0, steps=steps, seed=seed,
                                 eval_every=max(steps // 30, 1), target_accuracy=0.0)
        evals = member_values(state, "eval_accuracy")
        better = None
        for lr in lrs:
            members = setting_members(state, lr=lr)
            firsts = [_first_at(state, k) for k in members]
            bests = [max(evals[k]) for k in members]
            rows.append({"optimizer": optimizer, "lr": lr, "seeds": len(members), "best_eval_accuracy": pm(bests),
                         "reached_0.99": f"{sum(f is not None for f in firsts)}/{len(members)}",
                         "first_step_at_0.99": pm(firsts, 0)})
            if better is None or spread(bests)[0] > better[0]:
                better = (spread(bests)[0], lr, members)
        shown.append((f"{optimizer} lr {better[1]:g}", state, better[2]))
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, state, members in shown:
        band(ax_loss, state, "loss", members, label)
        band(ax_acc, state, "eval_accuracy", members, label)
    ax_loss.set(xlabel="step", ylabel="training cross-entropy (nats, log scale)", yscale="log",
                title=f"LSTM, copy task lag {lag} (better lr of each, {seeds} seeds)")
    ax_acc.set(xlabel="step", ylabel="held-out accuracy (fraction)", ylim=(0, 1.02), title="held-out accuracy")
    return publish(fig, out, "optimizers", rows, "Optimizers on the same task and budget (mean ± std over seeds)",
                   notes=f"{seeds} seeds per (optimizer, lr); first_step_at_0.99 over the members that reached it.")


if __name__ == "__main__":
    main_guard(main)
