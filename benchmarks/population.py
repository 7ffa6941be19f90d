"""Member-steps per second of a population against one single run of the same model, same
machine, one process: each contender is the training loop's own step and non-finite guard
(``Loop.step`` and ``Loop.guard`` of ``perceptron1 train``: the minibatch drawn, the update, the
finite flag back on the host, which ends each step as in training), timed in
interleaved rounds (median of the rounds). The single run is the default ``train`` step (its batch
split over every device); a population of N runs its members split over the devices under vmap.

    python benchmarks/population.py                      # LSTM, batch 32, time 50, hidden 32 and 128
    python benchmarks/population.py --quick              # a smoke test
    python benchmarks/population.py --populations 8 64 --hidden 32

Writes ``benchmarks/results/population_<hidden list>/population.{md,json}`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax

from perceptron1_jax import bench
from perceptron1_jax.parallel import make_mesh
from perceptron1_jax.training import Population, TrainConfig
from perceptron1_jax.training.population_loop import start_population_loop
from perceptron1_jax.training.session import start_loop


def config(hidden: int, batch: int, time_steps: int, cell: str) -> TrainConfig:
    return TrainConfig(task="adding", cell=cell, hidden=hidden, seq_len=time_steps, batch_size=batch,
                       num_train=4096, num_eval=64, steps=10**9, target_accuracy=0.0)


def loops(cfg: TrainConfig, populations: list[int], one_device: bool) -> dict:
    """``{name: (loop, members)}``: the single run's and each population's training session (and,
    with ``one_device``, the same on one device: the profile of what ``vmap`` alone gives)."""
    quiet = dict(out=None, resume=False, progress=False, log=lambda _: None, check_grads=False, data=None)
    found = {"single run (train's default)": (start_loop(cfg, params=None, mesh=None, **quiet), 1)}
    one = make_mesh(jax.devices()[:1])
    if one_device:
        found["single run, 1 device"] = (start_loop(cfg, params=None, mesh=one, **quiet), 1)
    for n in populations:
        found[f"population of {n}"] = (start_population_loop(cfg, Population(seeds=n), mesh=None, **quiet), n)
        if one_device:
            found[f"population of {n}, 1 device"] = (
                start_population_loop(cfg, Population(seeds=n), mesh=one, **quiet), n)
    return found


def time_loops(found: dict, rounds: int, min_seconds: float) -> dict[str, float]:
    """Median seconds per step of each loop over interleaved rounds."""
    for loop, _ in found.values():  # compile and warm up
        for _ in range(3):
            loop.guard(loop.step()[1])
    samples = {name: [] for name in found}
    for _ in range(rounds):
        for name, (loop, _) in found.items():
            steps, start = 0, time.perf_counter()
            while True:
                loop.guard(loop.step()[1])
                steps += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_seconds and steps >= 3:
                    break
            samples[name].append(elapsed / steps)
    return {name: statistics.median(values) for name, values in samples.items()}


def main(args) -> dict:
    sizes = [(16, 8, 10)] if args.quick else [(h, args.batch, args.time) for h in args.hidden]
    populations = [2] if args.quick else args.populations
    rows = []
    for hidden, batch, time_steps in sizes:
        cfg = config(hidden, batch, time_steps, args.cell)
        found = loops(cfg, populations, not args.no_one_device)
        seconds = time_loops(found, 1 if args.quick else args.rounds, 0.05 if args.quick else args.min_seconds)
        single = seconds["single run (train's default)"]
        for name, (loop, members) in found.items():
            rate = members / seconds[name]
            speedup = members * single / seconds[name]  # exactly 1.0 for the single run itself
            rows.append({"cell": args.cell, "hidden": hidden, "batch": batch, "time": time_steps, "contender": name,
                         "members": members, "layout": getattr(loop, "layout", None) and
                         _layout(loop.layout), "ms_per_step": seconds[name] * 1e3,
                         "member_steps_per_sec": rate, "vs_single": speedup})
            print(f"  {name:28} {seconds[name] * 1e3:9.2f} ms/step {rate:10.1f} member-steps/s "
                  f"{speedup:6.2f}x", flush=True)
            loop.close()
    result = {"machine": bench.machine_description(), "devices": len(jax.devices()),
              "command": " ".join(["python benchmarks/population.py", *sys.argv[1:]]), "rows": rows}
    write(result, args.out)
    return result


def _layout(layout) -> str:
    from perceptron1_jax.training.population_step import describe_layout

    return describe_layout(layout)


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "population.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"Machine: {result['machine']}; {result['devices']} devices. Command: `{result['command']}`", "",
             "| cell | hidden | batch | time | contender | members | ms/step | member-steps/s | vs single run |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['cell']} | {r['hidden']} | {r['batch']} | {r['time']} | {r['contender']} | "
                     f"{r['members']} | {r['ms_per_step']:.2f} | {r['member_steps_per_sec']:.0f} | "
                     f"{r['vs_single']:.2f}x |")
    (out / "population.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm", choices=sorted(bench.GATES))
    parser.add_argument("--hidden", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--time", type=int, default=50)
    parser.add_argument("--populations", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--no-one-device", action="store_true", help="skip the one-device rows (the profile)")
    parser.add_argument("--quick", action="store_true", help="one tiny size, one round (a smoke test)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path("benchmarks/results") / f"population_h{'_'.join(map(str, args.hidden))}"
    return args


if __name__ == "__main__":
    bench.reexec_with_allocator_env([__file__, *sys.argv[1:]], host_devices=True)
    main(parse())
