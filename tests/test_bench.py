"""The benchmark is not a test: this only checks that it runs end to end on a tiny size."""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perceptron1_jax import bench
from perceptron1_jax.cli import main

pytestmark = pytest.mark.standard_promotion  # the benchmark steps use optax
ROOT = Path(__file__).resolve().parent.parent


def test_bench_quick(tmp_path, capsys):
    assert main(["bench", "--quick", "--cells", "gru", "--windows", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "benchmark.json").read_text())
    names = {r["contender"] for r in result["rows"]}
    assert {"explicit BPTT", "jax.grad(lax.scan)", "flax nn.RNN(GRUCell)"} <= names
    assert any(name.startswith("explicit BPTT, lean") for name in names)
    assert "explicit BPTT, window 2" in names
    assert all(r["ms_per_step"] > 0 for r in result["rows"])
    assert "| size | cell | contender |" in (tmp_path / "benchmark.md").read_text()
    assert main(["bench", "--batch", "0"]) == 2
    assert main(["bench", "--windows", "0"]) == 2
    assert "--windows" in capsys.readouterr().err


def test_flop_count_and_allocator_env():
    size = bench.Size(batch=2, input=3, hidden=4, time=5, classes=6)
    # LSTM: 4 gates; forward = 2*B*T*(I+H)*4H + 2*B*H*C; forward + backward = 3x.
    assert bench.step_flops("lstm", size) == 3 * (2 * 2 * 5 * 7 * 16 + 2 * 2 * 4 * 6)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert parser.parse_args([]).hidden == [128, 512]


def test_scaling_script_quick(tmp_path):
    env = {**os.environ, "PERCEPTRON1_NO_REEXEC": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--out",
                             str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "scaling.json").read_text())["rows"]
    assert {r["method"] for r in rows} == {"explicit BPTT", "lean (k = sqrt T)", "jax.grad(lax.scan)"}
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_the_cells_benchmark_runs_on_a_tiny_size(tmp_path):
    # A subprocess: the script registers its user cell, which must not leak into this worker's CELLS.
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cells.py"), "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PERCEPTRON1_NO_REEXEC": "1"})
    assert done.returncode == 0, done.stderr
    (row,) = json.loads((tmp_path / "cells.json").read_text())
    assert row["size"] == "B2 I3 H4 T4" and row["indrnn, jax.grad"] > 0 and row["gru / mingru"] > 0
    assert row["minlstm, explicit BPTT, associative"] > 0 and row["mingru: in the loop / hoisted"] > 0
    assert "| size | gru, explicit BPTT |" in (tmp_path / "cells.md").read_text()


def test_the_bidirectional_fusion_benchmark_runs_on_a_tiny_size():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bidirectional_fusion.py"), "--quick"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PERCEPTRON1_NO_REEXEC": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("speed-up of the fused form") == 3 and "B2 I3 H4 T5" in done.stdout, done.stdout


def test_the_placement_benchmark_runs_on_a_tiny_size(tmp_path):
    two = {**os.environ, "PERCEPTRON1_NO_REEXEC": "1",
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "placement.py"), "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=two)
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "placement.json").read_text())["rows"]
    assert [(r["model"], r["size"], r["rule"]) for r in rows] == [("1x bi-gru", "B4 I3 H5 T6", "directions")]
    assert all(r[k] > 0 for r in rows for k in ("one device", "batch split", "directions")), rows


def test_the_wavefront_benchmark_runs_on_a_tiny_size():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "wavefront.py"), "--quick", "--cells", "gru",
                           "--depth", "2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PERCEPTRON1_NO_REEXEC": "1"})
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| gru | 2 |")]
    assert len(rows) == 1 and rows[0].count("x |") == 2 and "B2 I3 H4 T5" in done.stdout, done.stdout


def test_the_speed_probes_run_on_a_tiny_size():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed_probes.py"), "--quick", "--probes", "flip",
                           "concat"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PERCEPTRON1_NO_REEXEC": "1"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("of the first") == 8 and "flip:" in done.stdout and "concat:" in done.stdout, done.stdout
