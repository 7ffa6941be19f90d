"""The explicit backward against jax.grad on every experiment's final model, in float64.

Reads the newest checkpoint of every run under ``<out>/runs/`` (written by the other experiments;
run them first), casts the parameters to float64, and compares the explicit BPTT gradient with
``jax.grad`` of the plain ``lax.scan`` loss on a batch of the run's own task or files (runs on
data made in Python are skipped). When no run exists
yet (a fresh clone), it first trains a short population per cell. A population's run is checked
member by member (with ``--quick``, member 0 only). Table: the largest relative error per run over
its members (max |explicit - autodiff| / max |autodiff| over every parameter).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from _common import main_guard, seeds_for, train_population, write_table

import perceptron1_jax as p1
from perceptron1_jax.checkpoint import list_checkpoints
from perceptron1_jax.diagnostics import max_relative_error
from perceptron1_jax.train import check_same_data, run_data

QUICK_MODELS = 6  # --quick checks at most this many models (the full run checks every one)


def _has_data(cfg) -> bool:
    """A built-in task or files to read again (a run on data made in Python has neither)."""
    return cfg.task is not None or cfg.data is not None or cfg.classes is not None


def main(quick: bool = False, out=None, seed: int = 0, batch: int = 32):
    runs_dir = out / "runs"
    found = sorted(d for d in runs_dir.iterdir() if list_checkpoints(d)) if runs_dir.is_dir() else []
    if not found:
        for cell in ("elman", "lstm", "gru"):
            train_population(out, f"bptt-vs-autodiff-{cell}", seeds_for(quick), task="three_step", cell=cell,
                             hidden=8 if quick else 32, steps=5 if quick else 200, seed=seed)
        found = sorted(d for d in runs_dir.iterdir() if list_checkpoints(d))
    found = [d for d in found if _has_data(p1.load_checkpoint(d)["config"])]
    if quick:  # one model per task or data source: each new shape costs a float64 compile
        firsts = {}
        for run_dir in found:
            cfg = p1.load_checkpoint(run_dir)["config"]
            firsts.setdefault(cfg.task or cfg.data or cfg.classes, run_dir)
        found = sorted(firsts.values())[:QUICK_MODELS]
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        rows = _compare(found, seed, batch, quick)
    finally:
        jax.config.update("jax_enable_x64", previous)
    write_table(out, "bptt_vs_autodiff", rows, "Explicit BPTT vs jax.grad on the experiments' final models (float64)")
    worst = max(r["max_relative_error"] for r in rows)
    print(f"worst relative error over {len(rows)} models: {worst:.2e}")
    if not np.isfinite(worst) or worst > 1e-6:
        raise SystemExit(f"explicit BPTT disagrees with jax.grad: {worst:.2e} > 1e-6")
    return rows


def _compare(found, seed, batch, quick):
    rows = []
    for run_dir in found:
        whole = p1.load_checkpoint(run_dir)
        members = [None] if "members" not in whole else range(1 if quick else len(whole["members"]))
        errors, losses = [], []
        for member in members:
            loaded = whole if member is None else p1.load_checkpoint(run_dir, member=member)
            cfg, spec = loaded["config"], loaded["spec"]
            params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), loaded["params"])
            if cfg.task is not None:
                data = cfg.task_spec.make(jax.random.key(seed + 99), batch, cfg.time, jnp.float64)
            else:  # the first examples of the run's own files (refused by name if they changed since)
                files = run_data(dataclasses.replace(cfg, dtype="float64"))  # a member's own split and statistics
                check_same_data(loaded["data"], files.info)
                data = jax.tree.map(lambda a: a[:batch], files.train)
            loss, ours = p1.model_bptt(params, data.xs, data.labels, spec, data.lengths)
            reference = jax.grad(p1.model_loss)(params, data.xs, data.labels, spec, data.lengths)
            errors.append(max_relative_error(ours, reference))
            losses.append(float(loss))
        source = cfg.task or pathlib.Path((cfg.data or cfg.classes)[0]).name
        rows.append({"run": run_dir.name, "task": source, "cell": cfg.layers or cfg.cell, "seq_len": data.xs.shape[1],
                     "step": whole["step"], "members_checked": len(errors), "loss_mean": float(np.mean(losses)),
                     "max_relative_error": max(errors)})
    return rows


if __name__ == "__main__":
    main_guard(main)
