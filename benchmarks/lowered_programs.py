"""Fingerprints of the default CPU training programs, to check that a change leaves them as they were.

Prints one line per program: the md5 of ``jax.jit(...).lower(...).as_text()`` of the training step's
value-and-gradient (explicit BPTT and ``jax.grad``, with and without lengths) and of the forward pass,
for every built-in cell, one- and two-direction stacks, many-to-one and many-to-many. Run it on two
commits and compare (issue 28: without ``resets`` the programs did not change):

    git worktree add /tmp/base <commit>
    PYTHONPATH=/tmp/base python benchmarks/lowered_programs.py > /tmp/before.txt
    python benchmarks/lowered_programs.py > /tmp/after.txt
    diff /tmp/before.txt /tmp/after.txt && echo unchanged
"""

import hashlib

import jax
import jax.numpy as jnp

import perceptron1_jax as p1
from perceptron1_jax.bptt import make_value_and_grad
from perceptron1_jax.model import forward


def fingerprint(lowered) -> str:
    return hashlib.md5(lowered.as_text().encode()).hexdigest()


def main():
    for cell in ("lstm", "gru", "elman", "mingru"):
        for bidirectional in (False, True):
            for many_to_many in (False, True):
                spec = p1.ModelSpec((p1.LayerSpec(cell, 8, bidirectional=bidirectional), p1.LayerSpec(cell, 8)),
                                    num_outputs=3, input_size=4, many_to_many=many_to_many)
                params = p1.init_model(jax.random.key(0), spec)
                xs = jnp.zeros((2, 5, 4))
                targets = jnp.zeros((2, 5) if many_to_many else (2,), jnp.int32)
                name = f"{cell} {'bi' if bidirectional else 'uni'} {'m2m' if many_to_many else 'm2o'}"
                for grad in ("bptt", "autodiff"):
                    for lengths in (None, jnp.array([5, 3])):
                        lowered = jax.jit(make_value_and_grad(spec, grad)).lower(params, xs, targets, None, lengths)
                        print(f"{name} {grad} lengths={lengths is not None} {fingerprint(lowered)}")
                lowered = jax.jit(lambda p, x, spec=spec: forward(p, x, spec).outputs).lower(params, xs)
                print(f"{name} forward {fingerprint(lowered)}")


if __name__ == "__main__":
    main()
