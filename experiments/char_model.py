"""Lesson: a character model trained on a text, then writing text from a prompt.

The lesson: letters and space only, 6 characters in, ``SimpleRNN(128)`` -> softmax over the
characters, cross-entropy with Adam, then 50 characters written greedily after a 6-character
prompt. Here: the same alphabet and an Elman layer of 128, trained as a language model on windows
of text (a target at every step) by the explicit BPTT, evaluated on the last 10% of the text
(never trained on), and writing by carrying the state (the prompt is read once). The text is the
standard library's docstrings as prose (every machine has it); ``--text FILE`` takes your own.
A population of 5 seeds. Table: validation bits per character and accuracy (mean ± standard
deviation over the seeds), member 0's greedy continuation and samples.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib.pyplot as plt
from _common import band, member_values, parse_args, pm, publish, seeds_for, stdlib_prose, train_population

from perceptron1_jax.generate import generate
from perceptron1_jax.runs import load_run


def main(quick: bool = False, out=None, seed: int = 0, text=None, chars: int = 200_000, steps: int = 3000,
         hidden: int = 128, seq_len: int = 32, prompt: str = "the fu"):
    if quick:
        chars, steps, hidden, seq_len = 6_000, 12, 16, 16
    path = pathlib.Path(text) if text else stdlib_prose(out, chars)
    seeds = seeds_for(quick)
    run = train_population(out, "char_model", seeds, data=(str(path),), tokens="chars", cell="elman", hidden=hidden,
                           seq_len=seq_len, steps=steps, batch_size=32, lr=3e-3, clip=1.0,
                           eval_every=max(steps // 15, 1), log_every=max(steps // 15, 1), seed=seed)
    trained = load_run(out / "runs" / "char_model", member=0)
    greedy = generate(trained, prompt, 50, temperature=0)
    samples = {t: generate(trained, prompt, 50, temperature=t, seed=seed) for t in (0.5, 1.0)}
    losses, accuracies = member_values(run, "eval_loss"), member_values(run, "eval_accuracy")
    rows = [{"model": f"embed {trained.spec.embed_size} -> elman:{hidden}", "seeds": run.size, "steps": run.step,
             "eval_bits_per_char": pm([v[-1] / math.log(2) for v in losses]),
             "eval_accuracy": pm([v[-1] for v in accuracies]), "chance": run.chance}]
    notes = "\n".join([f"Text: {path.name}, {trained.info.vocab_size} symbols. Member 0 (seed {seed}) after the "
                       f"prompt {prompt!r}:",
                       "", "```", f"greedy:           {greedy}",
                       *(f"temperature {t:<4}: {s}" for t, s in samples.items()), "```"])
    print(notes)
    fig, ax = plt.subplots(figsize=(6, 4))
    members, bits = list(range(run.size)), (lambda v: v / math.log(2))
    band(ax, run, "eval_loss", members, "validation (held-out end of the text)", transform=bits, marker="o")
    band(ax, run, "loss", members, "training minibatch", transform=bits, alpha=0.6)
    ax.set(xlabel="step", ylabel="bits per character", title=f"character model (Elman, {run.size} seeds)")
    return publish(fig, out, "char_model", rows,
                   "Character model: validation bits per character (mean ± std over seeds)", notes)


if __name__ == "__main__":
    args = parse_args(__doc__, text=True)
    main(quick=args.quick, out=args.out, seed=args.seed, text=args.text)
