"""Online gradients against the explicit BPTT on the copy and adding tasks (issue 29, item 6).

Each (task, lag, cell, method) trains a population of 5 seeds with the same budget (Adam, one
learning rate, global-norm clipping 1, the same steps, each member stopped at the task's target):
``method`` is the explicit BPTT or an online gradient (``TrainConfig(gradient=...)``: exact RTRL,
SnAp-1, e-prop, UORO). The training runs in three parts (resumed), and after each the alignment
of every member's online gradient with its BPTT gradient is measured on a fixed batch (cosine of
the whole gradient, ``p1.model_gradient_alignment``). The table gives the best held-out accuracy
(mean ± std over the seeds), how many seeds reached the target, the cosine through training and
the population's wall time; the notes test three claims of the literature on these numbers:

* Marschall, Cho & Savin (2020): performance clusters by the kind of approximation (exact:
  BPTT, RTRL; sparse traces: SnAp-1, e-prop; stochastic: UORO), and the alignment with the true
  gradient alone does not predict it;
* Menick et al. (2021): SnAp-1 beats UORO;
* Zucchet et al. (2023): element-wise RTRL on a diagonal recurrence (SnAp-1 on minGRU is exact)
  learns like BPTT, at a fraction of the memory (the memory is in benchmarks/online.py's table).
"""

from __future__ import annotations

import itertools
import shutil
import time

import jax
import matplotlib.pyplot as plt
import numpy as np
from _common import main_guard, member_values, pm, publish, reached, seeds_for

import perceptron1_jax as p1
from perceptron1_jax.tasks import TASKS

METHODS = ("bptt", "rtrl", "snap1", "eprop", "uoro")
FAMILIES = {"bptt": "exact", "rtrl": "exact", "snap1": "sparse trace", "eprop": "sparse trace",
            "uoro": "stochastic"}


def train_in_parts(out, name: str, seeds: int, parts: list[int], **config) -> list:
    """A population trained to each of ``parts`` steps in turn (each part resumes the last);
    returns the state after each part."""
    run_dir = out / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    states = []
    for k, stop in enumerate(parts):
        cfg = p1.TrainConfig(**{**config, "steps": stop})
        states.append(p1.train(cfg, run_dir, resume=k > 0, progress=False, log=lambda _: None, check_grads=False,
                               population=p1.Population(seeds=seeds)))
    return states


def cosines(state, method: str, batch) -> list[float]:
    """Each member's cosine between its ``method`` gradient and its BPTT gradient on ``batch``."""
    if method == "bptt":
        return [1.0] * state.size
    out = []
    for k in range(state.size):
        params = jax.tree.map(lambda a, k=k: a[k], state.params)
        table = p1.model_gradient_alignment(params, *batch, state.spec, methods=(method,), key=jax.random.key(k))
        out.append(table[method]["all"]["cosine"])
    return out


def spearman(a, b) -> float:
    ranks = [np.argsort(np.argsort(np.asarray(v))) for v in (a, b)]
    return float(np.corrcoef(*ranks)[0, 1])


def claims(rows: list[dict], settings: list[tuple], cells) -> str:
    """The three claims, tested on the table's means."""
    acc = {(r["task"], r["lag"], r["cell"], r["method"]): r["_best"] for r in rows}
    cos = {(r["task"], r["lag"], r["cell"], r["method"]): r["_cosine"] for r in rows}
    gap = {}
    for a, b in itertools.combinations(METHODS, 2):
        gap[a, b] = float(np.mean([abs(acc[(*s, a)] - acc[(*s, b)]) for s in settings]))
    within = [gap[p] for p in gap if FAMILIES[p[0]] == FAMILIES[p[1]]]
    between = [gap[p] for p in gap if FAMILIES[p[0]] != FAMILIES[p[1]]]
    online = [(*s, m) for s in settings for m in METHODS if m != "bptt"]
    rho = spearman([cos[k] for k in online], [acc[k] for k in online])
    snap_wins = sum(acc[(*s, "snap1")] > acc[(*s, "uoro")] for s in settings)
    diagonal = [s for s in settings if s[2] == "mingru"]
    zucchet = [acc[(*s, "snap1")] - acc[(*s, "bptt")] for s in diagonal] or [float("nan")]
    pairs = ", ".join(f"{a}-{b} {v:.3f}" for (a, b), v in gap.items())
    return (f"Mean absolute gap in best accuracy between two methods over the {len(settings)} settings: {pairs}. "
            f"Marschall et al.: within a family (exact: bptt, rtrl; sparse trace: snap1, eprop) the gap is "
            f"{np.mean(within):.3f} on average, between families {np.mean(between):.3f}; the Spearman correlation "
            f"of the final cosine with the best accuracy over the {len(online)} online runs is {rho:.2f}. "
            f"Menick et al.: SnAp-1's mean best accuracy is above UORO's in {snap_wins} of {len(settings)} settings. "
            f"Zucchet et al.: on minGRU (SnAp-1 exact) SnAp-1's best accuracy minus BPTT's is "
            + ", ".join(f"{d:+.3f}" for d in zucchet) + " (" + (", ".join(f"{s[0]} {s[1]}" for s in diagonal)
                                                                 or "no minGRU in this run") + ").")


