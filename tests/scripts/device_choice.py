"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/test_parallel.py does): a fresh
run on the default devices takes the fixed size rule's count (no timing), records it with its reason
in devices.json; a resume reads the recorded count back (even one the rule would not choose now) and
ends bit for bit where a run on those devices does; explicit meshes, truncated BPTT and online
learning are recorded with their reasons (a mesh of two is refused for online learning); the command
says how many devices it splits over."""

import dataclasses
import io
import json
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import jax
import numpy as np
from refusals import assert_refused

import perceptron1_jax as p1
from perceptron1_jax.cli import main

assert len(jax.devices()) == 4, jax.devices()
cfg = p1.TrainConfig(task="three_step", cell="gru", hidden=8, batch_size=8, num_train=64, num_eval=32, steps=4,
                     eval_every=4, checkpoint_every=4)
quiet = {"progress": False, "check_grads": False}
folder = Path(tempfile.mkdtemp())

logs = []
p1.train(cfg, folder / "run", log=logs.append, **quiet)
recorded = json.loads((folder / "run" / "devices.json").read_text())
assert recorded["devices"] == 4 and recorded["available"] == 4 and recorded["platform"] == "cpu", recorded
assert recorded["reason"].startswith("size rule: ") and "at most the limit 2^27" in recorded["reason"], recorded
assert not any(line.startswith("devices: ") for line in logs), logs  # nothing measured

# A run recorded on 1 device (as an older version's timing chose): the resume keeps it, bit for bit.
p1.train(dataclasses.replace(cfg, steps=2), folder / "one", mesh=p1.make_mesh(jax.devices()[:1]), **quiet,
         log=lambda _: None)
(folder / "one" / "devices.json").write_text(json.dumps({"devices": 1}))
resumed = p1.train(dataclasses.replace(cfg, steps=8), folder / "one", resume=True, log=lambda _: None, **quiet)
straight = p1.train(dataclasses.replace(cfg, steps=8), folder / "straight", mesh=p1.make_mesh(jax.devices()[:1]),
                    log=lambda _: None, **quiet)
for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(straight.params)):
    np.testing.assert_array_equal(a, b)  # the recorded devices: the same numbers, bit for bit

for name, kwargs, changed, reason in [
        ("explicit", {"mesh": p1.make_mesh(jax.devices()[:2])}, {},
         "asked for (--devices, --placement or mesh=): 2 of 4"),
        ("truncated", {}, {"task": "copy", "seq_len": 8, "tbptt_k1": 8, "tbptt_k2": 4, "target_accuracy": 0.0},
         "truncated BPTT (tbptt_k1) runs on one device"),
        ("online", {}, {"task": "parity", "seq_len": 4, "gradient": "snap1", "online_every": 2, "target_accuracy": 0.0},
         "online learning (online_every) runs on one device")]:
    p1.train(dataclasses.replace(cfg, **changed), folder / name, log=lambda _: None, **kwargs, **quiet)
    assert json.loads((folder / name / "devices.json").read_text())["reason"] == reason, name

online = dataclasses.replace(cfg, task="parity", seq_len=4, gradient="snap1", online_every=2)
assert_refused([(lambda: p1.train(online, mesh=p1.make_mesh(jax.devices()[:2]), log=lambda _: None, **quiet),
                 "devices: online learning (online_every) runs on one device, got a mesh of 2")])

printed = io.StringIO()
with redirect_stdout(printed):
    status = main(["train", "--task", "three_step", "--cell", "gru", "--hidden", "8", "--batch-size", "8", "--steps",
                   "4", "--no-gradcheck", "--no-progress", "--out", str(folder / "cli")])
assert status == 0 and "batch split over 4 cpu devices;" in printed.getvalue(), printed.getvalue()
assert json.loads((folder / "cli" / "devices.json").read_text())["devices"] == 4
print("OK")
sys.exit(0)
