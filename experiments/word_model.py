"""Lesson: next-word prediction with an embedding.

The lesson: word tokens (the 1000 most frequent words), 3 words in, ``Embedding(1000, 256) ->
SimpleRNN(128)`` -> softmax over the words, cross-entropy with Adam, then 20 words written after a
3-word prompt. Here: the same vocabulary limit (``<unk>`` for the rest), embedding and Elman
layer, trained as a language model on windows of words by the explicit BPTT, evaluated on the last
10% of the text (never trained on), writing by carrying the state. Text: the standard library's
docstrings as prose; ``--text FILE`` takes your own. A population of 5 seeds. Table: validation
perplexity and accuracy (mean ± standard deviation over the seeds), and member 0's words.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib.pyplot as plt
import numpy as np
from _common import band, member_values, parse_args, pm, publish, seeds_for, stdlib_prose, train_population

from perceptron1_jax.generate import generate
from perceptron1_jax.runs import load_run


def main(quick: bool = False, out=None, seed: int = 0, text=None, chars: int = 600_000, steps: int = 3000,
         hidden: int = 128, seq_len: int = 16, prompt: str = "return the value"):
    if quick:
        chars, steps, hidden, seq_len = 8_000, 12, 16, 8
    path = pathlib.Path(text) if text else stdlib_prose(out, chars)
    seeds = seeds_for(quick)
    run = train_population(out, "word_model", seeds, data=(str(path),), tokens="words", max_vocab=1000,
                           embed_size=256, cell="elman", hidden=hidden, seq_len=seq_len, steps=steps, batch_size=32,
                           lr=2e-3, clip=1.0, eval_every=max(steps // 15, 1), log_every=max(steps // 15, 1), seed=seed)
    trained = load_run(out / "runs" / "word_model", member=0)
    greedy = generate(trained, prompt, 20, temperature=0)
    sampled = generate(trained, prompt, 20, temperature=0.8, seed=seed)
    losses, accuracies = member_values(run, "eval_loss"), member_values(run, "eval_accuracy")
    rows = [{"model": f"embed {trained.spec.vocab_size}x256 -> elman:{hidden}", "seeds": run.size, "steps": run.step,
             "eval_perplexity": pm([math.exp(v[-1]) for v in losses], 1),
             "eval_accuracy": pm([v[-1] for v in accuracies]), "chance": run.chance}]
    notes = "\n".join([f"Text: {path.name}, {trained.info.vocab_size} word ids (<unk> included). Member 0 (seed "
                       f"{seed}) after the prompt {prompt!r}:", "", "```", f"greedy:          {greedy}",
                       f"temperature 0.8: {sampled}", "```"])
    print(notes)
    fig, ax = plt.subplots(figsize=(6, 4))
    band(ax, run, "eval_loss", list(range(run.size)), "validation (held-out end of the text)", transform=np.exp,
         marker="o")
    ax.set(xlabel="step", ylabel="perplexity (words)", yscale="log",
           title=f"next-word model (embedding + Elman, {run.size} seeds)")
    return publish(fig, out, "word_model", rows,
                   "Next-word prediction: validation perplexity (mean ± std over seeds)", notes)


if __name__ == "__main__":
    args = parse_args(__doc__, text=True)
    main(quick=args.quick, out=args.out, seed=args.seed, text=args.text)
