"""Shared fixtures: float64 on demand (restored afterwards), strict dtype promotion; one compilation
cache per test session."""

import contextlib
import os
import shutil
import tempfile

import jax
import pytest

# XLA's compiled programs cached on disk for this session only (a fresh folder each run) for the
# subprocesses the tests start, which inherit the variable: they are command lines that compile the
# same programs (start-up, the default task) again and again. The test processes themselves do not
# use it: they compile thousands of programs that no other test shares, and writing each to disk
# cost a quarter of their compile time (tests/test_model_bptt.py: 106 s with it, 84 s without).
# The cache changes no result, only compile time.
CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = CACHE_VARIABLE not in os.environ
if _OWN_CACHE:
    os.environ[CACHE_VARIABLE] = tempfile.mkdtemp(prefix="perceptron1-jax-cache-")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
jax.config.update("jax_compilation_cache_dir", None)

# The suite compiles thousands of small programs and runs most of them once, on tiny arrays: LLVM's
# optimisation of XLA:CPU's kernels was a fifth of its time, and XLA:CPU's MLIR fusion emitters
# half of what was left (tests/test_model_bptt.py's random shapes: 81 ms of backend compile per
# program with them, 41 ms with the older elemental emitters); neither buys anything at these
# sizes. The programs themselves (HLO, fusions, the matrix-product library calls) are the ones
# users run; only the machine code of the fused kernels is made differently. Set before the
# backend starts, and inherited by the subprocesses; a flag of your own (XLA_FLAGS) wins.
# Benchmarks and the command line keep XLA's defaults.
CODEGEN_FLAGS = {"--xla_backend_optimization_level": "0", "--xla_cpu_use_fusion_emitters": "false"}
for _flag, _value in CODEGEN_FLAGS.items():
    if _flag not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_flag}={_value}".strip()
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if _OWN_CACHE and not hasattr(config, "workerinput"):  # the process that made it (not an xdist worker)
        shutil.rmtree(os.environ[CACHE_VARIABLE], ignore_errors=True)


@contextlib.contextmanager
def enable_x64():
    """Turn on float64 for the duration of the block and restore the previous setting."""
    previous = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


@pytest.fixture
def x64():
    """Float64 for one test; the global setting is restored afterwards."""
    with enable_x64():
        yield


# The files that take longest (worker seconds, --durations of a whole run), started first: the
# xdist workers take whole files in collection order, so a long file left to the end keeps one
# worker busy while the other idles. The rest follow in their own order.
LONGEST_FIRST = ("test_cli_trust.py", "test_bptt.py", "test_experiments.py", "test_model_bptt.py",
                 "test_resets.py", "test_population.py", "test_parallel.py", "test_options_act.py",
                 "test_compile_cache.py", "test_lean.py", "test_online.py", "test_train_resets.py",
                 "test_associative.py", "test_device_check.py", "test_train.py", "test_bench.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "standard_promotion: run without strict dtype promotion (code that calls optax)"
    )


@pytest.fixture(autouse=True)
def strict_promotion(request):
    """Fail on implicit dtype promotion (as equinox's tests do): a float32 leak into float64 math
    or the reverse is a bug. optax itself is not strict-clean, so tests that drive it opt out."""
    mode = "standard" if request.node.get_closest_marker("standard_promotion") else "strict"
    with jax.numpy_dtype_promotion(mode):
        yield


@pytest.fixture(autouse=True)
def no_disk_cache_in_process():
    """Keep the test process off the disk cache (see above) after a test that ran the command line
    in process (its ``main`` turns the cache on, as it does for a user)."""
    yield
    if jax.config.jax_compilation_cache_dir is not None:
        jax.config.update("jax_compilation_cache_dir", None)


@pytest.fixture(autouse=True, scope="module")
def release_compiled_programs():
    """Drop JAX's compiled programs after each test module. A worker compiles thousands of programs
    over the suite; keeping them all loaded, a late XLA:CPU compile crashed the worker (segfault in
    ``backend_compile_and_load``, seen twice in long runs, never in a fresh process)."""
    yield
    jax.clear_caches()
