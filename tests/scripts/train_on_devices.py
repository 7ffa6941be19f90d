"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4 (tests/test_parallel.py does): the
train step on 4 devices equals the step on 1 (float64, many-to-many with lengths, and a token
classifier); a run checkpointed on 4 devices resumes on 2 and ends where a one-device run does;
batch sizes that do not divide by the devices and too many --devices are named errors; the
benchmark has its data-parallel rows."""

import json
import sys
import tempfile

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from refusals import assert_refused  # noqa: E402

import perceptron1_jax as p1  # noqa: E402
from perceptron1_jax.cli import main  # noqa: E402
from perceptron1_jax.data import from_arrays  # noqa: E402
from perceptron1_jax.diagnostics import max_relative_error  # noqa: E402
from perceptron1_jax.parallel import first_copy  # noqa: E402
from perceptron1_jax.train import TrainConfig, _optimizer, init_run_params, make_train_step, train  # noqa: E402

assert len(jax.devices()) == 4, jax.devices()
rng = np.random.default_rng(0)
one, four = p1.make_mesh(jax.devices()[:1]), p1.make_mesh()


def same_steps(name, cfg, spec, batches):
    """Three Adam steps on each mesh from the same noisy params (non-zero biases)."""
    params = jax.tree.map(lambda a: a + 0.3 * rng.standard_normal(a.shape), init_run_params(jax.random.key(0), cfg,
                                                                                          spec))
    results = []
    for mesh in (one, four):
        optimizer = _optimizer(cfg)
        step, state = make_train_step(cfg, optimizer, spec, mesh), (params, optimizer.init(params))
        for batch in batches:
            *state, metrics = step(*state, batch)
        results.append(first_copy((state[0], metrics)))
    (p_one, m_one), (p_four, m_four) = results
    errors = (max_relative_error(p_four, p_one),
              max(abs(float(m_four[k]) - float(m_one[k])) / abs(float(m_one[k])) for k in ("loss", "grad_norm")))
    print(f"{name}: params {errors[0]:.1e}, loss/grad norm {errors[1]:.1e}")
    assert max(errors) < 1e-10, name
    if "accuracy" in m_one:
        assert float(m_one["accuracy"]) == float(m_four["accuracy"]), name


# Many-to-many regression with lengths: the devices score different numbers of steps.
batch, time = 8, 6
xs = rng.standard_normal((3, batch, time, 2))
cfg = TrainConfig(layers="gru:5,lstm:4", bidirectional=True, dtype="float64", batch_size=batch, lr=0.05)
spec = p1.ModelSpec(p1.spec.parse_layers(cfg.layers, True), 3, input_size=2, loss="mse", many_to_many=True)
same_steps("2x bi-gru/lstm, many-to-many MSE, lengths", cfg, spec,
           [(x, rng.standard_normal((batch, time, 3)), rng.integers(1, time + 1, batch)) for x in xs])
# A token classifier (many-to-one cross-entropy) with lengths, through jax.grad as well.
spec = p1.ModelSpec((p1.LayerSpec("elman", 6),), 4, vocab_size=7, embed_size=3)
for grad in ("bptt", "autodiff"):
    cfg = TrainConfig(cell="elman", hidden=6, dtype="float64", batch_size=batch, grad=grad)
    same_steps(f"elman tokens, many-to-one, {grad}", cfg, spec,
               [(rng.integers(0, 7, (batch, time)), rng.integers(0, 4, batch), rng.integers(1, time + 1, batch))
                for _ in range(3)])

# Checkpoints cross device counts: 4 devices to step 6, resumed on 2 to step 12 == one device to 12.
n = 64
data = from_arrays(rng.standard_normal((n, 5, 3)), labels=rng.integers(0, 3, n), lengths=rng.integers(1, 6, n))
cfg = TrainConfig(cell="lstm", hidden=8, batch_size=8, steps=12, checkpoint_every=6, eval_every=6, dtype="float64",
                  target_accuracy=0)
with tempfile.TemporaryDirectory() as folder:
    quiet = dict(progress=False, log=lambda message: None, data=data, check_grads=False)
    train(TrainConfig(**{**cfg.__dict__, "steps": 6}), folder, mesh=four, **quiet)
    resumed = train(cfg, folder, resume=True, mesh=p1.make_mesh(jax.devices()[:2]), **quiet)
    straight = train(cfg, None, mesh=one, **quiet)
    error = max_relative_error(resumed.params, straight.params)
    print(f"4 devices -> checkpoint -> 2 devices vs 1 device, 12 steps: params {error:.1e}")
    assert resumed.step == 12 and error < 1e-9
    assert all(len(a.devices()) == 1 for a in jax.tree.leaves(resumed.params))  # plain arrays for the caller

    assert_refused([
        (lambda: train(TrainConfig(**{**cfg.__dict__, "batch_size": 6}), None, mesh=four, **quiet),
         "batch_size: expected a batch divisible by the 4 devices"),
        (lambda: make_train_step(cfg, _optimizer(cfg), spec, four)(
            init_run_params(jax.random.key(0), cfg, spec), None, (jnp.zeros((6, 5), int), jnp.zeros(6, int))),
         "batch: expected a batch divisible by the 4 devices"),
    ])
    for argv, message in [(["--devices", "5"], "--devices: expected 1 to 4 (the devices of this process), got 5"),
                          (["--batch-size", "6"], "batch_size: expected a batch divisible by the 4 devices")]:
        sys.stderr = captured = tempfile.TemporaryFile("w+")
        status = main(["train", "--steps", "1", "--out", folder + "/cli", *argv])
        sys.stderr = sys.__stderr__
        captured.seek(0)
        text = captured.read()
        assert status == 2 and message in text and len(text.splitlines()) == 1, (status, text)

    # The benchmark's data-parallel rows: ours and jax.grad under the same shard_map.
    jax.config.update("jax_enable_x64", False)
    assert main(["bench", "--quick", "--cells", "gru", "--no-flax", "--devices", "2", "--out", folder]) == 0
    rows = json.loads(open(folder + "/benchmark.json").read())["rows"]
    names = {r["contender"] for r in rows}
    assert {"explicit BPTT, 2 devices (train's step)", "jax.grad(lax.scan), 2 devices", "explicit BPTT"} <= names
    assert all(r["machine"] for r in rows)
print("OK")
