"""A character LSTM on real text every machine has: the source files of the Python standard library.

The top-level ``*.py`` files of this Python's standard library, read in name order and joined;
the last 10% of the characters (the last files) is the validation text, never trained on, and the
vocabulary comes from the training part only. An LSTM language model is trained on windows of
characters by the explicit BPTT (Adam, global-norm clipping), then writes code from a prompt,
carrying its state. The same run from the command line::

    perceptron1 train --data $(python -c "import sysconfig; print(sysconfig.get_paths()['stdlib'])")/*.py \\
        --layers lstm:256 --seq-len 64 --batch-size 64 --lr 2e-3 --clip 1 --steps 3000 --eval-every 500 \\
        --out runs/stdlib
    perceptron1 generate runs/stdlib --prompt "def " --length 300 --temperature 0.7

A population of 5 seeds (``--seeds 5`` on the command line). Table: validation bits per character
(cross-entropy / ln 2, over every held-out character) and accuracy, mean ± standard deviation over
the seeds; member 0's greedy and sampled continuations.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
from _common import band, main_guard, member_values, pm, publish, seeds_for, stdlib_files, train_population

from perceptron1_jax.generate import generate
from perceptron1_jax.runs import load_run


def main(quick: bool = False, out=None, seed: int = 0, hidden: int = 256, seq_len: int = 64, steps: int = 3000,
         batch: int = 64, files: int | None = None, prompt: str = "def "):
    if quick:
        hidden, seq_len, steps, batch, files = 16, 16, 10, 8, 2
    paths = stdlib_files()[: files]
    seeds = seeds_for(quick)
    run = train_population(out, "stdlib_chars", seeds, data=tuple(str(p) for p in paths), tokens="chars",
                           layers=f"lstm:{hidden}", seq_len=seq_len, batch_size=batch, lr=2e-3, clip=1.0, steps=steps,
                           eval_every=max(steps // 8, 1), log_every=max(steps // 20, 1), seed=seed)
    trained = load_run(out / "runs" / "stdlib_chars", member=0)
    greedy = generate(trained, prompt, 200, temperature=0)
    sampled = generate(trained, prompt, 300, temperature=0.7, seed=seed)
    losses, accuracies = member_values(run, "eval_loss"), member_values(run, "eval_accuracy")
    size = sum(p.stat().st_size for p in paths)
    rows = [{"model": f"embed {trained.spec.vocab_size}x{trained.spec.embed_size} -> lstm:{hidden}",
             "text": f"{len(paths)} stdlib files, {size / 1e6:.2f} MB", "seeds": run.size, "steps": run.step,
             "train_windows": f"{run.step * batch} of {seq_len} chars",
             "eval_bits_per_char": pm([v[-1] / math.log(2) for v in losses]),
             "eval_accuracy": pm([v[-1] for v in accuracies]), "chance": run.chance}]
    notes = "\n".join([f"Member 0 (seed {seed}), greedy after {prompt!r}:", "", "```python", greedy, "```", "",
                       f"Sampled at temperature 0.7 after {prompt!r}:", "", "```python", sampled, "```"])
    print(notes)
    fig, ax = plt.subplots(figsize=(6, 4))
    members, bits = list(range(run.size)), (lambda v: v / math.log(2))
    band(ax, run, "loss", members, "training minibatch", transform=bits, alpha=0.6)
    band(ax, run, "eval_loss", members, "validation (the last files, never trained on)", transform=bits, marker="o")
    ax.set(xlabel="step", ylabel="bits per character",
           title=f"character LSTM on the standard library ({run.size} seeds)")
    return publish(fig, out, "stdlib_chars", rows,
                   "Character LSTM on the Python standard library (mean ± std over seeds)", notes)


if __name__ == "__main__":
    main_guard(main)
