"""How long does ``perceptron1 train`` take to start? (issue 31, item 1)

Times, for each run, the seconds from launching the command to its first training step (the
``step 1:`` line; the process is then stopped), with the compilation cache off, cold (an empty
cache folder) and warm (the same folder again), rounds interleaved, median. Where the seconds go:
importing the package, putting the process under the allocator settings and one host device per core
and the start-up gradient check (``--no-gradcheck``):

    python benchmarks/startup.py                  # the default run, and --task copy --seq-len 20 --hidden 32
    python benchmarks/startup.py --rounds 5
    python benchmarks/startup.py --quick          # a smoke test (one round: the small run, cold and warm)

Each launch is a fresh process with a fresh run folder, as a user's is.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "default run": [],
    "copy, seq-len 20, hidden 32": ["--task", "copy", "--seq-len", "20", "--hidden", "32"],
}
MARK = "step 1:"


def _env(cache) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "PERCEPTRON1_NO_REEXEC")}
    env["PERCEPTRON1_COMPILE_CACHE"] = str(cache)
    return env


def launch(args: list[str], cache, folder: Path, env_extra: dict | None = None) -> float:
    """Seconds from launch to the first training step of ``perceptron1 train ARGS``; the process is
    stopped (SIGTERM) once it has printed it."""
    out = Path(tempfile.mkdtemp(dir=folder))
    command = [sys.executable, "-m", "perceptron1_jax", "train", *args, "--no-progress", "--log-every", "1",
               "--out", str(out / "run")]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**_env(cache), **(env_extra or {})})
    for line in proc.stdout:
        if line.startswith(MARK):
            seconds = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=120)
            return seconds
    proc.wait(timeout=120)
    raise RuntimeError(f"{command}: no {MARK!r} line (exit {proc.returncode}): {proc.stderr.read()[-500:]}")


def import_seconds() -> float:
    """Seconds of a fresh interpreter importing the command's module (JAX included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import perceptron1_jax.cli"], check=True)
    return time.perf_counter() - start


def measure(runs: dict, rounds: int, folder: Path, quick: bool = False) -> dict:
    """``{run: {case: [seconds per round]}}``, the cases interleaved within each round (``quick``:
    the cold and warm cache only)."""
    times = {name: {} for name in runs}
    from perceptron1_jax.bench import ALLOCATOR_ENV
    from perceptron1_jax.parallel import host_device_env

    ready = host_device_env({**os.environ, **ALLOCATOR_ENV})  # what the re-execution would set
    no_reexec = {"PERCEPTRON1_NO_REEXEC": "1", "XLA_FLAGS": ready.get("XLA_FLAGS", ""),
                 **ALLOCATOR_ENV}
    for r in range(rounds):
        for name, args in runs.items():
            cache = folder / f"cache-{r}-{list(runs).index(name)}"
            cases = [
                ("cache off", lambda a=args: launch(a, "off", folder)),
                ("cold cache", lambda a=args, c=cache: launch(a, c, folder)),
                ("warm cache", lambda a=args, c=cache: launch(a, c, folder)),
                ("warm, settings already in the environment", lambda a=args, c=cache: launch(a, c, folder, no_reexec)),
                ("warm, --no-gradcheck", lambda a=args, c=cache: launch([*a, "--no-gradcheck"], c, folder)),
            ]
            for case, run in cases[1:3] if quick else cases:
                times[name].setdefault(case, []).append(run())
    times["(importing perceptron1_jax.cli)"] = {"import": [import_seconds() for _ in range(rounds)]}
    return times


def table(times: dict) -> str:
    lines = ["| run | case | seconds to the first step (median) | rounds |", "|---|---|---:|---|"]
    for name, cases in times.items():
        for case, values in cases.items():
            lines.append(f"| {name} | {case} | {statistics.median(values):.2f} | "
                         f"{', '.join(f'{v:.2f}' for v in values)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round of the small run, cold and warm (a smoke test)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds: expected a positive int, got {args.rounds}")
    runs = {k: v for k, v in RUNS.items() if k.startswith("copy")} if args.quick else RUNS
    with tempfile.TemporaryDirectory(prefix="perceptron1-startup-") as folder:
        times = measure(runs, 1 if args.quick else args.rounds, Path(folder), args.quick)
    print(f"perceptron1 train, launch to the first training step ({os.cpu_count()} cores)")
    print(table(times))
    return times


if __name__ == "__main__":
    main()
