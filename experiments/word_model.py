"""Lesson: next-word prediction with an embedding.

The lesson: word tokens (the 1000 most frequent words), 3 words in, ``Embedding(1000, 256) ->
SimpleRNN(128)`` -> softmax over the words, cross-entropy with Adam, then 20 words written after a
3-word prompt. Here: the same vocabulary limit (``<unk>`` for the rest), embedding and Elman
layer, trained as a language model on windows of words by the explicit BPTT, evaluated on the last
10% of the text (never trained on), writing by carrying the state. Text: the standard library's
docstrings as prose; ``--text FILE`` takes your own. Table: validation perplexity and accuracy,
and the words written.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib.pyplot as plt
from _common import curves, parse_args, publish, stdlib_prose, train_run

from perceptron1_jax.generate import generate
from perceptron1_jax.runs import load_run


def main(quick: bool = False, out=None, seed: int = 0, text=None, chars: int = 600_000, steps: int = 3000,
         hidden: int = 128, seq_len: int = 16, prompt: str = "return the value"):
    if quick:
        chars, steps, hidden, seq_len = 8_000, 12, 16, 8
    path = pathlib.Path(text) if text else stdlib_prose(out, chars)
    run = train_run(out, "word_model", data=(str(path),), tokens="words", max_vocab=1000, embed_size=256,
                    cell="elman", hidden=hidden, seq_len=seq_len, steps=steps, batch_size=32, lr=2e-3, clip=1.0,
                    eval_every=max(steps // 15, 1), log_every=max(steps // 15, 1), seed=seed)
    trained = load_run(out / "runs" / "word_model")
    greedy = generate(trained, prompt, 20, temperature=0)
    sampled = generate(trained, prompt, 20, temperature=0.8, seed=seed)
    last = [r for r in run.history if "eval_loss" in r][-1]
    rows = [{"model": f"embed {trained.spec.vocab_size}x256 -> elman:{hidden}", "steps": run.step,
             "eval_perplexity": math.exp(last["eval_loss"]), "eval_accuracy": last["eval_accuracy"],
             "chance": run.chance}]
    notes = "\n".join([f"Text: {path.name}, {trained.info.vocab_size} word ids (<unk> included). Written after "
                       f"the prompt {prompt!r}:", "", "```", f"greedy:          {greedy}",
                       f"temperature 0.8: {sampled}", "```"])
    print(notes)
    fig, ax = plt.subplots(figsize=(6, 4))
    steps_, losses = curves(run.history, "eval_loss")
    ax.plot(steps_, [math.exp(v) for v in losses], "o-", label="validation (held-out end of the text)")
    ax.set(xlabel="step", ylabel="perplexity (words)", yscale="log", title="next-word model (embedding + Elman)")
    return publish(fig, out, "word_model", rows, "Next-word prediction: validation perplexity", notes)


if __name__ == "__main__":
    args = parse_args(__doc__, text=True)
    main(quick=args.quick, out=args.out, seed=args.seed, text=args.text)
