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

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceptron1_jax import losses
from perceptron1_jax.bptt import explicit_model, explicit_value_and_grad, make_value_and_grad
from perceptron1_jax.lean import default_segment
from perceptron1_jax.model import (
    as_model_params,
    from_model_params,
    init_model,
    init_params,
    loss_and_forward,
    spec_of_params,
)
from perceptron1_jax.parallel import data_parallel, host_device_env, make_mesh, replicate, shard_batch
from perceptron1_jax.scan import WINDOW
from perceptron1_jax.spec import LayerSpec, ModelSpec

ALLOCATOR_ENV = {
    "MALLOC_MMAP_MAX_": "0",  # never mmap a block: freed memory goes back to the heap, reused next step
    "MALLOC_TRIM_THRESHOLD_": str(1 << 34),  # never give the heap's top back to the OS
    "MALLOC_TOP_PAD_": str(1 << 28),  # grow the heap in 256 MiB steps
}
GATES = {"elman": 1, "lstm": 4, "gru": 3}


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


@dataclasses.dataclass(frozen=True)
class Size:
    batch: int
    input: int
    hidden: int
    time: int
    classes: int = 10

    def label(self) -> str:
        return f"B{self.batch} I{self.input} H{self.hidden} T{self.time}"


MODEL_CELL = "2x bi-lstm"
"""The ``cell`` column of the layered-model rows: 2 bidirectional LSTM layers (``--model``)."""


def bench_spec(size: Size, depth: int = 2) -> ModelSpec:
    """The layered model of the ``--model`` rows: ``depth`` bidirectional LSTM layers, many-to-one."""
    return ModelSpec([LayerSpec("lstm", size.hidden, True)] * depth, size.classes, input_size=size.input)


def step_flops(cell: str, size: Size) -> float:
    """Matrix-product FLOPs of one training step: the forward products (input and recurrent
    projections, readout) and twice as many in the backward (activation and weight gradients).
    ``cell`` :data:`MODEL_CELL` counts every direction of every layer of :func:`bench_spec`."""
    if cell == MODEL_CELL:
        spec = bench_spec(size)
        recurrent = sum(2 * size.batch * size.time * (spec.layer_input_size(k) + size.hidden) * 4 * size.hidden
                        * len(layer.directions) for k, layer in enumerate(spec.layers))
        return 3.0 * (recurrent + 2 * size.batch * spec.head_features * size.classes)
    gates = GATES[cell] * size.hidden
    recurrent = 2 * size.batch * size.time * (size.input + size.hidden) * gates
    forward = recurrent + 2 * size.batch * size.hidden * size.classes
    return 3.0 * forward


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


# --------------------------------------------------------------------------- contenders


@dataclasses.dataclass
class Contender:
    name: str
    run: Callable[[], None]  # one training step, blocking until done
    temp_bytes: float = float("nan")  # compiled temporary memory (JAX only)


