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

# Published test accuracies on the archives' default train/test split (None: not in the source).
PUBLISHED = {
    "LSTM-FCN": {"JapaneseVowels": 0.99, "GunPoint": 1.0, "ItalyPowerDemand": 0.9621},
    "ResNet": {"JapaneseVowels": 0.992, "GunPoint": 0.991, "ItalyPowerDemand": 0.963},
    "InceptionTime": {"JapaneseVowels": 0.9919, "BasicMotions": 1.0, "GunPoint": 1.0, "ItalyPowerDemand": 0.9679},
    "ROCKET": {"GunPoint": 1.0, "ItalyPowerDemand": 0.9696},
    "1-NN DTW (UCR archive)": {"GunPoint": 0.907, "ItalyPowerDemand": 0.950},
}
SOURCES = """Sources of the published rows:

- LSTM-FCN (Karim et al. 2018, 2019): GunPoint and ItalyPowerDemand from the authors' repository
  (github.com/titu1994/LSTM-FCN, `Results/train_loss_old_datasets.csv`: models chosen by training
  loss, as in Karim et al. 2019, "Insights into LSTM fully convolutional networks"); JapaneseVowels
  from the LSTM-FCN column of Karim et al. 2019, "Multivariate LSTM-FCNs" (github.com/titu1994/MLSTM-FCN,
  results table), reported to two digits.
- ResNet (Fawaz et al. 2019, "Deep learning for time series classification: a review"): mean of 10
  runs, github.com/hfawaz/dl-4-tsc `results/results-uea-avg-std.csv` (UCR 85) and
  `results/results-mts-avg-std.csv` (Baydogan's archive: JapaneseVowels with the same 270/370 split).
- InceptionTime (Fawaz et al. 2020): github.com/hfawaz/InceptionTime `results-InceptionTime-85.csv`
  and `results-mts.csv` (the UEA archive).
- ROCKET (Dempster et al. 2020): mean of 10 runs, github.com/angus924/rocket `results/results_ucr.csv`
  (the univariate archive only; its multivariate results are not in a source stored here).
- 1-NN DTW (UCR archive): full-window DTW, as the UCR archive publishes it (copied in the LSTM-FCN
  repository's table above).
- 1-NN Euclidean and 1-NN DTW (computed here): aeon's `KNeighborsTimeSeriesClassifier` (1 neighbour,
  `euclidean` / `dtw` with a full window, multivariate DTW dependent) on the same files, when aeon is
  installed; on GunPoint and ItalyPowerDemand they equal the UCR archive's published values.
"""


def nearest_neighbour(dataset: str) -> dict:
    """1-NN Euclidean and 1-NN DTW test accuracy on ``dataset``'s files, computed with aeon."""
    from aeon.classification.distance_based import KNeighborsTimeSeriesClassifier
    from aeon.datasets import load_from_ts_file

    from perceptron1_jax.data import archive_file

    (xs, ys), (xt, yt) = (load_from_ts_file(str(archive_file(dataset, split))) for split in ("TRAIN", "TEST"))
    scores = {}
    for name, distance in (("1-NN Euclidean", "euclidean"), ("1-NN DTW", "dtw")):
        clf = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance=distance).fit(xs, ys)
        scores[f"{name} (computed here)"] = float(np.mean(clf.predict(xt) == yt))
    return scores


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
                         "seeds": state.size, "test_accuracy": pm(tests, 4), "min": min(tests), "max": max(tests),
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
    published = [{"dataset": d, **({} if quick else nearest_neighbour(d)),
                  **{name: values.get(d) for name, values in PUBLISHED.items()}} for d in datasets]
    for row in rows:  # the targets: above 1-NN DTW, and 0.985 on JapaneseVowels
        computed = next(p for p in published if p["dataset"] == row["dataset"]).get("1-NN DTW (computed here)")
        row["above_1nn_dtw"] = None if computed is None else bool(mean_of(row["test_accuracy"]) > computed)
    write_table(out, "time_series_classification", rows,
                "UCR/UEA archives: test accuracy of the best-validation checkpoint (mean ± std over seeds; the "
                "5-seed ensemble)", published_table(published) + SOURCES)
    return rows


def mean_of(cell: str) -> float:
    """The mean of a ``mean ± std`` table cell."""
    return float(cell.split(" ± ")[0])


def setting_best(state, k):
    values = [r["eval_accuracy"] for r in state.history if r.get("member") == k and r.get("eval_accuracy") is not None]
    return max(values) if values else None


def published_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    lines = ["Baselines on the same splits (1-NN computed here with aeon; the other rows as published):", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join("n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))
                                        for v in row.values()) + " |")
    return "\n".join(lines) + "\n\n"


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main_guard(main)
