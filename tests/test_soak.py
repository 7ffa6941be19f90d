"""Soak: a long run of the real command (10,000+ steps), marked slow and left out of the default
run. Run it with::

    pytest -m slow tests/test_soak.py

It samples the process's resident memory from /proc while the run goes on and checks that, after
warm-up, memory stays within 10% of its level at the end of warm-up, every logged metric is finite,
and the median step rate of the last fifth of the run is 0.6-1.5 times the second fifth's (runs on
this shared 2-core machine vary by up to 25% between stretches of a run)."""

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

STEPS = 12_000


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads resident memory from /proc")
def test_a_long_run_keeps_memory_flat_metrics_finite_and_its_pace(tmp_path):
    out = tmp_path / "soak"
    command = [sys.executable, "-m", "perceptron1_jax", "train", "--task", "parity", "--layers", "lstm:16,gru:16",
               "--seq-len", "20", "--batch-size", "16", "--steps", str(STEPS), "--log-every", "100",
               "--eval-every", "1000", "--checkpoint-every", "1000", "--target-accuracy", "0", "--no-progress",
               "--out", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})  # the command re-executes itself in place: same pid
    samples = []  # (steps logged so far, resident MiB)
    while proc.poll() is None:
        try:
            logged = (out / "metrics.jsonl").read_text().count('"steps_per_sec"') * 100
            samples.append((logged, _rss_mib(proc.pid)))
        except (FileNotFoundError, ProcessLookupError, AssertionError):
            pass
        time.sleep(0.5)
    assert proc.returncode == 0, proc.stderr.read()
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=pytest.fail) for line in lines]  # strict JSON: no NaN
    train = [r for r in records if "steps_per_sec" in r]
    assert train[-1]["step"] == STEPS and all(r["loss"] is not None and r["grad_norm"] is not None for r in train)
    assert all(r["eval_loss"] is not None for r in records if "eval_loss" in r)
    warm = [rss for logged, rss in samples if logged >= STEPS // 5]
    assert len(warm) >= 10, samples
    assert max(warm) <= 1.10 * warm[0], f"resident memory grew from {warm[0]:.0f} to {max(warm):.0f} MiB"
    rates = [r["steps_per_sec"] for r in train]
    fifth = len(rates) // 5
    early, late = statistics.median(rates[fifth:2 * fifth]), statistics.median(rates[-fifth:])
    assert 0.6 * early <= late <= 1.5 * early, (early, late)  # steady: no slow-down beyond this machine's noise
    print(f"\n{STEPS} steps: resident memory {warm[0]:.0f} MiB after warm-up, at most {max(warm):.0f} MiB after; "
          f"{early:.0f} steps/s in the second fifth, {late:.0f} in the last ({len(samples)} samples)")
