"""The speed ideas of issue 21, item 4, each timed against what the library does (kept only if it won).

Each probe is a pair (or a few) of compiled programs timed in interleaved rounds in one process
(median), float32, one device:

* ``elman``: the Elman training step (explicit BPTT + Adam, B64 I32 H128 T128) with weight-gradient
  blocks of 8 (the default), 16 and 32 steps, each with the input projection in the loop (the CPU
  default) and hoisted, against the natural ``jax.grad`` step;
* ``flip``: one reverse LSTM direction forwards and backwards (explicit) as the layer runs it
  (flipping inside) against the forward direction on arrays flipped and materialised beforehand,
  at input 32 and 256;
* ``model-hoist``: the 2-layer bidirectional LSTM's explicit step with the input projection in the
  loop and hoisted;
* ``concat``: a plain LSTM forward scan with two products per step (``x W_x + h W_h``) against one
  product on ``[x, h]``, at batch 64 and 32 (each device's share in ``train``'s step).

    python benchmarks/speed_probes.py                    # every probe (about 5 minutes here)
    python benchmarks/speed_probes.py --probes flip      # one of them
    python benchmarks/speed_probes.py --quick            # a smoke test (tiny sizes)

Re-executes itself once under perceptron1_jax.bench.ALLOCATOR_ENV.
"""

from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
from jax import lax

from perceptron1_jax import bench
from perceptron1_jax.bptt import explicit_model
from perceptron1_jax.cells import CELLS
from perceptron1_jax.layers import direction_backward, direction_forward
from perceptron1_jax.model import init_model
from perceptron1_jax.scan import set_hoist_input_projection


def hoisted(hoist: bool, make):
    """``make()`` traced and compiled with the input projection hoisted or not (then the default again)."""
    previous = set_hoist_input_projection(hoist)
    try:
        return make()
    finally:
        set_hoist_input_projection(previous)


def elman_probe(size: bench.Size) -> list[bench.Contender]:
    xs, labels = (jnp.asarray(a) for a in bench._problem(size))
    params = bench.init_params(jax.random.key(0), "elman", size.input, size.hidden, size.classes)
    out = [bench._jax_contender("natural jax.grad", bench.gradient_fns("elman", size.time)["autodiff"], params, xs,
                                labels)]
    for hoist in (False, True):
        for window in (8, 16, 32):
            fn = bench.gradient_fns("elman", size.time, window)["explicit"]
            name = f"explicit, window {window}, hoisted {hoist}"
            out.append(hoisted(hoist, lambda fn=fn, name=name: bench._jax_contender(name, fn, params, xs, labels)))
    return out


def flip_probe(size: bench.Size) -> list[bench.Contender]:
    cell, key, out = CELLS["lstm"], jax.random.key(0), []
    for inputs in (size.input, 8 * size.input):
        params = cell.init(key, inputs, size.hidden)
        xs = jax.random.normal(key, (size.time, size.batch, inputs))
        dhs = jax.random.normal(jax.random.fold_in(key, 1), (size.time, size.batch, size.hidden))
        inside, materialised = direction_passes(cell, True), direction_passes(cell, False)
        flipped = jax.block_until_ready((params, xs[::-1] + 0, dhs[::-1] + 0))
        out += [bench.Contender(f"I{inputs}, reverse direction flipping inside",
                                lambda f=inside, a=(params, xs, dhs): jax.block_until_ready(f(*a))),
                bench.Contender(f"I{inputs}, forward direction on materialised flipped arrays",
                                lambda f=materialised, a=flipped: jax.block_until_ready(f(*a)))]
    return out


def direction_passes(cell, reverse: bool):
    """One direction's explicit forward and backward, jitted: ``(params, xs, dhs) -> (hs, grads, dxs)``."""

    @jax.jit
    def both_passes(params, xs, dhs):
        carry0 = tuple(jnp.zeros(dhs.shape[1:], dhs.dtype) for _ in range(cell.carry_size))
        hs, final, tape = direction_forward(cell, params, xs, carry0, None, None, reverse=reverse, save=True)
        zeros = tuple(jnp.zeros_like(c) for c in final)
        return hs, direction_backward(cell, params, tape, dhs, zeros, None, None, reverse=reverse)[:2]

    return both_passes


def model_hoist_probe(size: bench.Size) -> list[bench.Contender]:
    xs, labels = (jnp.asarray(a) for a in bench._problem(size))
    spec = bench.bench_spec(size)
    params = init_model(jax.random.key(0), spec)
    return [hoisted(hoist, lambda hoist=hoist: bench._jax_contender(
        f"2x bi-lstm explicit, hoisted {hoist}", lambda p, x, y: explicit_model(p, x, y, spec)[:2], params, xs,
        labels)) for hoist in (False, True)]


def concat_probe(size: bench.Size) -> list[bench.Contender]:
    key, hidden, out = jax.random.key(0), size.hidden, []
    w_x = jax.random.normal(key, (size.input, 4 * hidden)) * 0.1
    w_h = jax.random.normal(jax.random.fold_in(key, 1), (hidden, 4 * hidden)) * 0.1
    bias = jnp.zeros(4 * hidden)

    def gates(z, c):
        i, f, g, o = jnp.split(z, 4, -1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        return jax.nn.sigmoid(o) * jnp.tanh(c), c

    def scan(preactivation, xs):
        zero = jnp.zeros((xs.shape[1], hidden))

        def body(carry, x):
            h, c = gates(preactivation(x, carry[0]), carry[1])
            return (h, c), h

        return lax.scan(body, (zero, zero), xs)[1]

    w_cat = jnp.concatenate([w_x, w_h])
    forms = {"two products": jax.jit(lambda xs: scan(lambda x, h: x @ w_x + bias + h @ w_h, xs)),
             "one product on [x, h]": jax.jit(lambda xs: scan(lambda x, h: jnp.concatenate([x, h], -1) @ w_cat + bias,
                                                              xs))}
    for batch in (size.batch, max(1, size.batch // 2)):
        xs = jax.random.normal(key, (size.time, batch, size.input))
        out += [bench.Contender(f"B{batch}, {name}", lambda f=f, xs=xs: jax.block_until_ready(f(xs)))
                for name, f in forms.items()]
    return out


PROBES = {"elman": elman_probe, "flip": flip_probe, "model-hoist": model_hoist_probe, "concat": concat_probe}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", nargs="+", choices=sorted(PROBES), default=list(PROBES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (a smoke test)")
    args = parser.parse_args(argv)
    size = bench.Size(2, 3, 4, 5) if args.quick else bench.Size(64, 32, 128, 128)
    print(f"{bench.machine_description()}; B{size.batch} I{size.input} H{size.hidden} T{size.time}, float32, "
          f"one device; allocator env {bench.allocator_env_applied()}")
    result = {}
    for probe in args.probes:
        contenders = PROBES[probe](size)
        seconds = bench.time_contenders(contenders, 1 if args.quick else args.rounds, 0.0 if args.quick else 0.3)
        first = seconds[contenders[0].name]
        print(f"{probe}:")
        for c in contenders:
            print(f"  {c.name:60} {1e3 * seconds[c.name]:9.2f} ms  {first / seconds[c.name]:5.2f}x of the first")
        result[probe] = {name: 1e3 * s for name, s in seconds.items()}
    return result


if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv)
    main()
