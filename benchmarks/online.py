"""What an online gradient costs beside the explicit BPTT (issue 29, item 5).

One training step (the gradient of a many-to-one batch + Adam, float32, jitted) of one recurrent
layer, for each method of :func:`perceptron1_jax.online_grad` (SnAp-1 and e-prop with the compact
influence, and in the dense masked form as ``snap1-dense``/``eprop-dense``) and for the explicit
BPTT (:func:`perceptron1_jax.bptt`): milliseconds per step (median of interleaved rounds) and the
compiled program's temporary memory (XLA's ``temp_size_in_bytes``: what the step holds beside its
inputs and outputs), over hidden sizes and sequence lengths. A method is skipped where its
influence would not fit (exact RTRL's refusal) or where its time at the shortest length,
scaled to a longer one, would pass ``--budget`` seconds per step.

    python benchmarks/online.py                      # the grid below, prints the table
    python benchmarks/online.py --quick              # a smoke test (tiny sizes, one round)
    python benchmarks/online.py --out DIR            # also DIR/online.md and online.json

Re-executes itself once under perceptron1_jax.bench.ALLOCATOR_ENV (one device).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

import perceptron1_jax as p1
from perceptron1_jax import bench, influence
from perceptron1_jax.online import METHODS

DENSE = ("snap1-dense", "eprop-dense")  # SnAp-1 and e-prop in the dense masked form (influence.Dense), for the ratio
CONTENDERS = ("bptt", *METHODS, *DENSE)


def step_program(method: str, cell: str, params, xs, labels):
    """The compiled ``(params, opt_state) -> (params, opt_state, loss)`` of ``method``, and the state."""
    optimizer = optax.adam(1e-3)
    key = jax.random.key(3)

    def step(params, opt_state):
        if method == "bptt":
            loss, grads = p1.bptt(params, xs, labels, cell)
        else:
            loss, grads = p1.online_grad(params, xs, labels, cell, method=method, key=key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    if method in DENSE:  # traced (and compiled) with the compact influence turned off
        method = method.removesuffix("-dense")
        with mock.patch.object(influence, "compact_applies", lambda spec, method: False):
            compiled = jax.jit(step).lower(params, opt_state).compile()
    else:
        compiled = jax.jit(step).lower(params, opt_state).compile()
    return compiled, opt_state, compiled.memory_analysis().temp_size_in_bytes


def contender(method, cell, size: bench.Size):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.standard_normal((size.batch, size.time, size.input)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, size.classes, size.batch))
    params = p1.init_params(jax.random.key(0), cell, size.input, size.hidden, size.classes)
    compiled, opt_state, temp = step_program(method, cell, params, xs, labels)
    state = {"params": params, "opt_state": opt_state}

    def run():
        state["params"], state["opt_state"], loss = compiled(state["params"], state["opt_state"])
        loss.block_until_ready()

    return bench.Contender(method, run, float(temp))


def predicted_seconds(method: str, cell: str, size: bench.Size, flops_per_second: float = 5e10) -> float:
    """A floor on a step's time from its matrix work, to skip what cannot fit the budget before
    compiling it: the dense influence methods' ``J_s M`` product (``2 S^2 P`` per example and step)
    and their ``2 S`` Jacobian passes through the step (``~2 P`` each); the compact SnAp-1 and
    e-prop, like BPTT and UORO, cost a few passes of ``O(P)``."""
    if method in ("bptt", "uoro", "snap1", "eprop"):
        return 0.0
    params = p1.init_params(jax.random.key(0), cell, size.input, size.hidden, size.classes)
    state = p1.CELLS[cell].carry_size * size.hidden
    count = sum(leaf.size for leaf in jax.tree.leaves(params["cell"]))
    per_step = 2 * state * state * count + 4 * state * count
    return size.batch * size.time * per_step / flops_per_second


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["gru", "mingru"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[16, 64, 256])
    parser.add_argument("--time", nargs="+", type=int, default=[128, 512, 2048, 8192])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--input", type=int, default=8)
    parser.add_argument("--methods", nargs="+", choices=CONTENDERS, default=list(CONTENDERS),
                        help="the *-dense ones: SnAp-1 and e-prop in the dense masked form (for the ratio)")
    parser.add_argument("--budget", type=float, default=5.0, help="seconds per step beyond which a method is skipped")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.quick:
        args.cells, args.hidden, args.time, args.batch, args.input = ["gru"], [3], [4, 8], 2, 2
    machine = bench.machine_description()
    print(f"{machine}; allocator env {bench.allocator_env_applied()}; float32, gradient + Adam, B{args.batch} "
          f"I{args.input}; ms per step / compiled temporary MiB")
    rows, first_seconds = [], {}
    for cell, hidden in itertools.product(args.cells, args.hidden):
        for time in sorted(args.time):
            size = bench.Size(args.batch, args.input, hidden, time, classes=4)
            contenders, skipped = [], {}
            for method in args.methods:
                shortest = first_seconds.get((cell, hidden, method))
                guess = shortest[1] * time / shortest[0] if shortest else predicted_seconds(method, cell, size)
                if guess > args.budget:
                    skipped[method] = f"about {guess:.0f} s per step, over the {args.budget:g} s budget"
                    continue
                try:
                    contenders.append(contender(method, cell, size))
                except ValueError as err:  # exact RTRL whose influence does not fit
                    skipped[method] = str(err).split(" = ")[-1].split(",")[0]
            seconds = bench.time_contenders(contenders, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.2)
            for c in contenders:
                first_seconds.setdefault((cell, hidden, c.name), (time, seconds[c.name]))
            row = {"cell": cell, "hidden": hidden, "time": time,
                   "ms": {c.name: 1e3 * seconds[c.name] for c in contenders},
                   "temp_mib": {c.name: c.temp_bytes / 2**20 for c in contenders}, "skipped": skipped}
            rows.append(row)
            cells = [f"{row['ms'][m]:9.2f} / {row['temp_mib'][m]:8.2f}" if m in row["ms"] else f"{'-':>20}"
                     for m in args.methods]
            print(f"  {cell:7} H{hidden:<4} T{time:<5} " + "  ".join(cells), flush=True)
    if args.out:
        write(args, machine, rows)
    return rows


def write(args, machine: str, rows: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "online.json").write_text(json.dumps({"machine": machine, "batch": args.batch, "input": args.input,
                                                      "rows": rows}, indent=2) + "\n")
    lines = [f"Machine: {machine}; allocator env {bench.allocator_env_applied()}. One training step (the gradient of "
             f"a many-to-one batch B{args.batch} I{args.input} + Adam, float32, one device): ms per step (median of "
             f"{args.rounds} interleaved rounds) / the compiled step's temporary MiB. `-`: skipped (the reason in "
             "online.json).", "", "| cell | H | T | " + " | ".join(args.methods) + " |",
             "|---|---:|---:|" + "---:|" * len(args.methods)]
    for r in rows:
        lines.append(f"| {r['cell']} | {r['hidden']} | {r['time']} | " + " | ".join(
            f"{r['ms'][m]:.2f} / {r['temp_mib'][m]:.2f}" if m in r["ms"] else "-" for m in args.methods) + " |")
    (args.out / "online.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    main()
