"""Training-step speed and memory: explicit BPTT vs jax.grad vs Flax nn.RNN vs PyTorch (if installed).

    python benchmarks/benchmark.py                       # the full grid (tens of minutes)
    python benchmarks/benchmark.py --hidden 128 --time 128
    python benchmarks/benchmark.py --quick               # smoke test

Re-executes itself once with the allocator settings of perceptron1_jax.bench.ALLOCATOR_ENV and
one host device per core (unless XLA_FLAGS sets a count).
Same as ``perceptron1 bench``.
"""

import argparse
import sys

from perceptron1_jax import bench

if __name__ == "__main__":
    bench.reexec_with_allocator_env(sys.argv, host_devices=True)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    bench.add_arguments(parser)
    bench.run_from_args(parser.parse_args())
