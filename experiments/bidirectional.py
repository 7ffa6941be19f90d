"""Lesson: a bidirectional GRU filling in a noisy signal, with mean squared error.

The lesson: ``sin(x / 20)`` plus Gaussian noise (std 0.1), 10,000 points; the 3 values before and
the 3 after a point -> ``Bidirectional(GRU(2))`` -> one linear output predicting the point; mean
squared error with Adam 0.01, batch 32, 10 epochs; then a stretch of the signal filled in and
plotted against the truth. Here: the same, trained by the explicit BPTT through both directions
(:func:`perceptron1_jax.data.from_arrays` makes the data; a seeded 10% of the points is the
validation split, never trained on). The noise sets the floor: predicting the noisy point cannot
beat an MSE of 0.01 (the noise variance), so the table also gives the error against the clean sine.
A population of 5 seeds (one noisy signal and split; the seeds vary the initialization and batches);
the table gives mean ± standard deviation, the plot the 5-member mean prediction.
"""

from __future__ import annotations

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import main_guard, member_values, pm, publish, seeds_for, train_population

from perceptron1_jax.data import from_arrays
from perceptron1_jax.model import model_apply
from perceptron1_jax.training.population_step import member_of

NOISE = 0.1


def neighbours(signal: np.ndarray, k: int = 3) -> np.ndarray:
    """``(n - 2k, 2k, 1)``: for every point with k neighbours on each side, the k before and the k after."""
    index = np.arange(k, signal.size - k)[:, None] + np.r_[np.arange(-k, 0), np.arange(1, k + 1)][None, :]
    return signal[index][..., None].astype(np.float32)


def main(quick: bool = False, out=None, seed: int = 0, points: int = 10_000, epochs: int = 10):
    if quick:
        points, epochs = 400, 1
    rng = np.random.default_rng(seed)
    x = np.arange(points)
    clean = np.sin(x / 20)
    noisy = clean + NOISE * rng.standard_normal(points)
    xs, centre = neighbours(noisy), np.arange(3, points - 3)
    data = from_arrays(xs, targets=noisy[centre, None].astype(np.float32), val_fraction=0.1, seed=seed)
    steps = epochs * (data.train.xs.shape[0] // 32)
    state = train_population(out, "bidirectional", seeds_for(quick), data=data, cell="gru", hidden=2,
                             bidirectional=True, lr=0.01, batch_size=32, steps=steps, eval_every=max(steps // 10, 1),
                             log_every=max(steps // 10, 1), seed=seed)
    each = np.asarray([np.asarray(model_apply(member_of(state.params, k), xs, state.spec))[:, 0]
                       for k in range(state.size)])
    predicted = each.mean(0)
    rows = [{"model": "bi-gru:2 -> linear", "seeds": state.size, "steps": state.step,
             "eval_mse": pm([v[-1] for v in member_values(state, "eval_loss")], 5), "noise_floor_mse": NOISE**2,
             "mse_vs_clean_sine": pm([float(np.mean((p - clean[centre]) ** 2)) for p in each], 5),
             "ensemble_mse_vs_clean_sine": float(np.mean((predicted - clean[centre]) ** 2)),
             "mse_of_the_mean_of_the_6_neighbours": float(np.mean((xs[:, :, 0].mean(1) - noisy[centre]) ** 2))}]
    stretch = slice(0, min(300, centre.size))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(centre[stretch], noisy[centre][stretch], ".", ms=3, alpha=0.5, label="noisy signal")
    ax.plot(centre[stretch], clean[centre][stretch], label="sin(x / 20)")
    ax.plot(centre[stretch], predicted[stretch],
            label=f"bidirectional GRU from 3 + 3 neighbours (mean of {state.size})")
    ax.set(xlabel="x", ylabel="value", title="filling in a noisy sine wave (MSE)")
    jax.block_until_ready(state.params)
    return publish(fig, out, "bidirectional", rows,
                   "Bidirectional GRU: a point from its 3 + 3 neighbours (mean ± std over seeds)")


if __name__ == "__main__":
    main_guard(main)
