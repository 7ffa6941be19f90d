"""Single-layer training-step time of this tree against an older copy of the package, in one process.

    git archive REV perceptron1_jax | tar -x -C DIR && mv DIR/perceptron1_jax DIR/perceptron1_jax_old
    grep -rl perceptron1_jax DIR/perceptron1_jax_old | xargs sed -i 's/perceptron1_jax\\b/perceptron1_jax_old/g'
    PYTHONPATH=DIR python benchmarks/compare_versions.py

Times one Adam step of the explicit BPTT (and of jax.grad through each version's plain loss) for
every cell at batch 64, input 32, hidden 128, time 128, interleaved round by round (median), and
prints new/old time ratios (below 1: this tree is faster).
"""

import sys

import jax
import jax.numpy as jnp
import perceptron1_jax_old.bench as old

from perceptron1_jax import bench as new

if __name__ == "__main__":
    new.reexec_with_allocator_env(sys.argv)
    size = new.Size(64, 32, 128, 128)
    xs, labels = (jnp.asarray(a) for a in new._problem(size))
    print(f"allocator env: {new.allocator_env_applied()}; {new.machine_description()}")
    print(f"{'cell':6} {'contender':22} {'old ms':>8} {'new ms':>8} {'new/old':>8}")
    for cell in ("elman", "lstm", "gru"):
        params = new.init_params(jax.random.key(0), cell, size.input, size.hidden, size.classes)
        contenders = []
        for tag, module in (("old", old), ("new", new)):
            fns = module.gradient_fns(cell, size.time)
            for name in ("explicit", "autodiff"):
                contenders.append(new._jax_contender(f"{tag} {name}", fns[name], params, xs, labels))
        times = new.time_contenders(contenders, rounds=7, min_seconds=0.3)
        for name in ("explicit", "autodiff"):
            o, n = times[f"old {name}"], times[f"new {name}"]
            print(f"{cell:6} {name:22} {1e3 * o:8.2f} {1e3 * n:8.2f} {n / o:8.3f}")
