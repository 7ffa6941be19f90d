"""Timing the contenders in interleaved rounds, the machine's matmul peak, the result as a markdown
table and JSON, and ``perceptron1 bench``'s options."""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from perceptron1_jax.bench.allocator import allocator_env_applied
from perceptron1_jax.bench.contenders import (
    GATES,
    MODEL_CELL,
    Contender,
    Size,
    _problem,
    bench_spec,
    jax_contenders,
    model_contenders,
    sharded_name,
    step_flops,
    torch_contenders,
)
from perceptron1_jax.parallel import make_mesh
from perceptron1_jax.scan import WINDOW
from perceptron1_jax.training.step import default_placement


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def time_contenders(contenders: list[Contender], rounds: int, min_seconds: float) -> dict[str, float]:
    """Median seconds per step; contenders interleaved round by round after a warm-up."""
    inner = {}
    for c in contenders:
        c.run()
        c.run()  # compile / warm caches
        t = time.perf_counter()
        c.run()
        single = time.perf_counter() - t
        inner[c.name] = max(1, int(min_seconds / max(single, 1e-6)))
    samples = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for c in contenders:
            t = time.perf_counter()
            for _ in range(inner[c.name]):
                c.run()
            samples[c.name].append((time.perf_counter() - t) / inner[c.name])
    return {name: statistics.median(s) for name, s in samples.items()}


def run_benchmark(cells, sizes, rounds=5, min_seconds=0.2, flax_cells=True, torch_threads=2, log=print,
                  windows=(), devices: int | None = None) -> dict:
    """Time every contender of every size and cell. ``devices``: the data-parallel rows split the
    batch over this many local devices (default: all; 1: none); ``x`` is then relative to them."""
    peak, machine = matmul_peak_gflops(), machine_description()
    local = jax.local_devices()
    devices = len(local) if devices is None else devices
    mesh = make_mesh(local[:devices]) if devices > 1 else None
    log(f"matmul peak (2048x2048 float32): {peak:.0f} GFLOP/s; allocator env applied: {allocator_env_applied()}; "
        f"{len(local)} {jax.default_backend()} devices, data-parallel rows over {devices}")
    rows = []
    for size in sizes:
        for cell in cells:
            xs, labels = _problem(size)
            mesh_here = mesh if mesh is not None and size.batch % devices == 0 else None
            if cell == MODEL_CELL:
                train = None if mesh_here is None else default_placement(bench_spec(size), size.batch, devices,
                                                                        jax.default_backend())
                ours_name = "explicit BPTT (model_bptt)" if train in (None, "one device") else \
                    sharded_name(2 if train == "directions" else devices, train, train)
                jax_side = model_contenders(size, xs, labels, flax_cells, mesh_here, train)
            else:
                jax_side = jax_contenders(cell, size, xs, labels, flax_cells, windows, mesh_here)
                ours_name = "explicit BPTT" if mesh_here is None else sharded_name(devices)
            contenders = jax_side + torch_contenders(cell, size, xs, labels, torch_threads)
            times = time_contenders(contenders, rounds, min_seconds)
            ours = times[ours_name]
            flops = step_flops(cell, size)
            for c in contenders:
                rows.append({
                    "cell": cell, "size": size.label(), "contender": c.name, "machine": machine,
                    "ms_per_step": 1e3 * times[c.name],
                    "speedup_of_explicit": times[c.name] / ours,
                    "gflops": flops / times[c.name] / 1e9,
                    "fraction_of_peak": flops / times[c.name] / 1e9 / peak,
                    "temp_mib": c.temp_bytes / 2**20 if math.isfinite(c.temp_bytes) else None,  # JSON null
                })
                log(f"{size.label():22} {cell:9} {c.name:42} {1e3 * times[c.name]:9.2f} ms  "
                    f"x{times[c.name] / ours:5.2f}  temp {c.temp_bytes / 2**20:8.1f} MiB")
    return {
        "machine": machine,
        "devices": devices,
        "matmul_peak_gflops": peak,
        "allocator_env": allocator_env_applied(),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} ({jax.default_backend()})"


def markdown(result: dict) -> str:
    devices = result.get("devices", 1)
    ours = ("in the default training step (the row marked \"(train's step)\", else the one-device row)"
            if devices > 1 else "on one device")
    lines = [
        f"Machine: {result['machine']}; matmul peak {result['matmul_peak_gflops']:.0f} GFLOP/s; "
        f"allocator env {'on' if result['allocator_env'] else 'off'}; process peak RSS "
        f"{result['peak_rss_mib']:.0f} MiB. Float32, one training step = forward + cross-entropy + backward "
        f"+ Adam. `x` = time of the contender / time of our explicit BPTT {ours} (> 1: ours is faster).",
        "",
        "| size | cell | contender | ms/step | x | GFLOP/s | % peak | temp MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        temp = "" if r["temp_mib"] is None else f"{r['temp_mib']:.1f}"
        lines.append(f"| {r['size']} | {r['cell']} | {r['contender']} | {r['ms_per_step']:.2f} | "
                     f"{r['speedup_of_explicit']:.2f} | {r['gflops']:.0f} | {100 * r['fraction_of_peak']:.0f} | "
                     f"{temp} |")
    return "\n".join(lines) + "\n"


def write_results(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmark.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    (out / "benchmark.md").write_text(markdown(result))
    return out / "benchmark.json", out / "benchmark.md"


def add_arguments(parser) -> None:
    parser.add_argument("--cells", nargs="+", choices=[*sorted(GATES), MODEL_CELL],
                        default=["elman", "lstm", "gru"],
                        help=f"cells to time; '{MODEL_CELL}' times a 2-layer bidirectional LSTM model")
    parser.add_argument("--model", action="store_true", help=f"add the '{MODEL_CELL}' rows to --cells")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input", type=int, default=32)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--time", type=int, nargs="+", default=[32, 128, 512, 2048])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="time per contender per round")
    parser.add_argument("--no-flax", action="store_true", help="skip the Flax nn.RNN contenders")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--windows", type=int, nargs="*", default=[],
                        help=f"also time the explicit BPTT with these weight-gradient block sizes (default {WINDOW})")
    parser.add_argument("--devices", type=int, help="data-parallel rows over this many local devices (default: "
                                                    "all; the command gives itself one per core; 1: none)")
    parser.add_argument("--quick", action="store_true", help="one tiny size, one round (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))


def run_from_args(args) -> dict:
    for name in ("batch", "input", "rounds", "torch_threads"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')}: expected a positive int, got {getattr(args, name)}")
    if any(v <= 0 for v in [*args.hidden, *args.time, *args.windows]):
        raise ValueError(
            f"--hidden/--time/--windows: expected positive ints, got {args.hidden} / {args.time} / {args.windows}"
        )
    local = len(jax.local_devices())
    if args.devices is not None and not 1 <= args.devices <= local:
        raise ValueError(f"--devices: expected 1 to {local} (the local devices), got {args.devices}")
    if args.quick:
        sizes = [Size(4, 3, 8, 6)]
        rounds, min_seconds = 1, 0.0
    else:
        sizes = [Size(args.batch, args.input, h, t) for h in args.hidden for t in args.time]
        rounds, min_seconds = args.rounds, args.min_seconds
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: PyTorch contenders skipped (pip install torch)")
    cells = [*args.cells, MODEL_CELL] if args.model and MODEL_CELL not in args.cells else args.cells
    result = run_benchmark(cells, sizes, rounds, min_seconds, not args.no_flax, args.torch_threads,
                           windows=args.windows, devices=args.devices)
    json_path, md_path = write_results(result, args.out)
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return result
