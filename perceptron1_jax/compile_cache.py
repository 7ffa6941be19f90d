"""Where the ``perceptron1`` command keeps XLA's compiled programs between runs.

Compiling is most of a short run's start (a training step, the gradient check's two programs,
the evaluation): JAX's persistent compilation cache keeps each compiled program on disk, so the
second run of the same model starts from it. The command turns it on by default; the library
leaves it alone (a Python user's process is theirs to configure).

The folder, first found: ``--compile-cache DIR`` (before the subcommand), ``$PERCEPTRON1_COMPILE_CACHE``,
JAX's own ``$JAX_COMPILATION_CACHE_DIR``, else ``$XDG_CACHE_HOME/perceptron1_jax/xla`` (by default
``~/.cache/perceptron1_jax/xla``). ``off`` (as the option or the variable) turns it off. The cache
changes no result: a program read back is the program compiled (the key covers the program, the
devices, the flags and the versions). A folder that cannot be made is warned about once and the
run goes on without it.
"""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "PERCEPTRON1_COMPILE_CACHE"
OFF = ("off", "none", "0", "")


def cache_folder(option: str | None = None, env=None) -> Path | None:
    """The folder the command caches compiled programs in (None: off); see the module doc."""
    env = os.environ if env is None else env
    for value in (option, env.get(VARIABLE)):
        if value is not None:
            return None if value.strip().lower() in OFF else Path(value).expanduser()
    if env.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(env["JAX_COMPILATION_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "perceptron1_jax" / "xla"


def use_cache(folder: Path | None, warn=None) -> Path | None:
    """Turn JAX's persistent compilation cache on in ``folder`` for every program, however quick to
    compile (the command's small programs each take 0.1 to 1 s); None leaves it off. Returns the
    folder in use."""
    if folder is None:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if warn is not None:
            warn(f"compile cache: cannot use {folder} ({err.strerror or err}); compiling without it")
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder
