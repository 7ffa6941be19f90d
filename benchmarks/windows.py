"""The explicit backward at a small hidden size: blocks of 8 to 64 steps against ``jax.grad``.

Times the gradient of one GRU layer (hidden 32, time 64, input 3, a loss on every state) by the
explicit BPTT with weight-gradient blocks of 8 (the library's :data:`~perceptron1_jax.scan.WINDOW`),
16, 32 and 64 steps, against ``jax.grad`` of the plain scan, at batch 8 (the minibatch of
``experiments/recurrent_ppo.py``, vmapped over 5 seeds as there), 16 and 64.
Interleaved rounds in one process, medians; ratios are ``jax.grad`` time / explicit time (above 1:
the explicit backward is faster).

    python benchmarks/windows.py            # prints the table
    python benchmarks/windows.py --quick    # a smoke test
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.layers import direction_backward, direction_forward


def gradient(window, batch, time, hidden, seeds):
    """A jitted, seed-vmapped gradient of a loss on every state of one GRU layer, explicit (``window``
    steps per block) or by ``jax.grad`` (``window="autodiff"``)."""
    cell = p1.CELLS["gru"]

    def loss_autodiff(params, xs, h0):
        hs, _ = p1.unroll({"cell": params}, xs, "gru", h0=h0)
        return jnp.mean(hs ** 2)

    def explicit(params, xs, h0):  # the custom_vjp's two halves, with this block size
        xs_tm = jnp.swapaxes(xs, 0, 1)
        hs, final, tape = direction_forward(cell, params, xs_tm, (h0,), None, None, reverse=False, save=True)
        dhs = 2 * hs / hs.size
        back = direction_backward(cell, params, tape, dhs, (jnp.zeros_like(h0),), None, None, reverse=False,
                                  window=window)
        return back.grads

    fn = jax.grad(loss_autodiff) if window == "autodiff" else explicit
    return jax.jit(jax.vmap(fn))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    hidden, time, inputs, seeds = (4, 8, 3, 2) if args.quick else (32, 64, 3, 5)
    batches = (2,) if args.quick else (8, 16, 64)
    contenders, rows = [], []
    for batch in batches:
        key = jax.random.key(batch)
        params = jax.vmap(lambda k: p1.init_params(k, "gru", inputs, hidden, 1)["cell"])(jax.random.split(key, seeds))
        xs = jax.random.normal(key, (seeds, batch, time, inputs))
        h0 = jnp.zeros((seeds, batch, hidden))
        names = []
        for window in ("autodiff", 8, 16, 32, 64):
            name = f"batch {batch}, " + ("jax.grad" if window == "autodiff" else f"explicit, blocks of {window}"
                                         + (" (default)" if window == 8 else ""))
            f = gradient(window, batch, time, hidden, seeds)
            contenders.append(bench.Contender(name, lambda f=f, a=(params, xs, h0): jax.block_until_ready(f(*a))))
            names.append(name)
        rows.append(names)
    seconds = bench.time_contenders(contenders, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.2)
    print(f"{bench.machine_description()}; GRU H{hidden} T{time} I{inputs}, {seeds} seeds vmapped; allocator env "
          f"{bench.allocator_env_applied()}")
    for names in rows:
        autodiff = seconds[names[0]]
        for name in names:
            print(f"  {name:44} {1e3 * seconds[name]:8.3f} ms   jax.grad / this {autodiff / seconds[name]:5.2f}x")
    return {name: 1e3 * s for name, s in seconds.items()}


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv, in_process=True)
    main()
