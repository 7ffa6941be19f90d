"""Run with 2 host devices (tests/test_parallel.py does): the two directions of each bidirectional
layer placed on two devices (p1.direction_mesh) equal one device in float64 at rtol 1e-10: the
explicit BPTT and jax.grad (loss, every gradient), lengths, dropout, resets, tokens, many-to-many,
MSE, a one-direction layer between; the train step over several steps; the program really spans two
devices with collectives between them; the default rule places a bidirectional model's directions
and records it, a resume keeps what was recorded (an older record without a placement: the batch
split), and the command says how it places; the errors name what is wrong."""

import io
import json
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from refusals import assert_refused  # noqa: E402

import perceptron1_jax as p1  # noqa: E402
from perceptron1_jax.bptt import make_value_and_grad  # noqa: E402
from perceptron1_jax.cli import main  # noqa: E402
from perceptron1_jax.diagnostics import max_relative_error  # noqa: E402
from perceptron1_jax.parallel import direction_parallel  # noqa: E402
from perceptron1_jax.training.device_choice import read_choice, recorded_mesh  # noqa: E402

assert len(jax.devices()) == 2, jax.devices()
mesh = p1.direction_mesh()
assert mesh.axis_names == ("direction",) and list(mesh.devices.flat) == jax.devices()[:2]
rng = np.random.default_rng(0)
L = p1.LayerSpec


def problem(spec, batch, time, resets=False):
    params = jax.tree.map(lambda a: a + 0.3 * jnp.asarray(rng.standard_normal(a.shape)),  # non-zero biases
                          p1.init_model(jax.random.key(1), spec, jnp.float64))
    xs = (jnp.asarray(rng.integers(0, spec.vocab_size, (batch, time))) if spec.tokens
          else jnp.asarray(rng.standard_normal((batch, time, spec.input_size))))
    shape = (batch, time) if spec.many_to_many else (batch,)
    targets = (jnp.asarray(rng.standard_normal((*shape, spec.num_outputs))) if spec.loss == "mse"
               else jnp.asarray(rng.integers(0, spec.num_outputs, shape)))
    lengths = jnp.asarray(rng.integers(1, time + 1, batch))
    starts = jnp.asarray(rng.random((batch, time)) < 0.3) if resets else None
    return params, xs, targets, lengths, starts


def check(name, spec, batch, time, resets=False):
    params, xs, targets, lengths, starts = problem(spec, batch, time, resets)
    key = jax.random.key(7) if spec.dropout else None
    one = p1.model_bptt(params, xs, targets, spec, lengths, key, resets=starts)
    placed = p1.model_bptt(params, xs, targets, spec, lengths, key, resets=starts, mesh=mesh)
    errors = [abs(float(one[0] - placed[0])) / abs(float(one[0])), max_relative_error(placed[1], one[1])]
    autodiff = make_value_and_grad(spec, "autodiff")
    reference = jax.jit(autodiff)(params, xs, targets, key, lengths, starts)
    on_devices = jax.jit(direction_parallel(autodiff, spec, mesh))(params, xs, targets, key, lengths, starts)
    errors += [max_relative_error(on_devices[1], reference[1]), max_relative_error(on_devices[2], reference[2])]
    print(f"{name}: loss {errors[0]:.1e}, explicit gradients {errors[1]:.1e}, jax.grad {errors[2]:.1e}, "
          f"outputs {errors[3]:.1e}")
    assert max(errors) < 1e-10, name


check("2x bi-lstm, tokens, many-to-many, dropout", p1.ModelSpec((L("lstm", 5, True), L("lstm", 4, True)), 6,
                                                                 vocab_size=9, embed_size=3, many_to_many=True,
                                                                 dropout=0.3), 4, 7)
check("bi-gru, gru, bi-elman, many-to-one, resets", p1.ModelSpec((L("gru", 4, True), L("gru", 3), L("elman", 5, True)),
                                                                  3, input_size=2), 3, 6, resets=True)
check("bi-lstm, MSE many-to-many, batch 1, T 1", p1.ModelSpec((L("lstm", 4, True),), 2, input_size=3, loss="mse",
                                                               many_to_many=True), 1, 1)