def _problem(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((size.batch, size.time, size.input)).astype(np.float32)
    labels = rng.integers(0, size.classes, size.batch).astype(np.int32)
    return xs, labels


def _jax_contender(name, value_and_grad, params, xs, labels, mesh=None) -> Contender:
    """A jitted Adam step of ``value_and_grad``; with ``mesh``, params replicated over it and the
    batch split over it (placed before timing, as a training loop's prefetch would)."""
    optimizer = optax.adam(1e-3)

    def step(params, opt_state, xs, labels):
        loss, grads = value_and_grad(params, xs, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = optimizer.init(params)
    if mesh is not None:
        params, opt_state = replicate((params, opt_state), mesh)
        xs, labels = shard_batch((xs, labels), mesh)
    jitted = jax.jit(step)
    compiled = jitted.lower(params, opt_state, xs, labels).compile()
    memory = compiled.memory_analysis()
    state = {"params": params, "opt_state": opt_state}

    def run():
        state["params"], state["opt_state"], loss = compiled(state["params"], state["opt_state"], xs, labels)
        loss.block_until_ready()

    return Contender(name, run, float(getattr(memory, "temp_size_in_bytes", float("nan"))))


def gradient_fns(cell: str, time: int, window: int = WINDOW) -> dict[str, Callable]:
    """``(params, xs, labels) -> (loss, grads)`` of a many-to-one problem: ``"explicit"`` (our BPTT
    with weight-gradient blocks of ``window``), ``"lean"`` (its lean mode, k = sqrt T) and
    ``"autodiff"`` (``jax.grad`` of the plain ``lax.scan`` loss)."""

    def explicit(params, xs, labels):
        loss, grads, _ = explicit_value_and_grad(cell, params, xs, labels, many_to_many=False, window=window)
        return loss, grads

    def lean(params, xs, labels):
        loss, grads, _ = explicit_model(as_model_params(params), xs, labels, spec_of_params(cell, params),
                                        lean=default_segment(time))
        return loss, from_model_params(grads)

    def plain_loss(params, xs, labels):
        spec = spec_of_params(cell, params)
        return loss_and_forward(as_model_params(params), xs, labels, spec)[0]

    return {"explicit": explicit, "lean": lean, "autodiff": jax.value_and_grad(plain_loss)}


def sharded_contenders(spec: ModelSpec, params, xs, labels, mesh, autodiff_name: str) -> list[Contender]:
    """The explicit BPTT and ``jax.grad`` under the same ``shard_map`` over ``mesh``
    (:func:`perceptron1_jax.parallel.data_parallel`): the default training step, and how much of
    its gain is the devices rather than the explicit backward."""
    n = mesh.size
    out = []
    for grad, name in (("bptt", sharded_name(n)), ("autodiff", f"{autodiff_name}, {n} devices")):
        fn = data_parallel(make_value_and_grad(spec, grad), spec, mesh)
        out.append(_jax_contender(name, lambda p, x, y, fn=fn: fn(p, x, y, None, None)[:2], params, xs, labels, mesh))
    return out


def sharded_name(devices: int) -> str:
    return f"explicit BPTT, {devices} devices (train's step)"


def jax_contenders(cell: str, size: Size, xs, labels, flax_cells: bool = True, windows=(), mesh=None
                   ) -> list[Contender]:
    """``windows``: extra explicit-BPTT contenders with these weight-gradient block sizes;
    ``mesh``: also the data-parallel contenders over it (:func:`sharded_contenders`)."""
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    params = init_params(jax.random.key(0), cell, size.input, size.hidden, size.classes)
    fns = gradient_fns(cell, size.time)
    spec = spec_of_params(cell, params)
    out = sharded_contenders(spec, as_model_params(params), xs, labels, mesh, "jax.grad(lax.scan)") if mesh else []
    out += [
        _jax_contender("explicit BPTT", fns["explicit"], params, xs, labels),
        _jax_contender(f"explicit BPTT, lean k={default_segment(size.time)}", fns["lean"], params, xs, labels),
        _jax_contender("jax.grad(lax.scan)", fns["autodiff"], params, xs, labels),
    ]
    out += [_jax_contender(f"explicit BPTT, window {w}", gradient_fns(cell, size.time, w)["explicit"], params, xs,
                           labels) for w in windows if w != WINDOW]
    if flax_cells:
        out += _flax_contenders(cell, size, xs, labels)
    return out


def model_contenders(size: Size, xs, labels, flax_cells: bool = True, mesh=None) -> list[Contender]:
    """The 2-layer bidirectional LSTM (many-to-one, ``h_n`` of the last layer): ``model_bptt``'s
    explicit backward, ``jax.grad`` of ``model_loss``'s forward, and Flax (``nn.Bidirectional`` over
    ``nn.RNN``, stacked)."""
    xs, labels = jnp.asarray(xs), jnp.asarray(labels)
    spec = bench_spec(size)
    params = init_model(jax.random.key(0), spec)

    def explicit(params, xs, labels):
        return explicit_model(params, xs, labels, spec)[:2]

    def plain_loss(params, xs, labels):
        return loss_and_forward(params, xs, labels, spec)[0]

    out = sharded_contenders(spec, params, xs, labels, mesh, "jax.grad(model_loss)") if mesh else []
    out += [_jax_contender("explicit BPTT (model_bptt)", explicit, params, xs, labels),
            _jax_contender("jax.grad(model_loss)", jax.value_and_grad(plain_loss), params, xs, labels)]
    if flax_cells:
        import flax.linen as nn

        for kind in (nn.LSTMCell, nn.OptimizedLSTMCell):

            class Model(nn.Module):
                cell_type: type

                @nn.compact
                def __call__(self, xs):
                    h = size.hidden
                    for _ in range(2):
                        directions = [nn.RNN(self.cell_type(features=h)) for _ in range(2)]
                        xs = nn.Bidirectional(*directions)(xs)
                    return nn.Dense(size.classes)(jnp.concatenate([xs[:, -1, :h], xs[:, 0, h:]], axis=-1))

            model = Model(kind)
            flax_params = model.init(jax.random.key(0), xs)

            def flax_loss(params, xs, labels, model=model):
                return losses.cross_entropy(model.apply(params, xs), labels)

            out.append(_jax_contender(f"flax nn.Bidirectional({kind.__name__}) x2", jax.value_and_grad(flax_loss),
                                      flax_params, xs, labels))
    return out


def _flax_contenders(cell, size, xs, labels) -> list[Contender]:
    import flax.linen as nn

    kinds = {"elman": [nn.SimpleCell], "lstm": [nn.LSTMCell, nn.OptimizedLSTMCell], "gru": [nn.GRUCell]}[cell]
    out = []
    for kind in kinds:

        class Model(nn.Module):
            cell_type: type

            @nn.compact
            def __call__(self, xs):
                hs = nn.RNN(self.cell_type(features=size.hidden))(xs)
                return nn.Dense(size.classes)(hs[:, -1])

        model = Model(kind)
        params = model.init(jax.random.key(0), xs)

        def flax_loss(params, xs, labels, model=model):
            return losses.cross_entropy(model.apply(params, xs), labels)

        out.append(_jax_contender(f"flax nn.RNN({kind.__name__})", jax.value_and_grad(flax_loss), params, xs, labels))
    return out


def torch_contenders(cell: str, size: Size, xs, labels, threads: int = 2) -> list[Contender]:
    try:
        import torch
    except ImportError:
        return []
    torch.set_num_threads(threads)
    layered = cell == MODEL_CELL
    module = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU, MODEL_CELL: torch.nn.LSTM}[cell]
    options = {"num_layers": 2, "bidirectional": True} if layered else {}
    rnn = module(size.input, size.hidden, batch_first=True, **options)
    head = torch.nn.Linear(size.hidden * (2 if layered else 1), size.classes)
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.from_numpy(np.asarray(xs)), torch.from_numpy(np.asarray(labels)).long()
    criterion = torch.nn.CrossEntropyLoss()

    def run():
        optimizer.zero_grad(set_to_none=True)
        hs, state = rnn(x)
        if layered:  # h_n of the last layer: forward and backward direction
            h_n = state[0]
            features = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        else:
            features = hs[:, -1]
        loss = criterion(head(features), y)
        loss.backward()
        optimizer.step()

    name = "nn.LSTM(num_layers=2, bidirectional=True)" if layered else f"nn.{module.__name__}"
    return [Contender(f"torch {name} ({threads} threads)", run)]


# --------------------------------------------------------------------------- measurement


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
                ours_name = "explicit BPTT (model_bptt)"
                jax_side = model_contenders(size, xs, labels, flax_cells, mesh_here)
            else:
                ours_name = "explicit BPTT"
                jax_side = jax_contenders(cell, size, xs, labels, flax_cells, windows, mesh_here)
            if mesh_here is not None:
                ours_name = sharded_name(devices)
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
    ours = f"on {devices} devices (the default training step)" if devices > 1 else "on one device"
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
