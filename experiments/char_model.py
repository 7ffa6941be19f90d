"""Lesson: a character model trained on a text, then writing text from a prompt.

The lesson: letters and space only, 6 characters in, ``SimpleRNN(128)`` -> softmax over the
characters, cross-entropy with Adam, then 50 characters written greedily after a 6-character
prompt. Here: the same alphabet and an Elman layer of 128, trained as a language model on windows
of text (a target at every step) by the explicit BPTT, evaluated on the last 10% of the text
(never trained on), and writing by carrying the state (the prompt is read once). The text is the
standard library's docstrings as prose (every machine has it); ``--text FILE`` takes your own.
Table: validation bits per character and accuracy, the greedy continuation and samples.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib.pyplot as plt
from _common import curves, parse_args, publish, stdlib_prose, train_run

from perceptron1_jax.generate import generate
from perceptron1_jax.runs import load_run


def main(quick: bool = False, out=None, seed: int = 0, text=None, chars: int = 200_000, steps: int = 3000,
         hidden: int = 128, seq_len: int = 32, prompt: str = "the fu"):
    if quick:
        chars, steps, hidden, seq_len = 6_000, 12, 16, 16
    path = pathlib.Path(text) if text else stdlib_prose(out, chars)
    run = train_run(out, "char_model", data=(str(path),), tokens="chars", cell="elman", hidden=hidden,
                    seq_len=seq_len, steps=steps, batch_size=32, lr=3e-3, clip=1.0, eval_every=max(steps // 15, 1),
                    log_every=max(steps // 15, 1), seed=seed)
    trained = load_run(out / "runs" / "char_model")
    greedy = generate(trained, prompt, 50, temperature=0)
    samples = {t: generate(trained, prompt, 50, temperature=t, seed=seed) for t in (0.5, 1.0)}
    last = [r for r in run.history if "eval_loss" in r][-1]
    rows = [{"model": f"embed {trained.spec.embed_size} -> elman:{hidden}", "steps": run.step,
             "eval_bits_per_char": last["eval_loss"] / math.log(2), "eval_accuracy": last["eval_accuracy"],
             "chance": run.chance}]
    notes = "\n".join([f"Text: {path.name}, {trained.info.vocab_size} symbols. Written after the prompt {prompt!r}:",
                       "", "```", f"greedy:           {greedy}",
                       *(f"temperature {t:<4}: {s}" for t, s in samples.items()), "```"])
    print(notes)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps_, losses = curves(run.history, "eval_loss")
    ax.plot(steps_, [v / math.log(2) for v in losses], "o-", label="validation (held-out end of the text)")
    steps_, losses = curves(run.history, "loss")
    ax.plot(steps_, [v / math.log(2) for v in losses], alpha=0.6, label="training minibatch")
    ax.set(xlabel="step", ylabel="bits per character", title="character model (Elman)")
    return publish(fig, out, "char_model", rows, "Character model: validation bits per character", notes)


if __name__ == "__main__":
    args = parse_args(__doc__, text=True)
    main(quick=args.quick, out=args.out, seed=args.seed, text=args.text)
