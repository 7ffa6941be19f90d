"""Would one scan for both directions of a bidirectional layer pay on this CPU? (issue 21, item 1)

Times one bidirectional LSTM layer (B64 I32 H128 T128, float32, one device), interleaved rounds in
one process (median):

* explicit forward + backward as the library runs it: one scan per direction
  (``recurrent_forward`` / ``recurrent_backward``);
* the same explicit passes with the two directions stacked and ``vmap``-ed into one forward and one
  reverse scan (one batched product per step: "stacked weights"; the library's
  ``LoopForms(fused_directions=True)``, :func:`perceptron1_jax.layers.fused_forward`);
* a plain LSTM forward, and its ``jax.grad``, with one scan per direction against one scan whose
  body runs both directions' steps as two separate products.

    python benchmarks/bidirectional_fusion.py            # prints the table
    python benchmarks/bidirectional_fusion.py --quick    # a smoke test (tiny sizes)

Ratios above 1 mean the fused form is faster. Re-executes itself once under
perceptron1_jax.bench.ALLOCATOR_ENV.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
from jax import lax

import perceptron1_jax as p1
from perceptron1_jax import bench
from perceptron1_jax.cells import CELLS
from perceptron1_jax.layers import recurrent_backward, recurrent_forward


def explicit_contenders(batch, inputs, hidden, time):
    """The library's explicit forward + backward of one bidirectional LSTM layer, traced with one scan
    per direction (``LoopForms(fused_directions=False)``) and with both in one (``True``)."""
    cell, layer = CELLS["lstm"], p1.LayerSpec("lstm", hidden, bidirectional=True)
    key = jax.random.key(0)
    params = {d: cell.init(jax.random.fold_in(key, i), inputs, hidden) for i, d in enumerate(("fwd", "bwd"))}
    xs = jax.random.normal(key, (time, batch, inputs))
    dout = jax.random.normal(jax.random.fold_in(key, 9), (time, batch, 2 * hidden))

    def passes(params, xs, dout, forms):
        out, finals, tapes = recurrent_forward(layer, params, xs, None, None, save=True, forms=forms)
        return recurrent_backward(layer, params, tapes, finals, dout, None, None, None, forms=forms)[:2]

    out = []
    for name, enabled in (("explicit, one scan per direction", False),
                          ("explicit, both directions vmap-ed into one scan", True)):
        forms = p1.LoopForms(fused_directions=enabled)
        compiled = jax.jit(passes, static_argnums=3).lower(params, xs, dout, forms).compile()
        out.append(bench.Contender(name, lambda f=compiled: jax.block_until_ready(f(params, xs, dout))))
    return out


def plain_contenders(batch, inputs, hidden, time):
    keys = jax.random.split(jax.random.key(1), 5)
    w_x = [jax.random.normal(keys[i], (inputs, 4 * hidden)) * 0.1 for i in range(2)]
    w_h = [jax.random.normal(keys[2 + i], (hidden, 4 * hidden)) * 0.1 for i in range(2)]
    xs = jax.random.normal(keys[4], (time, batch, inputs))
    zero = (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))

    def lstm(w_x, w_h, carry, x):
        h, c = carry
        i, f, g, o = jnp.split(x @ w_x + h @ w_h, 4, -1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def two_scans(w_x, w_h, xs):
        outs = []
        for d, x in enumerate((xs, xs[::-1])):
            _, hs = lax.scan(lambda carry, x, d=d: (lambda n: (n, n[0]))(lstm(w_x[d], w_h[d], carry, x)), zero, x)
            outs.append(hs)
        return outs

    def one_scan(w_x, w_h, xs):
        def body(carry, x):
            a = lstm(w_x[0], w_h[0], carry[0], x[0])
            b = lstm(w_x[1], w_h[1], carry[1], x[1])
            return (a, b), (a[0], b[0])

        return list(lax.scan(body, (zero, zero), (xs, xs[::-1]))[1])

    def grad_of(forward):
        return jax.jit(jax.grad(lambda w_x, w_h, xs: sum(jnp.sum(o**2) for o in forward(w_x, w_h, xs)), (0, 1)))

    entries = (("forward, one scan per direction", jax.jit(two_scans)),
               ("forward, one scan for both directions", jax.jit(one_scan)),
               ("jax.grad, one scan per direction", grad_of(two_scans)),
               ("jax.grad, one scan for both directions", grad_of(one_scan)))
    return [bench.Contender(name, lambda f=f: jax.block_until_ready(f(w_x, w_h, xs))) for name, f in entries]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    args = parser.parse_args(argv)
    sizes = (2, 3, 4, 5) if args.quick else (64, 32, 128, 128)
    contenders = explicit_contenders(*sizes) + plain_contenders(*sizes)
    seconds = bench.time_contenders(contenders, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.2)
    names = [c.name for c in contenders]
    ratios = {"explicit, both directions vmap-ed into one scan": seconds[names[0]] / seconds[names[1]],
              "forward, one scan for both directions": seconds[names[2]] / seconds[names[3]],
              "jax.grad, one scan for both directions": seconds[names[4]] / seconds[names[5]]}
    print(f"{bench.machine_description()}; B{sizes[0]} I{sizes[1]} H{sizes[2]} T{sizes[3]}, one bidirectional LSTM "
          f"layer; allocator env {bench.allocator_env_applied()}")
    for name in names:
        print(f"  {name:50} {1e3 * seconds[name]:9.2f} ms")
    for name, ratio in ratios.items():
        print(f"  speed-up of the fused form, {name:48} {ratio:6.2f}x")
    return {"ms": {n: 1e3 * s for n, s in seconds.items()}, "speedups": ratios}


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    main()
