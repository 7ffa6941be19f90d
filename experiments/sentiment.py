"""Lesson: sentiment classification with stacked LSTM and GRU layers.

The lesson: two files of sentences, one positive and one negative, word ids of at most 10 words,
``Embedding(1000, 128) -> LSTM(128, every step) -> LSTM(64)`` -> softmax over 2 classes (and the
same with GRUs), cross-entropy with Adam, then classifying new sentences. Here: the project's own
two files (``experiments/data/positive.txt``, ``negative.txt``, 60 lines each), ``lengths``
instead of zero padding (padding never enters the state), a seeded 20% validation split never
trained on, and both stacks trained by the explicit BPTT. Table: validation accuracy per stack and
its verdict on sentences it has not seen.
"""

from __future__ import annotations

import pathlib

import matplotlib.pyplot as plt
from _common import curves, main_guard, publish, train_run

from perceptron1_jax.prediction import predict_examples, text_inputs
from perceptron1_jax.runs import load_run

DATA = pathlib.Path(__file__).resolve().parent / "data"
NEW = ("the film was wonderful and the cast was great", "a boring evening and awful food",
       "the staff were kind and helpful", "it broke after a day, a waste of money")


def main(quick: bool = False, out=None, seed: int = 0, steps: int = 300):
    if quick:
        steps = 6
    stacks = {"lstm": "lstm:128,lstm:64", "gru": "gru:128,gru:64"} if not quick else {"lstm": "lstm:8,lstm:6",
                                                                                       "gru": "gru:8,gru:6"}
    rows, fig = [], plt.figure(figsize=(6, 4))
    ax = fig.gca()
    for name, layers in stacks.items():
        run = train_run(out, f"sentiment-{name}", classes=(str(DATA / "positive.txt"), str(DATA / "negative.txt")),
                        layers=layers, embed_size=128 if not quick else 8, max_vocab=1000, seq_len=10,
                        val_fraction=0.2, steps=steps, batch_size=32, lr=1e-3, eval_every=max(steps // 20, 1),
                        log_every=max(steps // 20, 1), seed=seed)
        trained = load_run(out / "runs" / f"sentiment-{name}")
        result = predict_examples(trained, *text_inputs(trained, list(NEW)))
        verdicts = [f"{trained.info.class_names[c]} {p[c]:.2f}" for c, p in zip(result.predictions,
                                                                                 result.probabilities)]
        evals = [r for r in run.history if "eval_accuracy" in r]
        rows.append({"model": f"embed {trained.spec.embed_size} -> {layers.replace(',', ' -> ')}", "steps": run.step,
                     "eval_accuracy": evals[-1]["eval_accuracy"], "best_eval_accuracy": max(
                         r["eval_accuracy"] for r in evals), "chance": run.chance,
                     **{f"new {i + 1}": v for i, v in enumerate(verdicts)}})
        ax.plot(*curves(run.history, "eval_accuracy"), "o-", label=f"{name} stack, validation")
    ax.set(xlabel="step", ylabel="accuracy (fraction)", ylim=(0, 1.02), title="sentiment, 2 classes")
    notes = "New sentences:\n\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(NEW))
    return publish(fig, out, "sentiment", rows, "Sentiment: stacked LSTM and GRU on the project's two files", notes)


if __name__ == "__main__":
    main_guard(main)
