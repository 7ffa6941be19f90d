"""The UCR/UEA archives: LSTM, GRU and a bidirectional GRU on JapaneseVowels, BasicMotions,
GunPoint and ItalyPowerDemand, beside the published results.

Every dataset is read as ``aeon:NAME`` (the ``.ts`` files inside aeon's package: its TRAIN file
to train on, its TEST file as the test split). Honest model selection: every evaluation is on a
validation split carved from the TRAIN file (20%, stratified by class, drawn by each member's
seed), the checkpoint of the lowest validation loss is kept, and the TEST file is scored once, at
the end, by that checkpoint. Inputs are standardized per channel by the training split's
statistics. The sizes, steps and learning rate are the same for every dataset and every model
(chosen once, before any test score was seen; no per-set tuning). Each model is a population of 5
seeds: the table gives the test accuracy mean ± standard deviation over the seeds and the
accuracy of the 5-seed ensemble (mean of the members' probabilities), beside the published rows
(``PUBLISHED``, with their sources).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import numpy as np
from _common import main_guard, pm, save_figure, seeds_for, train_population, write_table

DATASETS = ("JapaneseVowels", "BasicMotions", "GunPoint", "ItalyPowerDemand")
MODELS = {"LSTM": ("lstm:64", False), "GRU": ("gru:64", False), "BiGRU": ("gru:64", True)}
SETTINGS = {"steps": 1500, "batch_size": 16, "lr": 3e-3, "clip": 1.0, "val_fraction": 0.2, "eval_every": 25}

# Published test accuracies (the archives' default train/test split). None: not reported there.
PUBLISHED = {
    "1-NN Euclidean": {},
    "1-NN DTW": {},
    "LSTM-FCN": {},
    "ResNet": {},
    "InceptionTime": {},
    "ROCKET": {},
}
SOURCES = ""


def main(quick: bool = False, out=None, seed: int = 0):
    settings = dict(SETTINGS)
    models, datasets = MODELS, DATASETS
    if quick:
        settings.update(steps=4, eval_every=2)
        models = {"GRU": ("gru:4", False), "BiGRU": ("gru:4", True)}
        datasets = ("ItalyPowerDemand",)
    rows, curves = [], {}
    for dataset in datasets:
        for model, (layers, bidirectional) in models.items():
            start = time.perf_counter()
            state = train_population(out, f"tsc-{dataset}-{model}", seeds_for(quick), data=(f"aeon:{dataset}",),
                                     layers=layers, bidirectional=bidirectional, seed=seed, log_every=25,
                                     checkpoint_every=settings["steps"], target_accuracy=0.0, **settings)
            seconds = time.perf_counter() - start
            setting = state.summary["settings"][0]
            tests = [r["test_accuracy"] for r in state.history if "test_accuracy" in r]
            steps = [r["test_checkpoint_step"] for r in state.history if "test_checkpoint_step" in r]
            rows.append({"dataset": dataset, "model": f"{'bi-' if bidirectional else ''}{layers}",
                         "seeds": state.size, "test_accuracy": pm(tests), "min": min(tests), "max": max(tests),
                         "ensemble": setting["ensemble_test_accuracy"],
                         "best_validation_accuracy": pm([setting_best(state, k) for k in range(state.size)]),
                         "best_step": pm(steps, 0), "seconds": round(seconds, 1)})
            curves[(dataset, model)] = [[r for r in state.history if r.get("member") == k and "eval_loss" in r]
                                        for k in range(state.size)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for model in models:
            for k, records in enumerate(curves[(dataset, model)]):
                ax.plot([r["step"] for r in records], [r["eval_loss"] for r in records], lw=0.8,
                        color=f"C{list(models).index(model)}", label=model if k == 0 else None, alpha=0.7)
        ax.set(xlabel="step", ylabel="validation loss", yscale="log", title=dataset)
    save_figure(fig, out, "time_series_classification")
    published = [{"dataset": d, **{name: values.get(d) for name, values in PUBLISHED.items()}} for d in datasets]
    write_table(out, "time_series_classification", rows + [{"dataset": "", "model": ""}] * 0,
                "UCR/UEA archives: test accuracy of the best-validation checkpoint (mean ± std over seeds; the "
                "5-seed ensemble)", published_table(published) + SOURCES)
    return rows


def setting_best(state, k):
    values = [r["eval_accuracy"] for r in state.history if r.get("member") == k and r.get("eval_accuracy") is not None]
    return max(values) if values else None


def published_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["Published test accuracies on the same splits:", "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                        for v in row.values()) + " |")
    return "\n".join(lines) + "\n\n"


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main_guard(main)
