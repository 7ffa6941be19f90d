"""Does running stacked layers as a wavefront pay? (issue 21, item 2)

Times, per cell and depth, a training step (explicit BPTT + Adam, many-to-one, float32, one device)
and the plain forward of a stack of forward-only layers, with the layers one after the other
(``LoopForms(wavefront=False)``) and as a wavefront (``LoopForms(wavefront=True)``:
:mod:`perceptron1_jax.wavefront`), interleaved rounds in one process (median):

    python benchmarks/wavefront.py                           # B64 I32 H128 T128, depth 2 and 4
    python benchmarks/wavefront.py --hidden 32 --depth 2 4 8
    python benchmarks/wavefront.py --quick                   # a smoke test (tiny sizes)

Ratios above 1 mean the wavefront is faster. Re-executes itself once under
perceptron1_jax.bench.ALLOCATOR_ENV.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.bptt import explicit_model
from perceptron1_jax.model import forward


def contenders(cell: str, depth: int, batch: int, inputs: int, hidden: int, time: int, wave: bool):
    """A compiled training step and a compiled forward of the stack, traced with the wavefront on or off."""
    spec = p1.ModelSpec(tuple(p1.LayerSpec(cell, hidden) for _ in range(depth)), num_outputs=10, input_size=inputs,
                        forms=p1.LoopForms(wavefront=wave))
    key = jax.random.key(0)
    params = p1.init_model(key, spec)
    xs = jax.random.normal(key, (batch, time, inputs))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (batch,), 0, 10)
    label = f"{cell} x{depth}, {'wavefront' if wave else 'layer by layer'}"
    step = bench._jax_contender(f"{label}, train step", lambda p, x, y: explicit_model(p, x, y, spec)[:2],
                                params, xs, labels)
    compiled = jax.jit(lambda p, x: forward(p, x, spec).outputs).lower(params, xs).compile()
    return [step, bench.Contender(f"{label}, forward", lambda: jax.block_until_ready(compiled(params, xs)))]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["elman", "lstm", "gru"])
    parser.add_argument("--depth", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    args = parser.parse_args(argv)
    batch, inputs, hidden, time = (2, 3, 4, 5) if args.quick else (64, 32, args.hidden, args.time)
    rows = [(cell, depth) for cell in args.cells for depth in args.depth]
    entries = [c for cell, depth in rows for wave in (False, True)
               for c in contenders(cell, depth, batch, inputs, hidden, time, wave)]
    seconds = bench.time_contenders(entries, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.2)
    print(f"{bench.machine_description()}; B{batch} I{inputs} H{hidden} T{time}, float32, one device; "
          f"allocator env {bench.allocator_env_applied()}")
    print("| cell | layers | step, layer by layer ms | step, wavefront ms | speed-up | forward, layer by layer ms "
          "| forward, wavefront ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    table = []
    for cell, depth in rows:
        ms = {(kind, wave): 1e3 * seconds[f"{cell} x{depth}, {'wavefront' if wave else 'layer by layer'}, {kind}"]
              for kind in ("train step", "forward") for wave in (False, True)}
        named = {f"{k}, {'wavefront' if w else 'layers'}": v for (k, w), v in ms.items()}
        row = {"cell": cell, "layers": depth, "ms": named,
               "speedup_step": ms["train step", False] / ms["train step", True],
               "speedup_forward": ms["forward", False] / ms["forward", True]}
        table.append(row)
        print(f"| {cell} | {depth} | {ms['train step', False]:.2f} | {ms['train step', True]:.2f} | "
              f"{row['speedup_step']:.2f}x | {ms['forward', False]:.2f} | {ms['forward', True]:.2f} | "
              f"{row['speedup_forward']:.2f}x |")
    return {"rows": table}


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    jnp.zeros(())  # start the backend before the first compile
    main()