def main(quick: bool = False, out=None, seed: int = 0, lags=(5, 10), hidden: int = 12, steps: int = 300,
         lr: float = 1e-2, cells=("elman", "gru", "mingru")):
    tasks, parts = ("copy", "adding"), [steps // 3, 2 * steps // 3, steps]
    if quick:  # every method once, in one part
        tasks, lags, hidden, steps, cells, parts = ("copy",), (3,), 4, 3, ("gru",), [3]
    seeds = seeds_for(quick)
    rows, settings = [], []
    for task, lag, cell in itertools.product(tasks, lags, cells):
        settings.append((task, lag, cell))
        batch = TASKS[task].make(jax.random.key(seed + 99), 64, lag)
        for method in METHODS:
            start = time.perf_counter()
            states = train_in_parts(out, f"online-{task}-{lag}-{cell}-{method}", seeds, parts, task=task, cell=cell,
                                    hidden=hidden, seq_len=lag, lr=lr, clip=1.0, batch_size=16, seed=seed,
                                    eval_every=max(steps // 6, 1), gradient=None if method == "bptt" else method)
            seconds = time.perf_counter() - start
            through = [cosines(state, method, (batch.xs, batch.labels)) for state in states]
            final = states[-1]
            evals = [sum(per_part, []) for per_part in zip(*(member_values(s, "eval_accuracy") for s in states))]
            bests = [max(e) for e in evals]  # over every part (a member stopped at its target logs no more)
            rows.append({"task": task, "lag": lag, "cell": cell, "method": method, "family": FAMILIES[method],
                         "best_eval_accuracy": pm(bests), "reached_target": reached(final, list(range(final.size))),
                         "cosine_with_bptt": " / ".join(pm(c, 2) for c in through),
                         "population_seconds": round(seconds, 1), "_best": float(np.mean(bests)),
                         "_cosine": float(np.mean(through[-1]))})
            print(f"  {task} {lag} {cell} {method}: best {rows[-1]['best_eval_accuracy']}, cosine "
                  f"{rows[-1]['cosine_with_bptt']}, {seconds:.0f} s", flush=True)
    notes = claims(rows, settings, cells)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    axes = axes[0]
    for ax, task in zip(axes, tasks):
        mine = [r for r in rows if r["task"] == task]
        labels = [f"{r['cell']}\n{r['lag']}" for r in mine if r["method"] == "bptt"]
        for k, method in enumerate(METHODS):
            values = [r["_best"] for r in mine if r["method"] == method]
            ax.bar(np.arange(len(values)) + 0.16 * (k - 2), values, width=0.16, label=method)
        ax.axhline(TASKS[task].chance, color="k", ls=":", lw=1, label="chance")
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set(ylabel="best held-out accuracy (mean over seeds)", ylim=(0, 1.02),
               title=f"{task}: hidden {hidden}, {steps} steps, {seeds} seeds (cell / lag)")
    axes[0].legend(fontsize=8)
    table = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return publish(fig, out, "online_learning", table,
                   "Online gradients against BPTT: best held-out accuracy and alignment (mean ± std over seeds)",
                   notes=f"{seeds} seeds per row; Adam lr {lr}, clip 1, batch 16, {steps} steps in "
                         f"{len(parts)} part(s), hidden {hidden}; cosine_with_bptt: the cosine of each member's "
                         f"gradient with its BPTT gradient on a fixed batch of 64, after each part; "
                         f"population_seconds: wall time, compile and the alignment included. " + notes)


if __name__ == "__main__":
    main_guard(main)
