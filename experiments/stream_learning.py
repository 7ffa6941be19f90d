"""Learning online from one stream (issue 29): what carrying the state and the influence from
batch to batch (``TrainConfig(stream=True)``, ``--stream``) does to a character model.

Four ways to train the same GRU with SnAp-1 and an update every 4 characters, at the same number
of updates, each over 3 seeds:

* ``random windows``: each step's 8 windows drawn at random from the whole text, each read from
  zero state and influence (``perceptron1 train`` without ``--stream``);
* ``stream``: 8 lanes each read on through their part of the text, state and influence carried
  from step to step (``--stream``);
* ``lanes, fresh each step``: the stream's batches, each step from zero state and influence
  (the order of the stream without its carry);
* ``stream, influence restarted``: the stream's batches and carried state, the influence restarted
  at zero every step (the carry of the state without that of the influence).

The held-out end of the text is scored two ways: each window from zero state (what a run logs as
``eval_loss``), and in one pass with the state carried through the whole held-out text. The text
is the standard library's docstrings as prose (every machine has it); ``--text FILE`` takes yours.
"""

from __future__ import annotations

import math
import pathlib

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from _common import RESULTS, parse_args, pm, publish, stdlib_prose, train_run

from perceptron1_jax.model import evaluate
from perceptron1_jax.online import start_stream
from perceptron1_jax.training import TrainConfig
from perceptron1_jax.training.config import check_run
from perceptron1_jax.training.ingredients import initial_params, run_data, stream_batch
from perceptron1_jax.training.step import run_mesh, run_step

ARMS = ("random windows", "stream", "lanes, fresh each step", "stream, influence restarted")


def scores(params, spec, split) -> dict:
    """Bits per character of ``split`` read window by window from zero state, and in one pass."""
    xs, ys = np.asarray(split.xs), np.asarray(split.labels)
    windows, whole = evaluate(params, xs, ys, spec), evaluate(params, xs.reshape(1, -1), ys.reshape(1, -1), spec)
    return {"windows_bits": float(windows["loss"]) / math.log(2), "one_pass_bits": float(whole["loss"]) / math.log(2),
            "one_pass_accuracy": float(whole["accuracy"])}


def train_lanes(cfg: TrainConfig, restart: str):
    """``cfg``'s stream run in a loop of its own, restarting ``"all"`` of the stream or its
    ``"influence"`` before every step; returns ``(params, spec, data)``."""
    data = run_data(cfg)
    spec = check_run(cfg, data)
    optimizer, step = run_step(cfg, spec, run_mesh(cfg, None, spec))  # the stream run's own step
    params = initial_params(cfg, spec)
    opt_state, fresh = optimizer.init(params), start_stream(params, spec, cfg.gradient, cfg.batch_size)
    stream = fresh
    for s in range(cfg.steps):
        if restart == "all":
            stream = fresh
        else:
            stream = stream._replace(influence=jax.tree.map(jnp.zeros_like, stream.influence))
        params, opt_state, _, stream = step(params, opt_state, stream_batch(data.train, s, cfg.batch_size), None,
                                            stream)
    return params, spec, data


def main(quick: bool = False, out=None, seed: int = 0, text=None, chars: int = 200_000, steps: int = 1500,
         hidden: int = 32, seq_len: int = 16, batch: int = 8, seeds: int = 3):
    if quick:
        chars, steps, hidden, seq_len, batch, seeds = 6_000, 6, 8, 8, 4, 1
    out = pathlib.Path(out) if out else RESULTS
    path = pathlib.Path(text) if text else stdlib_prose(out, chars)
    base = dict(data=(str(path),), cell="gru", hidden=hidden, seq_len=seq_len, batch_size=batch, gradient="snap1",
                online_every=4, steps=steps, eval_every=steps, log_every=steps, checkpoint_every=steps)
    found = {arm: [] for arm in ARMS}
    for k in range(seeds):
        cfg = TrainConfig(**base, seed=seed + k, stream=True)
        for arm, stream in (("random windows", False), ("stream", True)):
            run = train_run(out, f"stream_learning_{arm.replace(' ', '_')}_{seed + k}", **base, seed=seed + k,
                            stream=stream)
            found[arm].append(scores(run.params, run.spec, run_data(cfg).eval))
        for arm, restart in (("lanes, fresh each step", "all"), ("stream, influence restarted", "influence")):
            print(f"  training {arm}, seed {seed + k}", flush=True)
            params, spec, data = train_lanes(cfg, restart)
            found[arm].append(scores(params, spec, data.eval))
    rows = [{"training": arm, "seeds": len(runs), "steps": steps,
             "bits_windows_from_zero": pm([r["windows_bits"] for r in runs]),
             "bits_one_pass": pm([r["one_pass_bits"] for r in runs]),
             "accuracy_one_pass": pm([r["one_pass_accuracy"] for r in runs])} for arm, runs in found.items()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for j, key in enumerate(("windows_bits", "one_pass_bits")):
        values = [[r[key] for r in found[arm]] for arm in ARMS]
        place = np.arange(len(ARMS)) + (j - 0.5) * 0.35
        ax.bar(place, [np.mean(v) for v in values], 0.35, yerr=[np.std(v) for v in values],
               label="each window from zero state" if j == 0 else "one pass, state carried")
    ax.set_xticks(np.arange(len(ARMS)), [a.replace(", ", ",\n") for a in ARMS], fontsize=8)
    low = min(r[key] for runs in found.values() for r in runs for key in ("windows_bits", "one_pass_bits"))
    ax.set(ylabel="held-out bits per character", ylim=(low - 0.3, None),
           title=f"GRU {hidden}, SnAp-1 every 4 characters, {steps} steps ({seeds} seeds)")
    notes = (f"Text: {path.name}. GRU of {hidden} units, batch {batch} (lanes), windows of {seq_len}, SnAp-1 with "
             f"an update every 4 characters, Adam, {steps} steps; mean ± std over {seeds} seeds.")
    return publish(fig, out, "stream_learning", rows, "Learning from one stream: held-out bits per character",
                   notes)


if __name__ == "__main__":
    args = parse_args(__doc__, text=True)
    main(quick=args.quick, out=args.out, seed=args.seed, text=args.text)
