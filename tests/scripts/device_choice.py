"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/test_parallel.py does): a fresh
run on the default devices times its step on all 4 and on 1, trains on the faster, records it in
devices.json and says so; a resume reads the choice back and ends bit for bit where a run on those
devices does; short runs, explicit meshes and truncated BPTT are not measured; the command says it."""

import dataclasses
import io
import json
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import jax
import numpy as np

import perceptron1_jax as p1
from perceptron1_jax.cli import main
from perceptron1_jax.training import device_choice

assert len(jax.devices()) == 4, jax.devices()
device_choice.PROBE_MIN_STEPS = 4  # measure these tiny runs (the default spares runs under 500 steps)
cfg = p1.TrainConfig(task="three_step", cell="gru", hidden=8, batch_size=8, num_train=64, num_eval=32, steps=4,
                     eval_every=4, checkpoint_every=4)
quiet = {"progress": False, "check_grads": False}
folder = Path(tempfile.mkdtemp())

logs = []
p1.train(cfg, folder / "run", log=logs.append, **quiet)
recorded = json.loads((folder / "run" / "devices.json").read_text())
chosen = recorded["devices"]
said = [line for line in logs if line.startswith("devices: ")]
assert chosen in (1, 4) and set(recorded["ms_per_step"]) == {"1", "4"}, recorded
assert len(said) == 1 and said[0].endswith(f"training on {chosen} (--devices overrides)"), said
print(said[0])

logs.clear()
resumed = p1.train(dataclasses.replace(cfg, steps=8), folder / "run", resume=True, log=logs.append, **quiet)
assert not any(line.startswith("devices: ") for line in logs), logs  # read back, not measured again
straight = p1.train(dataclasses.replace(cfg, steps=8), folder / "straight", mesh=p1.make_mesh(jax.devices()[:chosen]),
                    log=lambda _: None, **quiet)
for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
    np.testing.assert_array_equal(a, b)  # the recorded devices: the same numbers, bit for bit

for name, kwargs, changed in [("explicit", {"mesh": p1.make_mesh()}, {}), ("truncated", {}, {"task": "copy",
                              "seq_len": 8, "tbptt_k1": 8, "tbptt_k2": 4, "target_accuracy": 0.0})]:
    logs.clear()
    p1.train(dataclasses.replace(cfg, **changed), folder / name, log=logs.append, **kwargs, **quiet)
    assert not (folder / name / "devices.json").exists() and not any("devices: " in line for line in logs), name
device_choice.PROBE_MIN_STEPS = 500
p1.train(cfg, folder / "short", log=lambda _: None, **quiet)
assert not (folder / "short" / "devices.json").exists()  # 4 steps: the size rule's devices, not measured

device_choice.PROBE_MIN_STEPS = 4
printed = io.StringIO()
with redirect_stdout(printed):
    status = main(["train", "--task", "three_step", "--cell", "gru", "--hidden", "8", "--batch-size", "8", "--steps",
                   "4", "--no-gradcheck", "--no-progress", "--out", str(folder / "cli")])
assert status == 0 and "batch split over 4 cpu devices or 1 (the faster, measured first)" in printed.getvalue(), \
    printed.getvalue()
assert json.loads((folder / "cli" / "devices.json").read_text())["devices"] in (1, 4)
print("OK")
sys.exit(0)
