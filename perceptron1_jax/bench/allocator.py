"""XLA:CPU allocates its temporary buffer on every call; above glibc's mmap threshold that buffer is
mapped fresh each step and page faults dominate. :data:`ALLOCATOR_ENV` keeps freed memory in the
heap; the command line, ``perceptron1 bench`` and the benchmark scripts apply it (in the running
process with glibc's ``mallopt``, or by re-executing themselves)."""

from __future__ import annotations

import os
import sys

from perceptron1_jax.parallel import host_device_env

ALLOCATOR_ENV = {
    "MALLOC_MMAP_MAX_": "0",  # never mmap a block: freed memory goes back to the heap, reused next step
    "MALLOC_TRIM_THRESHOLD_": str(1 << 34),  # never give the heap's top back to the OS
    "MALLOC_TOP_PAD_": str(1 << 28),  # grow the heap in 256 MiB steps
}


def allocator_env_applied() -> bool:
    return all(os.environ.get(k) == v for k, v in ALLOCATOR_ENV.items())


# glibc's mallopt parameters of ALLOCATOR_ENV's variables (M_MMAP_MAX, M_TRIM_THRESHOLD, M_TOP_PAD):
# mallopt takes a C int, so the trim threshold is 2 GiB - 1 rather than 16 GiB (either: never in practice).
_MALLOPT = {"MALLOC_MMAP_MAX_": (-4, 0), "MALLOC_TRIM_THRESHOLD_": (-1, 2**31 - 1), "MALLOC_TOP_PAD_": (-2, 1 << 28)}


def allocator_in_process() -> bool:
    """Apply :data:`ALLOCATOR_ENV`'s settings to this running process with glibc's ``mallopt`` (the
    call the variables stand for); False where that is not possible (no glibc)."""
    import ctypes
    import ctypes.util

    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT.values())


def reexec_with_allocator_env(argv: list[str], host_devices: bool = False, in_process: bool = False) -> None:
    """Replace this process with the same command under :data:`ALLOCATOR_ENV` (once); with
    ``host_devices``, also with one host CPU device per core unless ``XLA_FLAGS`` sets a count
    (:func:`perceptron1_jax.parallel.host_device_env`). With ``in_process``, first try to need no
    re-execution (it imports Python and JAX a second time, about 1.3 s): glibc's ``mallopt`` sets the
    allocator of this process, and ``XLA_FLAGS`` still acts while no JAX backend has started; the
    variables are then set here too, for the processes this one starts."""
    if os.environ.get("PERCEPTRON1_NO_REEXEC"):
        return
    env = {**os.environ, **ALLOCATOR_ENV}
    if host_devices:
        env = host_device_env(env)
    if env == dict(os.environ):
        return
    from jax._src import xla_bridge

    if in_process and not xla_bridge.backends_are_initialized() and allocator_in_process():
        os.environ.update(env)
        return
    os.execve(sys.executable, [sys.executable, *argv], env)
