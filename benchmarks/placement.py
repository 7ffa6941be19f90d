"""Where should a bidirectional model train on two host CPU devices? (issue 31, item 2)

One training step (forward + cross-entropy + explicit BPTT + Adam, float32, many-to-one) of
bidirectional models in three placements, interleaved rounds in one process (median):

* one device;
* the batch split over the two devices (:func:`perceptron1_jax.parallel.data_parallel`, each device
  running both directions on half the batch);
* the two directions on the two devices (:func:`perceptron1_jax.parallel.direction_parallel`, each
  device running one direction on the whole batch).

    python benchmarks/placement.py                      # the grid below, prints the table
    python benchmarks/placement.py --quick              # a smoke test (tiny sizes, one round)
    python benchmarks/placement.py --out DIR            # also DIR/placement.md and placement.json

Re-executes itself once under perceptron1_jax.bench.ALLOCATOR_ENV with one host device per core.
The last column is what the default device rule (``training.step.default_placement``) picks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.bench.contenders import _jax_contender, _problem
from perceptron1_jax.bptt import make_value_and_grad
from perceptron1_jax.parallel import data_parallel, direction_mesh, direction_parallel, make_mesh
from perceptron1_jax.training.step import default_placement

PLACEMENTS = ("one device", "batch split", "directions")


def contenders(cell: str, depth: int, size: bench.Size) -> list[bench.Contender]:
    spec = p1.ModelSpec([p1.LayerSpec(cell, size.hidden, True)] * depth, size.classes, input_size=size.input)
    params = p1.init_model(jax.random.key(0), spec)
    xs, labels = (jnp.asarray(a) for a in _problem(size))
    explicit = make_value_and_grad(spec)
    devices = jax.local_devices()[:2]
    placed = {"one device": (explicit, None),
              "batch split": (data_parallel(explicit, spec, make_mesh(devices)), make_mesh(devices)),
              "directions": (direction_parallel(explicit, spec, direction_mesh(devices)), direction_mesh(devices))}
    return [_jax_contender(name, lambda p, x, y, fn=fn: fn(p, x, y, None, None)[:2], params, xs, labels, mesh)
            for name, (fn, mesh) in placed.items()]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", default=["lstm"])
    parser.add_argument("--depths", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--hidden", nargs="+", type=int, default=[64, 128, 256, 512])
    parser.add_argument("--batch", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--time", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if len(jax.local_devices()) < 2:
        raise SystemExit("placement.py: expected two devices or more (a CPU gets one per core), got 1")
    grid = ([("gru", 1, bench.Size(4, 3, 5, 6, classes=3))] if args.quick else
            [(cell, depth, bench.Size(b, 32, h, args.time)) for cell, depth, h, b in
             itertools.product(args.cells, args.depths, args.hidden, args.batch)])
    machine = bench.machine_description()
    print(f"{machine}; allocator env {bench.allocator_env_applied()}; float32, explicit BPTT + Adam, ms per step")
    rows = []
    for cell, depth, size in grid:
        seconds = bench.time_contenders(contenders(cell, depth, size), 1 if args.quick else args.rounds,
                                        0.0 if args.quick else 0.2)
        spec = p1.ModelSpec([p1.LayerSpec(cell, size.hidden, True)] * depth, size.classes, input_size=size.input)
        rule = default_placement(spec, size.batch, 2, "cpu")
        row = {"model": f"{depth}x bi-{cell}", "size": size.label(), **{k: 1e3 * seconds[k] for k in PLACEMENTS},
               "directions / batch split": seconds["batch split"] / seconds["directions"], "rule": rule}
        rows.append(row)
        print(f"  {row['model']:10} {row['size']:20} " + " ".join(f"{row[k]:9.2f}" for k in PLACEMENTS)
              + f"  {row['directions / batch split']:5.2f}x  rule: {rule}", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "placement.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
        lines = [f"Machine: {machine}; allocator env {bench.allocator_env_applied()}. Float32, one training step "
                 "(explicit BPTT + Adam), ms per step, median of interleaved rounds. `x`: batch split's time / "
                 "directions' time (> 1: placing the directions is faster). `rule`: the default device rule's pick.",
                 "", "| model | size | one device | batch split | directions | x | rule |",
                 "|---|---|---:|---:|---:|---:|---|"]
        lines += [f"| {r['model']} | {r['size']} | " + " | ".join(f"{r[k]:.2f}" for k in PLACEMENTS)
                  + f" | {r['directions / batch split']:.2f} | {r['rule']} |" for r in rows]
        (args.out / "placement.md").write_text("\n".join(lines) + "\n")
    return rows


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv, host_devices=True)
    main()
