"""Lesson: sentiment classification with stacked LSTM and GRU layers.

The lesson: two files of sentences, one positive and one negative, word ids of at most 10 words,
``Embedding(1000, 128) -> LSTM(128, every step) -> LSTM(64)`` -> softmax over 2 classes (and the
same with GRUs), cross-entropy with Adam, then classifying new sentences. Here: the project's own
two files (``experiments/data/positive.txt``, ``negative.txt``, 60 lines each), ``lengths``
instead of zero padding (padding never enters the state), a seeded 20% validation split never
trained on, and both stacks trained by the explicit BPTT, each as a population of 5 seeds (the
split and vocabulary are seed 0's for every member: the seeds vary the initialization, the batches
and the dropout). Table: validation accuracy per stack (mean ± standard deviation) and the
5-member ensemble's verdict on sentences it has not seen.
"""

from __future__ import annotations

import pathlib

import matplotlib.pyplot as plt
from _common import band, main_guard, member_values, pm, publish, seeds_for, train_population

from perceptron1_jax.data import load_data
from perceptron1_jax.prediction import ensemble_predictions, text_inputs
from perceptron1_jax.runs import load_members

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
    classes = (str(DATA / "positive.txt"), str(DATA / "negative.txt"))
    data = load_data(classes=classes, seq_len=10, val_fraction=0.2, seed=seed, max_vocab=1000)
    for name, layers in stacks.items():
        state = train_population(out, f"sentiment-{name}", seeds_for(quick), data=data, classes=classes,
                                 layers=layers, embed_size=128 if not quick else 8, max_vocab=1000, seq_len=10,
                                 val_fraction=0.2, steps=steps, batch_size=32, lr=1e-3, eval_every=max(steps // 20, 1),
                                 log_every=max(steps // 20, 1), seed=seed)
        members = load_members(out / "runs" / f"sentiment-{name}")
        result = ensemble_predictions(members, *text_inputs(members[0], list(NEW)))
        verdicts = [f"{members[0].info.class_names[c]} {p[c]:.2f}" for c, p in zip(result.predictions,
                                                                                    result.probabilities)]
        evals = member_values(state, "eval_accuracy")
        rows.append({"model": f"embed {state.spec.embed_size} -> {layers.replace(',', ' -> ')}",
                     "seeds": state.size, "steps": state.step, "eval_accuracy": pm([e[-1] for e in evals]),
                     "best_eval_accuracy": pm([max(e) for e in evals]), "chance": state.chance,
                     **{f"new {i + 1} (ensemble)": v for i, v in enumerate(verdicts)}})
        band(ax, state, "eval_accuracy", list(range(state.size)), f"{name} stack, validation", marker="o")
    ax.set(xlabel="step", ylabel="accuracy (fraction)", ylim=(0, 1.02), title="sentiment, 2 classes")
    notes = "New sentences:\n\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(NEW))
    return publish(fig, out, "sentiment", rows,
                   "Sentiment: stacked LSTM and GRU on the project's two files (mean ± std over seeds)", notes)


if __name__ == "__main__":
    main_guard(main)
