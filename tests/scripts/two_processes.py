"""One of two processes of a training run on the loopback interface (CPU collectives over gloo):
``python two_processes.py PORT PROCESS_ID OUT``; tests/test_parallel.py starts both. Each process
has 2 host devices; the run's mesh spans the 4 devices of both; only process 0 writes ``OUT``."""

import sys

port, process_id, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_num_cpu_devices", 2)

from perceptron1_jax.parallel import initialize_distributed, make_mesh  # noqa: E402

initialize_distributed(f"127.0.0.1:{port}", 2, process_id)

from perceptron1_jax.train import train  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from two_process_run import CONFIG, DATA  # noqa: E402

assert jax.process_count() == 2 and len(jax.devices()) == 4, jax.devices()
state = train(CONFIG, out, data=DATA, mesh=make_mesh(jax.devices()), progress=False, check_grads=False)
# Dropout keys reach the devices of both processes too (the masks differ per device, so not compared).
dropout = train(CONFIG.__class__(**{**CONFIG.__dict__, "dropout": 0.5, "steps": 2}), None, data=DATA,
                mesh=make_mesh(jax.devices()), progress=False, check_grads=False)
print(f"process {process_id}: step {state.step}, dropout run step {dropout.step}")
