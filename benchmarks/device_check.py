"""The accelerator check, one command for the few minutes a GPU may be lent (it runs on a CPU too,
with fewer rows), writing one markdown report:

1. the tests that exercise the accelerator branch (the input projection hoisted out of the time
   loop, bfloat16 compute), run with pytest;
2. the explicit BPTT against ``jax.grad`` on the device in float64 (``perceptron1 gradcheck`` for
   every cell, many-to-many with random lengths);
3. the training-step benchmark (``perceptron1 bench``'s contenders) at B64 I32, H128 and H512,
   T128 and T1024, for every cell and the 2-layer bidirectional LSTM, in that order until the time
   budget is spent, with the cuDNN contenders where the machine has them
   (``jax.experimental.rnn.lstm`` on a GPU; PyTorch's cuDNN LSTM and GRU when a CUDA torch is
   installed);
4. the loop forms whose default is on for accelerators without a measurement there: stacked layers
   as one wavefront loop (``benchmarks/wavefront.py``) and both directions of a layer in one scan
   (``benchmarks/bidirectional_fusion.py``), each against one loop per layer and direction.

    python benchmarks/device_check.py                       # writes benchmarks/results/device_check_<platform>.md
    python benchmarks/device_check.py --budget 300 --out report.md
    python benchmarks/device_check.py --quick               # tiny sizes (what the test suite runs on CPU)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from perceptron1_jax import bench

ROOT = Path(__file__).resolve().parent.parent
ACCELERATOR_TESTS = ["tests/test_scan.py", "tests/test_bptt.py", "tests/test_train.py"]
ACCELERATOR_SELECTION = "both_branches or branches_differ or bfloat16"
CELLS = ("elman", "lstm", "gru", bench.MODEL_CELL)


def run_command(argv: list[str], timeout: float) -> tuple[int, str]:
    """``(exit status, last lines of its output)`` of a subprocess (status 124 past ``timeout``)."""
    env = {**os.environ, "PERCEPTRON1_NO_REEXEC": "1"}
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout:.0f} s\n{(err.stdout or '')[-2000:]}"
    return done.returncode, "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])


def accelerator_tests(timeout: float, quick: bool = False) -> tuple[int, str]:
    """The accelerator-branch tests; on a real run also those of the wavefront and the fused
    directions. ``quick`` (the CPU smoke test of this script, inside the test suite, which runs all
    of them itself) runs one of them: it checks the plumbing, not the branches."""
    files, selection = ACCELERATOR_TESTS, ACCELERATOR_SELECTION
    if quick:
        files, selection = ["tests/test_train.py"], "bfloat16"
    else:
        files = [*files, "tests/test_wavefront.py", "tests/test_fused_directions.py"]
        selection = f"{selection} or wavefront or fused or one_scan"
    return run_command([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *files,
                        "-k", selection], timeout)


def loop_form_benchmarks(quick: bool, timeout: float) -> tuple[int, str]:
    """The two loop forms whose default is on for accelerators without a measurement there:
    stacked layers as a wavefront (benchmarks/wavefront.py) and both directions of a layer in one
    scan (benchmarks/bidirectional_fusion.py), each against the layer-by-layer form."""
    wave = ["--quick", "--cells", "gru", "--depth", "2"] if quick else ["--cells", "lstm", "gru", "--rounds", "3"]
    runs = [run_command([sys.executable, str(ROOT / "benchmarks" / "wavefront.py"), *wave], timeout / 2),
            run_command([sys.executable, str(ROOT / "benchmarks" / "bidirectional_fusion.py"),
                         *(["--quick"] if quick else ["--rounds", "3"])], timeout / 2)]
    return max(status for status, _ in runs), "\n\n".join(output for _, output in runs)


def gradient_check(quick: bool, timeout: float) -> tuple[int, str]:
    sizes = ["--batch", "2", "--seq-len", "5"] if quick else ["--batch", "8", "--seq-len", "32", "--hidden", "32"]
    return run_command([sys.executable, "-m", "perceptron1_jax", "gradcheck", "--cell", "all", "--many-to-many",
                        "--lengths", *sizes], timeout)


def cudnn_contenders(cell: str, size: bench.Size, xs, labels) -> list[bench.Contender]:
    """``jax.experimental.rnn.lstm`` (a GPU's cuDNN LSTM) and PyTorch's CUDA RNNs, where present."""
    found = []
    if jax.default_backend() == "gpu" and cell in ("lstm", bench.MODEL_CELL):
        try:
            found.append(_jax_cudnn_lstm(cell, size, xs, labels))
        except Exception as err:  # noqa: BLE001 - report what the machine could not do
            print(f"jax.experimental.rnn.lstm unavailable: {err}")
    try:
        import torch
    except ImportError:
        return found
    if torch.cuda.is_available() and cell in ("lstm", "gru", bench.MODEL_CELL):
        found.append(_torch_cuda(torch, cell, size, xs, labels))
    return found


def _jax_cudnn_lstm(cell: str, size: bench.Size, xs, labels) -> bench.Contender:
    from jax.experimental import rnn

    layers, bidirectional = (2, True) if cell == bench.MODEL_CELL else (1, False)
    directions = 2 if bidirectional else 1
    count = rnn.get_num_params_in_lstm(size.input, size.hidden, layers, bidirectional)
    params = {"rnn": 0.1 * jax.random.normal(jax.random.key(0), (count,)),
              "head": 0.1 * jax.random.normal(jax.random.key(1), (size.hidden * directions, size.classes))}
    zeros = jnp.zeros((layers * directions, size.batch, size.hidden))
    lengths = jnp.full((size.batch,), size.time, jnp.int32)

    def loss(params, xs, labels):
        hs, _, _ = rnn.lstm(xs, zeros, zeros, params["rnn"], lengths, size.input, size.hidden, layers, 0.0,
                            bidirectional)
        logits = hs[:, -1] @ params["head"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return bench._jax_contender(f"jax.experimental.rnn.lstm (cuDNN, {layers} layer{'s' if layers > 1 else ''})",
                                jax.value_and_grad(loss), params, jnp.asarray(xs), jnp.asarray(labels))


def _torch_cuda(torch, cell: str, size: bench.Size, xs, labels) -> bench.Contender:
    layered = cell == bench.MODEL_CELL
    module = torch.nn.GRU if cell == "gru" else torch.nn.LSTM
    rnn = module(size.input, size.hidden, batch_first=True, num_layers=2 if layered else 1,
                 bidirectional=layered).cuda()
    head = torch.nn.Linear(size.hidden * (2 if layered else 1), size.classes).cuda()
    optimizer = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=1e-3)
    x, y = torch.from_numpy(np.asarray(xs)).cuda(), torch.from_numpy(np.asarray(labels)).long().cuda()
    criterion = torch.nn.CrossEntropyLoss()

    def run():
        optimizer.zero_grad(set_to_none=True)
        hs, state = rnn(x)
        h_n = state[0] if isinstance(state, tuple) else state
        features = torch.cat([h_n[-2], h_n[-1]], dim=-1) if layered else hs[:, -1]
        criterion(head(features), y).backward()
        optimizer.step()
        torch.cuda.synchronize()

    return bench.Contender(f"torch cuDNN nn.{module.__name__}{' (2 layers, bidirectional)' if layered else ''}", run)


def benchmark(sizes: list[bench.Size], budget: float, rounds: int, min_seconds: float) -> tuple[list[dict], list[str]]:
    """Rows of every (size, cell) timed before ``budget`` seconds ran out, and those skipped."""
    start, rows, skipped = time.perf_counter(), [], []
    for size in sizes:
        for cell in CELLS:
            if time.perf_counter() - start > budget:
                skipped.append(f"{size.label()} {cell}")
                continue
            xs, labels = bench._problem(size)
            if cell == bench.MODEL_CELL:
                contenders = bench.model_contenders(size, xs, labels, flax_cells=False)
                ours = "explicit BPTT (model_bptt)"
            else:
                contenders = bench.jax_contenders(cell, size, xs, labels, flax_cells=False)
                ours = "explicit BPTT"
            contenders += bench.torch_contenders(cell, size, xs, labels) + cudnn_contenders(cell, size, xs, labels)
            times = bench.time_contenders(contenders, rounds, min_seconds)
            for c in contenders:
                rows.append({"size": size.label(), "cell": cell, "contender": c.name, "ms": 1e3 * times[c.name],
                             "x": times[c.name] / times[ours],
                             "temp_mib": c.temp_bytes / 2**20 if np.isfinite(c.temp_bytes) else None})
    return rows, skipped


def report(sections: dict, rows: list[dict], skipped: list[str]) -> str:
    device = jax.devices()[0]
    lines = ["# Device check", "", f"Machine: {bench.machine_description()}; devices: {len(jax.devices())} x "
             f"{getattr(device, 'device_kind', device.platform)}; command: `python benchmarks/device_check.py "
             f"{' '.join(sys.argv[1:])}`", ""]
    for title, (status, output) in sections.items():
        verdict = "passed" if status == 0 else f"FAILED (exit status {status})"
        lines += [f"## {title}: {verdict}", "", "```text", output, "```", ""]
    lines += ["## Training step (float32, forward + cross-entropy + backward + Adam)", "",
              "`x` = the contender's time / our explicit BPTT's (> 1: ours is faster).", "",
              "| size | cell | contender | ms/step | x | temp MiB |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        temp = "" if r["temp_mib"] is None else f"{r['temp_mib']:.1f}"
        lines.append(f"| {r['size']} | {r['cell']} | {r['contender']} | {r['ms']:.2f} | {r['x']:.2f} | {temp} |")
    if skipped:
        lines += ["", f"Not timed (the budget ran out): {', '.join(skipped)}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the benchmark rows (default 300)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (the CPU smoke test)")
    parser.add_argument("--out", type=Path, help="the report (default benchmarks/results/device_check_<platform>.md)")
    args = parser.parse_args(argv)
    if args.budget <= 0 or args.rounds <= 0:
        parser.error(f"--budget/--rounds: expected positive values, got {args.budget}/{args.rounds}")
    out = args.out or ROOT / "benchmarks" / "results" / f"device_check_{jax.default_backend()}.md"
    sections = {"Accelerator-branch tests": accelerator_tests(240, args.quick),
                "Explicit BPTT vs jax.grad on the device (float64)": gradient_check(args.quick, 120),
                "Loop forms: wavefront and fused directions": loop_form_benchmarks(args.quick, 120)}
    if args.quick:
        sizes, rounds, min_seconds = [bench.Size(4, 3, 8, 6)], 1, 0.0
    else:
        sizes = [bench.Size(64, 32, h, t) for t in (128, 1024) for h in (128, 512)]
        rounds, min_seconds = args.rounds, 0.1
    rows, skipped = benchmark(sizes, args.budget, rounds, min_seconds)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(sections, rows, skipped))
    print(out.read_text())
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    bench.reexec_with_allocator_env([__file__, *sys.argv[1:]])
    main()
