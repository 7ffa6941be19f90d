"""Training-step benchmark: our explicit BPTT against ``jax.grad`` of the plain loss, Flax
``nn.RNN`` and (when installed) PyTorch's fused CPU RNNs.

One training step = forward + softmax cross-entropy on the last step + backward + Adam, on the same
data, sizes and optimizer for every contender. Contenders of one size are timed in interleaved
rounds in one process and the median per-step time is reported, with ratios against our explicit
BPTT. Also reported: the compiled temporary memory of each jitted step
(``memory_analysis().temp_size_in_bytes``), achieved GFLOP/s (analytic count of the matrix
products) against a measured matmul peak, and the process's peak resident memory.

XLA:CPU allocates its temporary buffer on every call; above glibc's mmap threshold that buffer is
mapped fresh each step and page faults dominate. :data:`ALLOCATOR_ENV` keeps freed memory in the
heap; ``perceptron1 bench`` and ``benchmarks/benchmark.py`` apply it by re-executing themselves.
"""

from perceptron1_jax.bench.allocator import (
    ALLOCATOR_ENV,
    allocator_env_applied,
    allocator_in_process,
    reexec_with_allocator_env,
)
from perceptron1_jax.bench.contenders import (
    GATES,
    MODEL_CELL,
    Contender,
    Size,
    _flax_contenders,
    _jax_contender,
    _problem,
    bench_spec,
    gradient_fns,
    jax_contenders,
    model_contenders,
    sharded_contenders,
    sharded_name,
    step_flops,
    torch_contenders,
)
from perceptron1_jax.bench.timing import (
    add_arguments,
    machine_description,
    markdown,
    matmul_peak_gflops,
    run_benchmark,
    run_from_args,
    time_contenders,
    write_results,
)
from perceptron1_jax.model import init_params  # benchmarks/ reach it as bench.init_params

__all__ = [
    "ALLOCATOR_ENV", "GATES", "MODEL_CELL", "Contender", "Size", "_flax_contenders", "_jax_contender", "_problem",
    "add_arguments", "allocator_env_applied", "allocator_in_process", "bench_spec", "gradient_fns", "init_params",
    "jax_contenders", "machine_description", "markdown", "matmul_peak_gflops", "model_contenders",
    "reexec_with_allocator_env", "run_benchmark", "run_from_args", "sharded_contenders", "sharded_name",
    "step_flops", "time_contenders", "torch_contenders", "write_results",
]