# The compiled step spans both devices, with collectives between them.
spec = p1.ModelSpec((L("lstm", 4, True),), 3, input_size=2)
params, xs, targets, lengths, _ = problem(spec, 3, 5)
compiled = jax.jit(direction_parallel(make_value_and_grad(spec), spec, mesh)).lower(
    params, xs, targets, None, lengths).compile()
text = compiled.as_text()
assert "num_partitions=2" in text and ("collective-permute" in text or "all-gather" in text), text[:2000]

# Training: several steps with dropout equal one device.
cfg = p1.TrainConfig(task="copy", seq_len=5, layers="gru:6,lstm:5", bidirectional=True, batch_size=4, steps=3,
                     dtype="float64", dropout=0.2, eval_every=3, log_every=1)
quiet = {"progress": False, "log": lambda *a: None}
placed = p1.train(cfg, mesh=mesh, **quiet)
alone = p1.train(cfg, mesh=p1.make_mesh(jax.devices()[:1]), **quiet)
error = max_relative_error(placed.params, alone.params)
print(f"train, 3 steps: parameters {error:.1e}")
assert error < 1e-10

# The command, on the default rule: a bidirectional model's directions on the two devices, recorded
# with the reason; --placement batch overrides the rule; the line says how it places.
folder = Path(tempfile.mkdtemp())
command = ["train", "--task", "copy", "--seq-len", "5", "--layers", "gru:6", "--bidirectional", "--batch-size", "4",
           "--steps", "1", "--no-gradcheck", "--no-progress"]
for extra, said, placement in [([], "directions on 2 cpu devices;", "directions"),
                               (["--placement", "batch"], "batch split over 2 cpu devices;", "batch split")]:
    printed = io.StringIO()
    with redirect_stdout(printed):
        status = main([*command, *extra, "--out", str(folder / placement)])
    assert status == 0 and said in printed.getvalue(), printed.getvalue()
    recorded = json.loads((folder / placement / "devices.json").read_text())
    assert recorded["placement"] == placement and recorded["devices"] == 2, recorded
    assert recorded["reason"].startswith("placement rule: " if not extra else "asked for"), recorded

# A resume reads the placement back; an older record (no placement) is the batch split over its count
# (tests/scripts/device_choice.py resumes on a recorded count bit for bit).
assert recorded_mesh(read_choice(folder / "directions"), p1.make_mesh()).axis_names == ("direction",)
(folder / "old").mkdir()
(folder / "old" / "devices.json").write_text(json.dumps({"devices": 2}))
assert read_choice(folder / "old") == {"devices": 2, "placement": "batch split"}
assert recorded_mesh(read_choice(folder / "old"), mesh).axis_names == ("data",)

# The command refuses what it cannot place, in one line with exit status 2.
for extra, message in [(["--layers", "gru:6", "--placement", "directions"], "--placement directions: a direction mesh"),
                       (["--bidirectional", "--placement", "directions", "--devices", "1"],
                        "--placement directions: expected two devices of one process, got --devices 1 of 2")]:
    printed = io.StringIO()
    with redirect_stderr(printed):
        status = main([*command[:5], *extra, "--steps", "1", "--out", str(folder / "refused")])
    assert status == 2 and message in printed.getvalue() and printed.getvalue().count("\n") == 1, printed.getvalue()

# Errors name what is wrong.
one_way = p1.ModelSpec((L("gru", 4),), 3, input_size=2)
p, x, t, n, _ = problem(one_way, 2, 3)
assert_refused([
    (lambda: p1.model_bptt(p, x, t, one_way, mesh=mesh), "expected such a layer, got layers: one-direction sequential"),
    (lambda: p1.model_bptt(params, xs, targets, spec, lean=2, mesh=mesh), "lean: expected None with a direction mesh"),
    (lambda: p1.direction_mesh(jax.devices()[:1]), "devices: expected two devices (one per direction), got 1"),
    (lambda: p1.train(p1.TrainConfig(task="copy", seq_len=4, hidden=4, steps=1), mesh=mesh, **quiet),
     "expected such a layer"),
])
print("OK")
