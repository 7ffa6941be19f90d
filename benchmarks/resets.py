"""What do resets cost a training step? (issue 28, item 1)

Times one jitted Adam step of the explicit BPTT (``make_value_and_grad(spec, "bptt")``, the
training loop's step) without resets and with ``resets: (batch, time)`` (about one step in 20 starts a
new segment), for the 2-layer LSTM and GRU models of ``perceptron1 bench --model`` (B64 I32 H128
T128, float32, one device), a bidirectional LSTM layer, and the autodiff step for comparison.
Interleaved rounds in one process, medians; the ratio "with / without" is the cost (target <= 1.05).

    python benchmarks/resets.py            # prints the table
    python benchmarks/resets.py --quick    # a smoke test (tiny sizes)

Re-executes itself once under perceptron1_jax.bench.ALLOCATOR_ENV (or sets it in process).
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np
import optax

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.bptt import make_value_and_grad


def contender(name, spec, grad, params, xs, labels, resets):
    value_and_grad = make_value_and_grad(spec, grad)
    optimizer = optax.adam(1e-3)

    def step(params, opt_state, xs, labels, resets):
        loss, grads, _ = value_and_grad(params, xs, labels, None, None, resets)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    state = {"params": params, "opt_state": optimizer.init(params)}
    compiled = jax.jit(step).lower(state["params"], state["opt_state"], xs, labels, resets).compile()

    def run():
        state["params"], state["opt_state"], loss = compiled(state["params"], state["opt_state"], xs, labels, resets)
        loss.block_until_ready()

    return bench.Contender(name, run)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    args = parser.parse_args(argv)
    batch, inputs, hidden, time = (2, 3, 4, 5) if args.quick else (64, 32, 128, 128)
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((batch, time, inputs)).astype(np.float32)
    labels = rng.integers(0, 10, (batch, time)).astype(np.int32)
    resets = rng.random((batch, time)) < 0.05
    models = {
        "2-layer LSTM": p1.ModelSpec((p1.LayerSpec("lstm", hidden),) * 2, 10, input_size=inputs, many_to_many=True),
        "2-layer GRU": p1.ModelSpec((p1.LayerSpec("gru", hidden),) * 2, 10, input_size=inputs, many_to_many=True),
        "bidirectional LSTM": p1.ModelSpec((p1.LayerSpec("lstm", hidden, bidirectional=True),), 10,
                                           input_size=inputs, many_to_many=True),
    }
    rows, contenders = [], []
    for model, spec in models.items():
        params = p1.init_model(jax.random.key(0), spec)
        for grad in ("bptt", "autodiff"):
            pair = [f"{model}, {grad}, no resets", f"{model}, {grad}, resets"]
            contenders += [contender(pair[0], spec, grad, params, xs, labels, None),
                           contender(pair[1], spec, grad, params, xs, labels, resets)]
            rows.append(pair)
    seconds = bench.time_contenders(contenders, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.2)
    print(f"{bench.machine_description()}; B{batch} I{inputs} H{hidden} T{time}, many-to-many, Adam step; "
          f"{int(resets.sum())} resets ({resets.mean():.1%} of the steps); allocator env "
          f"{bench.allocator_env_applied()}")
    print(f"  {'model, gradient':32} {'no resets':>12} {'resets':>12} {'cost':>7}")
    costs = {}
    for without, with_ in rows:
        label = without.rsplit(",", 1)[0]
        costs[label] = seconds[with_] / seconds[without]
        print(f"  {label:32} {1e3 * seconds[without]:9.2f} ms {1e3 * seconds[with_]:9.2f} ms {costs[label]:6.3f}x")
    return {"ms": {n: 1e3 * s for n, s in seconds.items()}, "cost": costs}


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv, in_process=True)
    main()
