"""Step time and compiled temporary memory against sequence length: explicit BPTT, its memory-lean
mode (k = sqrt T) and jax.grad through lax.scan. Writes benchmarks/results/scaling.{png,json,md}.

    python benchmarks/scaling.py                  # T = 32 ... 8192, LSTM, batch 64, hidden 128
    python benchmarks/scaling.py --quick          # tiny smoke test
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from perceptron1_jax import bench
from perceptron1_jax.model import init_params


def measure(fn, args, repeats):
    compiled = jax.jit(fn).lower(*args).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), temp


def main(args):
    cell, batch, inp, hidden = args.cell, args.batch, args.input, args.hidden
    times_list = [8, 16] if args.quick else args.time
    params = init_params(jax.random.key(0), cell, inp, hidden, 10)
    rows = []
    for t in times_list:
        xs = jax.random.normal(jax.random.key(1), (batch, t, inp))
        labels = jnp.zeros((batch,), jnp.int32)
        grads = bench.gradient_fns(cell, t)
        fns = {"explicit BPTT": grads["explicit"], "lean (k = sqrt T)": grads["lean"],
               "jax.grad(lax.scan)": grads["autodiff"]}
        for name, fn in fns.items():
            seconds, temp = measure(fn, (params, xs, labels), 1 if args.quick else args.repeats)
            rows.append({"time": t, "method": name, "ms": 1e3 * seconds, "temp_mib": temp / 2**20})
            print(f"T={t:5d} {name:22} {1e3 * seconds:10.1f} ms {temp / 2**20:10.1f} MiB", flush=True)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling.json").write_text(json.dumps({"machine": bench.machine_description(), "cell": cell,
                                                  "batch": batch, "hidden": hidden, "rows": rows}, indent=2))
    lines = [f"{cell}, batch {batch}, input {inp}, hidden {hidden}, float32 ({bench.machine_description()})", "",
             "| T | method | ms/step (grad only) | temp MiB |", "|---:|---|---:|---:|"]
    lines += [f"| {r['time']} | {r['method']} | {r['ms']:.1f} | {r['temp_mib']:.1f} |" for r in rows]
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        ax_t.loglog([r["time"] for r in mine], [r["ms"] for r in mine], "o-", label=name)
        ax_m.loglog([r["time"] for r in mine], [r["temp_mib"] for r in mine], "o-", label=name)
    ax_t.set(xlabel="sequence length T (log)", ylabel="loss + gradient time (ms, log)", title="time vs T")
    ax_m.set(xlabel="sequence length T (log)", ylabel="compiled temporary memory (MiB, log)",
             title="memory vs T (lean: O(sqrt T))")
    for ax in (ax_t, ax_m):
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scaling.png", dpi=100)
    print(f"wrote {out / 'scaling.png'}")


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=["elman", "lstm", "gru"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--time", type=int, nargs="+", default=[32, 128, 512, 2048, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    main(parser.parse_args())
