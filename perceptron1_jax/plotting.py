"""Loss and accuracy curves of a run as a PNG (needs the optional extra ``plot``: matplotlib)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_metrics(metrics_path, png_path) -> Path:
    """Draw training/eval loss (log scale) and, for classifiers, accuracy against the step from
    ``metrics.jsonl``.

    Raises ImportError when matplotlib is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    classifier = any("accuracy" in r for r in train)
    fig, axes = plt.subplots(1, 2 if classifier else 1, figsize=(10 if classifier else 5.5, 4), squeeze=False)
    ax_loss = axes[0, 0]
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train (minibatch)")
    ax_loss.plot([r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="eval")
    ylabel = "cross-entropy (nats)" if classifier else "mean squared error"
    ax_loss.set(xlabel="step", ylabel=ylabel, yscale="log", title="loss")
    if classifier:
        ax_acc = axes[0, 1]
        ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="train (minibatch)")
        ax_acc.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", label="eval")
        ax_acc.set(xlabel="step", ylabel="accuracy (fraction)", ylim=(0, 1.02), title="accuracy")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path


def gradient_flow_axes(ax, profiles: dict, title: str) -> None:
    """``||dL/dh_t||`` against the lag ``T - t`` on a log scale, on ``ax``.

    An exactly-zero norm (the gradient underflowed) has no place on a log axis: it is drawn as a
    triangle on the bottom edge, in its curve's colour, and the axis keeps to the non-zero values.
    """
    import numpy as np

    for label, norms in profiles.items():
        norms = np.asarray(norms, np.float64)
        lags = np.arange(norms.size)[::-1]
        zero = norms == 0
        (line,) = ax.semilogy(lags, np.where(zero, np.nan, norms), label=label)
        if zero.any():
            ax.plot(lags[zero], np.full(int(zero.sum()), 0.01), "v", color=line.get_color(), markersize=4,
                    transform=ax.get_xaxis_transform(), clip_on=False, label=f"{label}: exactly 0 (underflow)")
    ax.set(xlabel="lag T - t (steps before the read-out)", ylabel="||dL/dh_t|| (log scale)", title=title)


def plot_gradient_flow(profiles: dict, png_path, title: str) -> Path:
    """``||dL/dh_t||`` against the lag ``T - t`` (steps back from the read-out), log scale
    (:func:`gradient_flow_axes`).

    ``profiles`` maps a legend label to a ``(time,)`` array of norms. Raises ImportError when
    matplotlib is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    gradient_flow_axes(ax, profiles, title)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path
