"""Training-step time of the cells, one process, interleaved rounds (median): minGRU and minLSTM
(sequential, with the input projection in the loop (the CPU default) and hoisted before it, and
associative) against our GRU and LSTM, and a cell of your own (IndRNN, no hand-written backward:
its local backward is jax.vjp of its step) by the explicit BPTT against jax.grad of the same cell
through lax.scan. One layer, many-to-one, Adam, float32.

    python benchmarks/cells.py                          # B64 I32 H128, T 128 512 2048 4096
    python benchmarks/cells.py --time 128 512 --rounds 3
    python benchmarks/cells.py --quick                  # a smoke test (tiny sizes)

Re-executes itself once under perceptron1_jax.bench.ALLOCATOR_ENV (one host device: single-device
steps). Prints a markdown table; --out writes it (and the JSON) there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.bptt import make_value_and_grad
from perceptron1_jax.cells import CELLS

BUILT_IN = ("gru", "mingru", "lstm", "minlstm")
MIN = ("mingru", "minlstm")
USER = "indrnn"


def indrnn() -> None:
    """Register IndRNN, ``h' = tanh(x W + u * h + b)``, without a hand-written backward."""
    if USER in CELLS:
        return

    def shapes(i, h):
        return {"W": (i, h), "u": (h,), "b": (h,)}

    def init(key, i, h, dtype):
        k_w, k_u = jax.random.split(key)
        return {"W": (jax.random.normal(k_w, (i, h)) / np.sqrt(i)).astype(dtype),
                "u": jax.random.uniform(k_u, (h,), dtype, 0.2, 0.9), "b": jnp.zeros((h,), dtype)}

    def step(params, carry, x):
        return (jnp.tanh(x @ params["W"] + params["u"] * carry[0] + params["b"]),)

    p1.register_cell(p1.custom_cell(USER, shapes, init, step))


def contenders(cell: str, size: bench.Size, grads: tuple[str, ...], scan: str = "sequential",
               hoist: bool | None = None) -> list[bench.Contender]:
    """Compiled Adam steps of one layer of ``cell``; ``hoist``: the spec's choice of the input
    projection (``LoopForms(hoist=...)``; None: the platform's default)."""
    spec = p1.ModelSpec([p1.LayerSpec(cell, size.hidden, scan=scan)], size.classes, input_size=size.input,
                        forms=p1.LoopForms(hoist=hoist))
    params = p1.init_model(jax.random.key(0), spec)
    xs, labels = bench._problem(size)
    out = []
    for grad in grads:
        fn = make_value_and_grad(spec, grad)
        name = f"{cell}, {'explicit BPTT' if grad == 'bptt' else 'jax.grad'}"
        name += "" if scan == "sequential" else f", {scan}"
        name += "" if hoist is None else f", projection {'hoisted' if hoist else 'in the loop'}"
        out.append(bench._jax_contender(name, lambda p, x, y, fn=fn: fn(p, x, y)[:2], params, xs, labels))
    return out


def main(args) -> dict:
    indrnn()
    rows = []
    for time in args.time:
        size = bench.Size(args.batch, args.input, args.hidden, time)
        entries = [c for cell in BUILT_IN for c in contenders(cell, size, ("bptt",))]
        entries += [c for cell in MIN for c in contenders(cell, size, ("bptt",), hoist=True)]
        entries += [c for cell in MIN for c in contenders(cell, size, ("bptt",), scan="associative")]
        entries += contenders(USER, size, ("bptt", "autodiff"))
        seconds = bench.time_contenders(entries, args.rounds, args.min_seconds)
        ms = {name: 1e3 * s for name, s in seconds.items()}
        row = {"size": size.label(), **{k: round(v, 3) for k, v in ms.items()},
               "gru / mingru": ms["gru, explicit BPTT"] / ms["mingru, explicit BPTT"],
               "lstm / minlstm": ms["lstm, explicit BPTT"] / ms["minlstm, explicit BPTT"],
               **{f"{cell}: in the loop / hoisted": ms[f"{cell}, explicit BPTT"]
                  / ms[f"{cell}, explicit BPTT, projection hoisted"] for cell in MIN},
               **{f"{cell}: associative / sequential": ms[f"{cell}, explicit BPTT, associative"]
                  / ms[f"{cell}, explicit BPTT"] for cell in MIN},
               "user cell: jax.grad / explicit": ms[f"{USER}, jax.grad"] / ms[f"{USER}, explicit BPTT"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cells.md").write_text(table + "\n")
        (args.out / "cells.json").write_text(json.dumps(rows, indent=2) + "\n")
    return {"rows": rows, "table": table}


def markdown(rows: list[dict]) -> str:
    """The rows as a markdown table (ms per step; the ratios to 3 digits) under the machine's line."""
    columns = list(rows[0])
    lines = [f"Machine: {bench.machine_description()}; ms per training step (median of interleaved rounds)", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()) + " |"
              for row in rows]
    return "\n".join(lines)


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time", type=int, nargs="+", default=[128, 512, 2048, 4096])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    parser.add_argument("--out", type=Path, help="folder for cells.md and cells.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.time, args.batch, args.input, args.hidden, args.rounds, args.min_seconds = [4], 2, 3, 4, 1, 0.0
    return args


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    main(parse())
